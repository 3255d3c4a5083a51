"""Marks racing ``update()``: a mark that overlaps a membership swap takes effect on
the membership in force once both have returned, and exactly once.

Each marker thread owns one endpoint, so after its own mark returns it knows what
``snapshot()`` must show, whatever the updater did meanwhile.  Every case runs for
``SECONDS`` and counts the marks it finds lost; the count must be 0.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from conftest import nodes
from gonka_pool import GonkaEndpoint

# GONKA_POOL_TEST_THREADS raises it on a many-core machine (the invariants hold for any count).
THREADS = int(os.environ.get("GONKA_POOL_TEST_THREADS", "4"))
SECONDS = 1.5
EXTRA = tuple(GonkaEndpoint(f"https://extra{i}.example", f"extra{i}") for i in range(3))

# The memberships the updater cycles through, from the pool's own endpoints; every
# one keeps all of them, so each marked endpoint is present before and after.
MEMBERSHIPS = {
    "same": lambda eps: [eps],
    "permuted": lambda eps: [eps, eps[::-1], eps[1:] + eps[:1]],
    "extended": lambda eps: [eps, EXTRA + eps, eps + EXTRA[:1]],
}

thread_unsafe = pytest.mark.thread_unsafe(
    reason="starts its own threads for 1.5 s and silences the gonka_pool logger, which "
    "the logging tests running beside it read"
)


@pytest.fixture
def quiet():
    # Every set-and-clear round enters a cooldown, which logs a warning: tens of
    # thousands of records a case would pile up in pytest's log capture.
    logger = logging.getLogger("gonka_pool")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def race(pool, memberships, marker, markers=THREADS):
    """Run ``marker(k, deadline)`` on ``markers`` threads while one more thread
    cycles ``pool.update`` through ``memberships`` until they finish; return the
    markers' results and the number of updates made."""
    barrier = threading.Barrier(markers + 1)
    done = threading.Event()
    errors: list[BaseException] = []
    results: list = [None] * markers
    updates = [0]

    def update():
        try:
            barrier.wait()
            while not done.is_set():
                pool.update(memberships[updates[0] % len(memberships)])
                updates[0] += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    def mark(k):
        try:
            barrier.wait()
            results[k] = marker(k, time.monotonic() + SECONDS)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    updater = threading.Thread(target=update)
    threads = [threading.Thread(target=mark, args=(k,)) for k in range(markers)]
    updater.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    updater.join()
    if errors:
        raise errors[0]
    return results, updates[0]


def state_of(pool, endpoint):
    return next(s for s in pool.snapshot() if s.endpoint == endpoint)


CASES = [
    pytest.param("same", "endpoint", id="same-by-endpoint"),
    pytest.param("same", "index", id="same-by-index"),
    pytest.param("permuted", "endpoint", id="permuted-by-endpoint"),
    pytest.param("extended", "endpoint", id="extended-by-endpoint"),
]


@thread_unsafe
@pytest.mark.parametrize(("membership", "by"), CASES)
def test_no_mark_or_clear_is_lost_to_a_racing_update(make_pool, quiet, membership, by):
    # An index names the same endpoint only while the order is kept: index marks
    # race only updates to the same list.
    pool = make_pool(THREADS + 1)
    eps = pool.endpoints

    def set_and_clear(k, deadline):
        ep = eps[k]
        target = k if by == "index" else ep
        lost = {"mark": 0, "success": 0, "clear": 0}
        rounds = 0
        while time.monotonic() < deadline:
            pool.mark_failed(target, 1000)
            if state_of(pool, ep).available:
                lost["mark"] += 1
            pool.mark_success(target)
            if state_of(pool, ep).consecutive_failures:
                lost["success"] += 1
            pool.mark_failed(target, 0)
            if not state_of(pool, ep).available:
                lost["clear"] += 1
            rounds += 1
        return lost, rounds

    results, updates = race(pool, MEMBERSHIPS[membership](eps), set_and_clear)
    pool._check_consistency()
    lost = {kind: sum(r[0][kind] for r in results) for kind in ("mark", "success", "clear")}
    rounds = sum(r[1] for r in results)
    assert updates > 0 and rounds > 0
    assert lost == {"mark": 0, "success": 0, "clear": 0}, (
        f"{lost} lost in {rounds} rounds of 3 marks against {updates} updates"
    )


@thread_unsafe
@pytest.mark.parametrize(
    ("membership", "by"),
    [
        pytest.param("same", "index", id="same-by-index"),
        pytest.param("extended", "endpoint", id="extended-by-endpoint"),
    ],
)
def test_total_failures_counts_each_non_zero_mark_once_while_updates_race(make_pool, quiet, membership, by):
    # Each thread marks its own endpoint and one endpoint all threads share; a
    # mark applied to the old set and copied, then applied again to the new one,
    # would count twice.
    pool = make_pool(THREADS + 1)
    eps = pool.endpoints
    shared = THREADS
    cooldowns = (1000, 0, None, 0.5, 0)

    def mark(k, deadline):
        own = k if by == "index" else eps[k]
        common = shared if by == "index" else eps[shared]
        counts = [0, 0]
        i = 0
        while time.monotonic() < deadline:
            cooldown = cooldowns[i % len(cooldowns)]
            pool.mark_failed(own, cooldown)
            counts[0] += cooldown != 0
            if i % 3 == 0:
                pool.mark_failed(common, 1000)
                counts[1] += 1
            i += 1
        return counts

    results, updates = race(pool, MEMBERSHIPS[membership](eps), mark)
    pool._check_consistency()
    assert updates > 0
    totals = [state_of(pool, ep).total_failures for ep in eps]
    assert totals[:THREADS] == [r[0] for r in results]
    assert totals[shared] == sum(r[1] for r in results)


def test_a_mark_between_updates_lands_on_the_new_membership(make_pool):
    # The sequential case the race tests hammer: state carried across both kinds
    # of update, then marks by endpoint resolved against the new order.
    pool = make_pool(3)
    a, b, c = pool.endpoints
    pool.mark_failed(b, 1000)
    pool.update([c, b, a])
    pool.mark_failed(a, 1000)
    pool.update([a, b, c, *EXTRA])
    pool.mark_failed(c, 0)
    pool.mark_failed(b, 0)
    assert [s.available for s in pool.snapshot()] == [False, True, True, True, True, True]
    assert [s.total_failures for s in pool.snapshot()][:3] == [1, 1, 0]
    pool._check_consistency()


@pytest.mark.parametrize("n", [1, 5])
def test_updates_to_the_same_endpoints_keep_every_count(make_pool, n):
    pool = make_pool(n)
    pool._set_clock(10**12)  # a frozen clock: the cooldowns remaining compare equal
    for i in range(n):
        for _ in range(i + 1):
            pool.mark_failed(i, 0.5)
    before = pool.snapshot()
    for _ in range(3):
        pool.update(nodes(n))
    assert pool.snapshot() == before
    pool._check_consistency()
