"""Pool policies: escalating cooldown, success reset, never-shorten, endpoint targets,
weights, random start, live membership, snapshot, logging.  Both implementations."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from datetime import timedelta
from itertools import pairwise

import pytest

from conftest import c_schedule, nodes
from gonka_pool import GonkaEndpoint
from gonka_pool._report import EndpointState
from gonka_pool._schedule import smooth_schedule_py

T0 = 10**12
S = 10**9  # ns per second


def frozen(pool, now=T0):
    pool._set_clock(now)
    return pool


def deadline(pool, i):
    return pool._state()[2][i]


# -- escalating cooldown ----------------------------------------------------------


def test_policy_cooldown_doubles_per_outage_up_to_the_cap(make_pool):
    pool = frozen(make_pool(2))  # base 30 s, max 300 s
    now = T0
    taken = []
    for _ in range(7):
        pool.mark_failed(0)
        taken.append((deadline(pool, 0) - now) // S)
        now = deadline(pool, 0)  # the cooldown ends; the node fails again
        pool._set_clock(now)
    assert taken == [30, 60, 120, 240, 300, 300, 300]
    assert pool.snapshot()[0].consecutive_failures == 7


def test_custom_base_and_max_cooldown_and_timedelta_settings(make_pool):
    pool = frozen(make_pool(1, base_cooldown=timedelta(seconds=2), max_cooldown=5))
    now = T0
    for expected in (2, 4, 5):
        pool.mark_failed(0)
        assert deadline(pool, 0) - now == expected * S
        now = deadline(pool, 0)
        pool._set_clock(now)


def test_failures_reported_during_a_cooldown_do_not_escalate_it(make_pool):
    # Ten in-flight requests to a dying node fail together: one outage, one level.
    pool = frozen(make_pool(2))
    for _ in range(10):
        pool.mark_failed(0)
    state = pool.snapshot()[0]
    assert (state.consecutive_failures, state.total_failures) == (1, 10)
    assert deadline(pool, 0) == T0 + 30 * S


def test_mark_success_resets_the_backoff_level(make_pool):
    pool = frozen(make_pool(2))
    now = T0
    for _ in range(3):
        pool.mark_failed(0)
        now = deadline(pool, 0)
        pool._set_clock(now)
    assert pool.mark_success(0) is True
    assert pool.snapshot()[0].consecutive_failures == 0
    assert pool.snapshot()[0].total_failures == 3
    pool.mark_failed(0)
    assert deadline(pool, 0) - now == 30 * S


def test_mark_success_leaves_a_running_cooldown_alone(make_pool):
    pool = frozen(make_pool(2))
    pool.mark_failed(1, 60)
    pool.mark_success(1)
    assert not pool.snapshot()[1].available


def test_an_explicit_cooldown_counts_as_a_failure_and_never_shortens(make_pool):
    pool = frozen(make_pool(2))
    pool.mark_failed(0, 100)
    pool.mark_failed(0)  # policy: 30 s, shorter than what runs: kept
    assert deadline(pool, 0) == T0 + 100 * S
    assert pool.snapshot()[0].total_failures == 2


@pytest.mark.parametrize(("base", "cap"), [(0, 10), (10, 5), (-1, 10), (math.nan, 10)])
def test_bad_policy_settings_are_rejected(pool_impl, base, cap):
    with pytest.raises(ValueError):
        pool_impl.EndpointPool(nodes(2), base_cooldown=base, max_cooldown=cap)


# -- endpoint targets --------------------------------------------------------------


def test_marks_accept_the_endpoint_itself(make_pool):
    pool = frozen(make_pool(3))
    assert pool.mark_failed(pool[1], 60) is True
    assert [s.available for s in pool.snapshot()] == [True, False, True]
    assert pool.mark_success(GonkaEndpoint("https://node1.example", "addr1")) is True


def test_an_endpoint_not_in_the_pool_is_ignored_and_reported(make_pool):
    pool = frozen(make_pool(2))
    before = pool._state()
    stranger = GonkaEndpoint("https://stranger.example", "x")
    assert pool.mark_failed(stranger, 60) is False
    assert pool.mark_success(stranger) is False
    assert pool._state() == before


def test_marking_a_duplicated_endpoint_marks_every_slot_of_it(pool_impl):
    ep = GonkaEndpoint("https://dup.example", "d")
    pool = frozen(pool_impl.EndpointPool([ep, GonkaEndpoint("https://x.example", "x"), ep], start=0))
    pool.mark_failed(ep, 10)
    assert [s.available for s in pool.snapshot()] == [False, True, False]


@pytest.mark.parametrize("target", [1.0, "0", None, b"x", ("https://a", "b")])
def test_a_target_that_is_neither_index_nor_endpoint_is_a_type_error(make_pool, target):
    pool = make_pool(2)
    with pytest.raises(TypeError):
        pool.mark_failed(target, 1)
    with pytest.raises(TypeError):
        pool.mark_success(target)


# -- weights -----------------------------------------------------------------------


def test_weighted_schedule_is_interleaved_like_nginx():
    assert c_schedule((5, 1, 1)) == [0, 0, 1, 0, 2, 0, 0]
    assert c_schedule((2, 2, 2)) is None  # equal weights: plain round robin
    assert c_schedule((10, 5)) == [0, 1, 0]  # reduced by the gcd


def test_c_and_python_schedules_are_identical():
    from gonka_pool import _pool_py  # noqa: F401 - both live beside each other

    for weights in [(3, 1), (1, 2, 3, 4), (7, 5, 3), (1, 100), (4, 4, 1)]:
        from math import gcd

        reduced = tuple(w // gcd(*weights) for w in weights)
        assert c_schedule(weights) == smooth_schedule_py(reduced)


@pytest.mark.parametrize("weights", [[3, 1], [5, 1, 1], [1, 2, 3, 4], [4, 6], [1, 1, 7]])
def test_any_window_of_sum_weights_picks_each_node_weight_times(make_pool, weights):
    pool = make_pool(len(weights), weights=weights, start=5)
    picks = [pool.next_indexed()[0] for _ in range(sum(weights) * 4)]
    window = sum(weights)
    for start in range(len(picks) - window + 1):
        assert Counter(picks[start : start + window]) == dict(enumerate(weights))


def test_a_weighted_pick_never_repeats_a_light_node_back_to_back(make_pool):
    pool = make_pool(3, weights=[5, 1, 1])
    picks = [pool.next_indexed()[0] for _ in range(70)]
    assert all(not (a == b != 0) for a, b in pairwise(picks))
    runs_of_heavy = "".join("x" if p == 0 else " " for p in picks).split()
    assert max(map(len, runs_of_heavy)) <= 4  # a a b a c a a | a a b ...


def test_weighted_selection_skips_cooling_nodes_and_finds_a_light_healthy_one(make_pool):
    pool = frozen(make_pool(3, weights=[100, 100, 1]))
    pool.mark_failed(0, 60)
    pool.mark_failed(1, 60)
    assert [pool.next_indexed()[0] for _ in range(5)] == [2] * 5


def test_weights_balance_exactly_across_threads(make_pool):
    weights = [3, 1, 2]
    pool = make_pool(3, weights=weights)
    per_thread = 6 * 500

    def work():
        counts = Counter(pool.next_indexed()[0] for _ in range(per_thread))
        with lock:
            total.update(counts)

    lock, total = threading.Lock(), Counter()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert total == {i: 4 * per_thread * w // 6 for i, w in enumerate(weights)}


@pytest.mark.parametrize(
    ("weights", "error"),
    [
        ([1], ValueError),
        ([1, 0], ValueError),
        ([1, -2], ValueError),
        ([1, True], TypeError),
        ([1, 1.5], TypeError),
        ("11", TypeError),
        (5, TypeError),
        ([1, 2.0**21], TypeError),
        ([False, 1], TypeError),
    ],
)
def test_bad_weights_are_rejected(pool_impl, weights, error):
    with pytest.raises(error):
        pool_impl.EndpointPool(nodes(2), weights=weights)


@pytest.mark.parametrize("weights", [[1, 2**21], [3, 10**40], [2**64 + 1, 2**64]])
def test_weights_of_any_size_are_accepted_and_reported_as_given(make_pool, weights):
    pool = make_pool(2, weights=weights)
    assert pool.weights == tuple(weights)
    assert [s.weight for s in pool.snapshot()] == weights
    assert {pool.next_indexed()[0] for _ in range(2 * 4097)} == {0, 1}


def test_weights_are_reported(make_pool):
    assert make_pool(2).weights == (1, 1)
    assert make_pool(2, weights=[4, 2]).weights == (4, 2)
    assert [s.weight for s in make_pool(2, weights=[4, 2]).snapshot()] == [4, 2]


# -- start ---------------------------------------------------------------------------


def test_random_start_differs_across_pools_and_each_pool_still_cycles(pool_impl):
    firsts = set()
    for _ in range(40):
        pool = pool_impl.EndpointPool(nodes(8))
        cycle = [pool.next_indexed()[0] for _ in range(16)]
        assert sorted(cycle[:8]) == list(range(8)) and cycle[:8] == cycle[8:]
        firsts.add(cycle[0])
    assert len(firsts) > 2


def test_an_integer_start_gives_the_seed_behaviour(pool_impl):
    pool = pool_impl.EndpointPool(nodes(3), start=4)
    assert [pool.next_indexed()[0] for _ in range(3)] == [1, 2, 0]


@pytest.mark.parametrize(
    ("start", "error"),
    [("first", ValueError), (-1, ValueError), (1.0, TypeError), (True, TypeError), (None, TypeError)],
)
def test_bad_start_is_rejected(pool_impl, start, error):
    with pytest.raises(error):
        pool_impl.EndpointPool(nodes(2), start=start)


# -- live membership --------------------------------------------------------------------


def test_update_keeps_the_state_of_nodes_present_before_and_after(make_pool):
    pool = frozen(make_pool(3))
    a, b, c = pool.endpoints
    d = GonkaEndpoint("https://new.example", "n")
    pool.mark_failed(b, 60)
    pool.mark_failed(c)
    pool.update([d, c, b])
    states = pool.snapshot()
    assert [s.endpoint for s in states] == [d, c, b]
    assert [s.available for s in states] == [True, False, False]
    assert (states[1].consecutive_failures, states[1].total_failures) == (1, 1)
    assert states[2].cooldown_remaining == 60.0
    assert pool.mark_failed(a, 5) is False  # gone: ignored and reported


def test_update_with_weights_and_bad_input_leaves_the_pool_unchanged(make_pool):
    pool = make_pool(2)
    before = (pool.endpoints, pool.weights, pool._state())
    for bad in ([], [pool[0], "x"], None):
        with pytest.raises((ValueError, TypeError)):
            pool.update(bad)
    with pytest.raises(ValueError):
        pool.update(pool.endpoints, weights=[1])
    assert (pool.endpoints, pool.weights, pool._state()) == before
    pool.update(pool.endpoints, weights=[2, 1])
    assert pool.weights == (2, 1)


@pytest.mark.thread_unsafe(reason="starts its own five threads; copies beside it would starve the updater")
def test_update_while_threads_select_never_mixes_sets_or_loses_state(make_pool):
    pool = make_pool(4)
    old = tuple(pool.endpoints)
    extra = tuple(GonkaEndpoint(f"https://extra{i}.example", "e") for i in range(3))
    keeper = old[0]
    pool.mark_failed(keeper, 3600)
    allowed = set(old) | set(extra)
    stop = threading.Event()
    errors = []

    def select():
        try:
            while not stop.is_set():
                ep = pool.next()
                assert ep in allowed
                idx, ep2 = pool.next_indexed()
                assert ep2 in allowed and 0 <= idx < 5
                assert all(e in allowed for e in pool.next_many(5))
                snap = pool.snapshot()
                assert len({s.endpoint for s in snap} - allowed) == 0
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=select) for _ in range(4)]
    for t in threads:
        t.start()
    updates = 0
    started = time.monotonic()
    # At least 1.5 s and 50 updates (with the GIL the updater waits out the
    # selectors' switch interval; the twin's lock is unfair), at most 20 s.
    while not stop.is_set() and time.monotonic() - started < 20:
        if time.monotonic() - started >= 1.5 and updates >= 50:
            break
        members = (keeper,) + (old[1:] if updates % 2 else extra)
        pool.update(members, weights=None if updates % 3 else [1 + i for i in range(len(members))])
        updates += 1
        time.sleep(0.001)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert updates >= 50
    state = next(s for s in pool.snapshot() if s.endpoint == keeper)
    assert not state.available and state.consecutive_failures == 1


# -- snapshot and logging ----------------------------------------------------------


def test_snapshot_reports_each_node_state(make_pool):
    pool = frozen(make_pool(3))
    pool.mark_failed(1, 2.5)
    pool.mark_failed(2, math.inf)
    snap = pool.snapshot()
    assert isinstance(snap, tuple) and all(isinstance(s, EndpointState) for s in snap)
    assert snap[0] == EndpointState(pool[0], 1, True, 0.0, 0, 0)
    assert snap[1] == EndpointState(pool[1], 1, False, 2.5, 1, 1)
    assert snap[2].cooldown_remaining == math.inf
    pool._set_clock(T0 + 3 * S)
    assert pool.snapshot()[1].available and pool.snapshot()[1].cooldown_remaining == 0.0
    with pytest.raises(AttributeError):
        snap[0].available = False


@pytest.mark.thread_unsafe(
    reason="caplog's handler collects the log records of every "
    "thread, so copies of the test running at once see each other's lines"
)
def test_entering_a_cooldown_logs_one_warning(make_pool, caplog):
    pool = frozen(make_pool(2))
    with caplog.at_level(logging.WARNING, logger="gonka_pool"):
        pool.next()
        pool.mark_failed(0)
        pool.mark_failed(0)  # same outage: no second line
        pool.mark_failed(1, 0)  # a clear: nothing
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "node0.example" in caplog.text and "30.000 s" in caplog.text and "1 consecutive" in caplog.text
