"""Many threads on one pool.  Meaningful with the GIL off (3.13t), and still run with
it on: the invariants are the same, the interleavings are just coarser."""

from __future__ import annotations

import os
import random
import sys
import threading
from collections import Counter

import pytest

from conftest import free_threaded_only

# GONKA_POOL_TEST_THREADS raises it on a many-core machine (the invariants hold for any count).
THREADS = int(os.environ.get("GONKA_POOL_TEST_THREADS", "4"))


def run_threads(target, n=THREADS):
    """Start n threads on a barrier, join them, re-raise the first failure."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []
    results: list = [None] * n

    def body(k):
        try:
            barrier.wait()
            results[k] = target(k)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("n_nodes", [1, 3, 8])
def test_threads_without_failures_select_every_node_exactly_equally(make_pool, n_nodes):
    pool = make_pool(n_nodes)
    per_thread = 3000 * n_nodes  # a multiple of len(pool)

    def select(_):
        counts = Counter()
        next_indexed = pool.next_indexed
        for _ in range(per_thread):
            counts[next_indexed()[0]] += 1
        return counts

    total = sum(run_threads(select), Counter())
    pool._check_consistency()
    assert total == {i: THREADS * per_thread // n_nodes for i in range(n_nodes)}


def test_next_alone_also_balances_exactly_across_threads(make_pool):
    pool = make_pool(5)
    per_thread = 5 * 2000

    def select(_):
        counts = Counter()
        nxt = pool.next
        for _ in range(per_thread):
            counts[nxt().address] += 1
        return counts

    total = sum(run_threads(select), Counter())
    pool._check_consistency()
    assert set(total.values()) == {THREADS * per_thread // 5}


def test_batches_from_threads_balance_exactly(make_pool):
    pool = make_pool(6)
    batches = 300  # each batch is 6 * 7 picks; large ones release the GIL

    def select(k):
        counts = Counter()
        for size in (42, 6 * 1000) if k % 2 else (6 * 1000, 42):
            for _ in range(batches if size == 42 else 3):
                counts.update(map(pool.endpoints.index, pool.next_many(size)))
        return counts

    total = sum(run_threads(select), Counter())
    pool._check_consistency()
    assert set(total.values()) == {THREADS * (batches * 42 + 3 * 6000) // 6}


def test_selection_loop_without_the_gil_balances_exactly(make_pool):
    pool = make_pool(7)
    per_thread = 7 * 50_000
    counts = run_threads(lambda _: pool._select_loop(per_thread))
    pool._check_consistency()
    assert [sum(c[i] for c in counts) for i in range(7)] == [THREADS * per_thread // 7] * 7


@pytest.mark.thread_unsafe(
    reason="starts its own four threads, three spinning until the marker is done; copies beside it "
    "starve the marker, whose log lines queue on logging's shared dicts (a 20-minute stall seen)"
)
def test_marks_racing_selections_never_yield_a_bad_index_or_an_error(make_pool, pool_impl):
    pool = make_pool(6)
    # The twin's one lock is unfair: fewer marks keep its run short on a busy machine.
    marks = 20_000 if pool_impl.name == "c" else 3_000
    n = len(pool)
    cooldowns = [0, 0.0, 1e-9, 1e-6, 0.001, 1, float("inf"), 10**9]
    stop = threading.Event()

    def work(k):
        rng = random.Random(k)
        if k == 0:  # the marker
            for _ in range(marks):
                pool.mark_failed(rng.randrange(n), rng.choice(cooldowns))
            stop.set()
            return None
        seen = 0
        while not stop.is_set() or seen < 1000:
            idx, ep = pool.next_indexed()
            assert 0 <= idx < n and pool[idx] == ep
            assert pool.next() in pool.endpoints
            seen += 1
        return seen

    run_threads(work)
    pool._check_consistency()


def test_a_completed_mark_is_never_ignored_while_a_healthy_node_exists(make_pool):
    # Thread k owns node k: it marks it, then (program order: the mark completed)
    # selects and must never get node k back; the last node is never marked, so a
    # healthy node always exists.  Other threads' marks race freely meanwhile.
    pool = make_pool(THREADS + 1)

    def work(k):
        for round_ in range(300):
            pool.mark_failed(k, float("inf") if round_ % 2 else 3600)
            for _ in range(20):
                idx, _ep = pool.next_indexed()
                assert idx != k, f"thread {k} got its own failed node"
            pool.mark_failed(k, 0)

    run_threads(work)
    pool._check_consistency()


@free_threaded_only
def test_the_gil_stays_disabled_while_threads_select(make_pool):
    pool = make_pool(3)
    run_threads(lambda _: [pool.next() for _ in range(1000)])
    pool._check_consistency()
    assert not sys._is_gil_enabled()


@pytest.mark.c_extension
@pytest.mark.thread_unsafe(reason="counts on the threads it starts taking consecutive stripes")
def test_threads_started_one_after_another_advance_stripes_of_their_own(pool_impl):
    if pool_impl.name != "c":
        pytest.skip("the twin has one cursor under its lock")
    pool = pool_impl.make(8)
    before = pool._stripe_positions()
    run_threads(lambda _: pool._select_loop(1000), n=2)
    pool._check_consistency()
    moved = [after - start for after, start in zip(pool._stripe_positions(), before, strict=True)]
    assert sorted(moved)[-2:] == [1000, 1000] and sum(moved) == 2000
