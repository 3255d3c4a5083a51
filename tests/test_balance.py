"""Load-aware picks and leases (``balance=``, ``pool.acquire()``), on both cores.

A frozen test clock (``pool._set_clock``) makes every latency exact: a lease
acquired at t and settled at t + 200 ms records 200,000 us.
"""

from __future__ import annotations

import gc
import queue
import threading
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import nodes
from gonka_pool import EndpointPool, Lease, _balance

MS = 1_000_000
T0 = 10**12


def clocked(make_pool, n, **settings):
    pool = make_pool(n, **settings)
    pool._set_clock(T0)
    return pool


def serve(pool, clock, latencies, rounds=3):
    """Teach ``pool`` each node's latency: ``rounds`` leases per node, one at a
    time, each settled ``latencies[i]`` ms later (``clock`` is a one-item list)."""
    for _ in range(rounds):
        for i, ms in enumerate(latencies):
            lease = pool._acquire_index(i)
            clock[0] += ms * MS
            pool._set_clock(clock[0])
            lease.success()


# -- the keyword ----------------------------------------------------------------------


def test_balance_defaults_to_peak_ewma_and_survives_update(make_pool):
    pool = make_pool(3)
    assert pool.balance == "peak_ewma"
    pool.update(nodes(4))
    assert pool.balance == "peak_ewma"
    assert make_pool(2, balance="least_request").balance == "least_request"
    assert make_pool(2, balance="round_robin").balance == "round_robin"


@pytest.mark.parametrize(
    ("balance", "error"), [("fastest", ValueError), ("", ValueError), (None, TypeError), (1, TypeError)]
)
def test_balance_rejects_unknown_policies_by_name(pool_impl, balance, error):
    with pytest.raises(error, match="balance must be one of 'peak_ewma', 'least_request', 'round_robin'"):
        pool_impl.EndpointPool(nodes(2), balance=balance)


def test_from_env_passes_balance_through(pool_impl, monkeypatch):
    monkeypatch.setenv("GONKA_TEST_BALANCE", "https://a.example;a1,https://b.example;b1")
    pool = pool_impl.EndpointPool.from_env("GONKA_TEST_BALANCE", balance="least_request")
    assert pool.balance == "least_request"


# -- leases -----------------------------------------------------------------------------


def test_a_lease_counts_its_request_in_flight_until_settled(make_pool):
    pool = make_pool(2)
    lease = pool.acquire()
    assert isinstance(lease, Lease) or type(lease).__name__ == "Lease"
    assert lease.endpoint == pool[lease.index]
    assert not lease.settled
    assert pool.snapshot()[lease.index].in_flight == 1
    lease.success()
    assert lease.settled
    assert sum(state.in_flight for state in pool.snapshot()) == 0


@pytest.mark.parametrize("settle", ["success", "failure", "overloaded", "answered"])
def test_a_lease_settles_once(make_pool, settle):
    pool = make_pool(2)
    lease = pool.acquire()
    getattr(lease, settle)()
    before = (pool._state(), pool._load_state())
    with pytest.raises(RuntimeError, match="lease already settled"):
        getattr(lease, settle)()
    lease.release()  # a no-op once settled, so that finally-blocks may call it
    assert (pool._state(), pool._load_state()) == before


def test_the_with_block_releases_what_was_not_settled(make_pool):
    pool = make_pool(2)
    with pytest.raises(KeyError), pool.acquire() as lease:
        raise KeyError("the caller's own error")
    assert lease.settled
    assert [state.in_flight for state in pool.snapshot()] == [0, 0]
    assert [state.consecutive_failures for state in pool.snapshot()] == [0, 0]
    with pool.acquire() as lease:
        lease.failure(10.0)
    assert pool.snapshot()[lease.index].total_failures == 1


def test_a_lease_dropped_unsettled_gives_its_count_back(make_pool):
    pool = make_pool(2)
    lease = pool.acquire()
    del lease
    gc.collect()
    assert [state.in_flight for state in pool.snapshot()] == [0, 0]


def test_leases_come_only_from_a_pool(pool_impl):
    with pytest.raises(TypeError):
        pool_impl.module.Lease()
    lease = pool_impl.make(1).acquire()
    assert "in flight" in repr(lease) and "node0" in repr(lease)
    lease.release()
    assert "settled" in repr(lease)


def test_a_bad_cooldown_leaves_the_lease_unsettled_and_the_pool_unchanged(make_pool):
    pool = make_pool(2)
    lease = pool.acquire()
    before = (pool._state(), pool._load_state())
    with pytest.raises(ValueError):
        lease.failure(-1)
    with pytest.raises(TypeError):
        lease.failure("5")
    assert (pool._state(), pool._load_state()) == before
    assert not lease.settled
    assert lease.failure(5.0) is True


def test_failure_marks_like_mark_failed_and_reports_whether_it_entered_a_cooldown(make_pool):
    pool = clocked(make_pool, 2)
    first, second = pool._acquire_index(0), pool._acquire_index(0)
    assert first.failure(None, reason="HTTP 502") is True
    assert second.failure(None, reason="HTTP 502") is False  # already cooling: no escalation
    state = pool.snapshot()[0]
    assert (state.available, state.cooldown_remaining, state.consecutive_failures, state.total_failures) == (
        False,
        30.0,
        1,
        2,
    )
    lease = pool._acquire_index(1)
    lease.failure(1.0, retry_after=20.0)
    assert pool.snapshot()[1].cooldown_remaining == 20.0


@pytest.mark.thread_unsafe(reason="caplog collects the records of every thread of the process")
def test_failure_logs_the_reason_it_is_given(make_pool, caplog):
    pool = make_pool(2)
    with caplog.at_level("WARNING", logger="gonka_pool"):
        pool._acquire_index(1).failure(3.0, reason="HTTP 503")
    (record,) = caplog.records
    assert "failed (HTTP 503)" in record.getMessage()
    assert record.gonka_reason == "HTTP 503"


def test_acquire_index_checks_its_index(make_pool):
    pool = make_pool(2)
    with pytest.raises(IndexError):
        pool._acquire_index(2)
    assert pool._acquire_index(1).index == 1


# -- picks ---------------------------------------------------------------------------


def test_round_robin_leases_follow_the_seed_order(make_pool):
    pool = make_pool(3, balance="round_robin")
    reference = make_pool(3)
    assert [pool.acquire().index for _ in range(7)] == [reference.next_indexed()[0] for _ in range(7)]


def test_every_new_node_is_tried_once_before_any_gets_a_second_request(make_pool):
    pool = clocked(make_pool, 5)
    leases = [pool.acquire() for _ in range(5)]
    assert sorted(lease.index for lease in leases) == [0, 1, 2, 3, 4]


def test_peak_ewma_sends_to_the_faster_node(make_pool):
    pool = clocked(make_pool, 3)
    clock = [T0]
    serve(pool, clock, [200, 2000, 200])
    picks = Counter()
    for _ in range(40):
        lease = pool.acquire()
        picks[lease.index] += 1
        clock[0] += 200 * MS
        pool._set_clock(clock[0])
        lease.success()
    assert picks[1] == 0
    assert picks[0] > 10 and picks[2] > 10


def test_a_latency_above_the_estimate_replaces_it_at_once_up_to_four_times(make_pool):
    pool = clocked(make_pool, 1)
    clock = [T0]
    serve(pool, clock, [100], rounds=1)
    serve(pool, clock, [10_000], rounds=1)
    assert pool.snapshot()[0].latency == pytest.approx(0.4)  # clipped at 4x 100 ms
    serve(pool, clock, [10_000], rounds=1)
    assert pool.snapshot()[0].latency == pytest.approx(1.6)


def test_a_node_that_stops_answering_looks_slow_before_its_first_slow_answer(make_pool):
    pool = clocked(make_pool, 2)
    clock = [T0]
    serve(pool, clock, [200, 200])
    stuck = pool._acquire_index(0)
    clock[0] += 700 * MS  # 3.5x its latency, still no answer
    pool._set_clock(clock[0])
    assert all(pool.acquire().index == 1 for _ in range(3))
    stuck.release()


def test_an_answer_that_says_nothing_of_the_node_raises_its_estimate_but_never_lowers_it(make_pool):
    pool = clocked(make_pool, 2)
    clock = [T0]
    serve(pool, clock, [200, 200])
    for ms, expected in ((1, 200), (600, 600), (1, 600), (10_000, 2400)):
        lease = pool._acquire_index(0)
        clock[0] += ms * MS
        pool._set_clock(clock[0])
        lease.answered()
        assert pool.snapshot()[0].latency == pytest.approx(expected / 1000), ms
    assert pool.snapshot()[0].in_flight == 0


def test_a_node_that_answers_errors_at_once_draws_no_more_than_its_share(make_pool):
    # Each fast 4xx a success would make node 0 look 200x faster and take nearly
    # every request (and read every prompt); answered() gives it none of that.
    pool = clocked(make_pool, 3)
    clock = [T0]
    picks = Counter()
    for _ in range(300):
        lease = pool.acquire()
        picks[lease.index] += 1
        clock[0] += (1 if lease.index == 0 else 200) * MS
        pool._set_clock(clock[0])
        if lease.index == 0:
            lease.answered()
        else:
            lease.success()
    assert picks[0] <= 110, picks  # a third of 300, and a few while it was new
    assert pool.snapshot()[0].latency >= 0.2


def test_a_node_whose_answers_tell_nothing_takes_the_slowest_estimate_until_one_is_measured(make_pool):
    pool = clocked(make_pool, 3)
    clock = [T0]
    for i, ms in ((1, 200), (2, 900)):
        lease = pool._acquire_index(i)
        clock[0] += ms * MS
        pool._set_clock(clock[0])
        lease.success()
    for _ in range(2):
        lease = pool._acquire_index(0)
        clock[0] += 1 * MS
        pool._set_clock(clock[0])
        lease.answered()
        assert pool.snapshot()[0].latency == pytest.approx(0.9)
    # Its first measured answer is its estimate: the stand-in was no measurement.
    lease = pool._acquire_index(0)
    clock[0] += 50 * MS
    pool._set_clock(clock[0])
    lease.success()
    assert pool.snapshot()[0].latency == pytest.approx(0.05)


def test_answered_leaves_the_backoff_the_failure_counts_and_the_cooldown_alone(make_pool):
    pool = clocked(make_pool, 2)
    pool.mark_failed(0, 30)
    before = pool.snapshot()[0]
    lease = pool._acquire_index(0)
    pool._set_clock(T0 + 50 * MS)
    lease.answered()
    after = pool.snapshot()[0]
    assert (after.consecutive_failures, after.total_failures) == (before.consecutive_failures, 1)
    assert not after.available and after.cooldown_remaining == pytest.approx(30 - 0.05)


def test_an_idle_node_that_was_slow_is_tried_again_after_its_estimate_decays(make_pool):
    pool = clocked(make_pool, 2)
    clock = [T0]
    serve(pool, clock, [200, 4000])
    picks = []
    for _ in range(60):  # node 0 answers every 1.4 s; node 1's 4 s estimate halves every 8.6 s
        lease = pool.acquire()
        picks.append(lease.index)
        clock[0] += 200 * MS
        pool._set_clock(clock[0])
        lease.success()
        clock[0] += 1200 * MS
        pool._set_clock(clock[0])
    assert picks[:10] == [0] * 10
    assert 1 in picks


def test_least_request_picks_the_node_with_the_fewest_requests_out(make_pool):
    pool = clocked(make_pool, 3, balance="least_request")
    held = [pool._acquire_index(0), pool._acquire_index(0), pool._acquire_index(2)]
    assert pool.acquire().index == 1
    for lease in held:
        lease.release()


@pytest.mark.parametrize("balance", ["peak_ewma", "least_request"])
def test_weights_are_capacities_in_the_load_aware_policies(make_pool, balance):
    pool = clocked(make_pool, 2, weights=[1, 3], balance=balance)
    clock = [T0]
    serve(pool, clock, [200, 200])
    leases = [pool.acquire() for _ in range(8)]
    assert Counter(lease.index for lease in leases) == {0: 2, 1: 6}


def test_the_learned_limit_follows_what_the_node_serves_at_once(make_pool):
    pool = clocked(make_pool, 1)
    clock = [T0]
    serve(pool, clock, [200])
    leases = [pool.acquire() for _ in range(3)]
    clock[0] += 210 * MS  # three at once, none queued
    pool._set_clock(clock[0])
    for lease in leases:
        lease.success()
    assert pool.snapshot()[0].limit == 3
    leases = [pool.acquire() for _ in range(5)]
    clock[0] += 200 * MS
    pool._set_clock(clock[0])
    for lease in leases[:3]:
        lease.success()
    clock[0] += 400 * MS  # the last two queued behind the first three
    pool._set_clock(clock[0])
    leases[3].success()
    assert pool.snapshot()[0].limit == 3  # queued at 4: the limit stays below 4
    leases[4].success()
    assert pool.snapshot()[0].limit == 3


def test_an_overloaded_node_rests_briefly_without_escalating(make_pool):
    pool = clocked(make_pool, 2)
    leases = [pool._acquire_index(0) for _ in range(3)]
    leases[2].overloaded()
    state = pool.snapshot()[0]
    assert not state.available
    assert 0.25 <= state.cooldown_remaining < 0.75
    assert (state.consecutive_failures, state.total_failures, state.limit) == (0, 0, 1)
    leases[0].overloaded(2.0)
    assert pool.snapshot()[0].cooldown_remaining == 2.0
    leases[1].release()


def test_a_success_ends_the_cooldown_of_a_request_started_after_the_failure(make_pool):
    pool = clocked(make_pool, 5)
    before = pool._acquire_index(1)
    pool._set_clock(T0 + MS)
    for i in range(3):
        pool.mark_failed(i)
    pool._set_clock(T0 + 2 * MS)
    before.success()  # started before node 1 failed: its cooldown stands
    assert not pool.snapshot()[1].available
    after = pool._acquire_index(1)
    pool._set_clock(T0 + 3 * MS)
    after.success()
    assert [state.available for state in pool.snapshot()] == [False, True, False, True, True]
    leases = [pool.acquire() for _ in range(9)]
    assert {lease.index for lease in leases} == {1, 3, 4}


def test_more_than_half_cooling_is_a_correlated_failure_and_every_node_competes(make_pool):
    pool = clocked(make_pool, 8)
    for i in range(3):
        pool.mark_failed(i, 30.0)
    picks = Counter()
    for _ in range(40):
        lease = pool.acquire()
        picks[lease.index] += 1
    assert not set(picks) & {0, 1, 2}
    pool.mark_failed(3, 30.0)
    pool.mark_failed(4, 30.0)  # 5 of 8
    leases = [pool.acquire() for _ in range(16)]
    assert {lease.index for lease in leases} == {5, 6, 7}  # failed a moment ago: not yet
    pool._set_clock(T0 + _balance.PANIC_RETRY_NS)
    leases += [pool.acquire() for _ in range(16)]
    assert {lease.index for lease in leases} == set(range(8))
    # one probe per cooling node at a time
    assert [lease.index for lease in leases[16:]].count(0) == 1


def test_in_a_correlated_failure_a_node_still_down_is_retried_four_times_a_second(make_pool):
    pool = clocked(make_pool, 3)
    clock = [T0]
    serve(pool, clock, [200, 200, 200])
    attempts = Counter()
    for _ in range(100):  # 10 ms apart: 1 s; nodes 0 and 1 refuse at once
        clock[0] += 10 * MS
        pool._set_clock(clock[0])
        lease = pool.acquire()
        attempts[lease.index] += 1
        if lease.index == 2:
            lease.success()
        else:
            lease.failure()
    assert attempts[0] <= 5 and attempts[1] <= 5
    assert attempts[2] >= 90


def test_after_a_correlated_outage_every_node_answers_again_within_a_second(make_pool):
    pool = clocked(make_pool, 8)
    clock = [T0]
    serve(pool, clock, [200] * 8)
    for _ in range(200):  # 2 s of an outage: every attempt refused at once
        clock[0] += 10 * MS
        pool._set_clock(clock[0])
        pool.acquire().failure()
    assert not any(state.available for state in pool.snapshot())
    # The network is back: 4 callers in a closed loop, 200 ms per answer.
    answered = Counter()
    out = []
    for _ in range(100):  # 1 s in 10 ms steps
        clock[0] += 10 * MS
        pool._set_clock(clock[0])
        for lease, t in out:
            if clock[0] - t >= 200 * MS:
                lease.success()
        out = [(lease, t) for lease, t in out if not lease.settled]
        while len(out) < 4:
            lease = pool.acquire()
            answered[lease.index] += 1
            out.append((lease, clock[0]))
    assert len(answered) == 8
    assert max(answered.values()) <= 0.25 * sum(answered.values())
    assert all(state.available for state in pool.snapshot())
    assert all(state.consecutive_failures == 0 for state in pool.snapshot())


def test_a_node_that_fails_again_after_a_correlated_outage_keeps_its_cooldown(make_pool):
    pool = clocked(make_pool, 4)
    for i in range(4):
        pool.mark_failed(i, 30.0)
    pool._set_clock(T0 + _balance.PANIC_RETRY_NS)
    for lease in [pool.acquire() for _ in range(4)]:  # the panic: one probe each
        if lease.index == 0:
            lease.failure()  # still down, now that the others answer
        else:
            pool._set_clock(T0 + _balance.PANIC_RETRY_NS + MS)
            lease.success()
    # Its failure came while more than half cooled: one more probe, now that the
    # others answer; failing that one, it is on its own and keeps its cooldown.
    pool._set_clock(T0 + 3 * _balance.PANIC_RETRY_NS)
    leases = [pool.acquire() for _ in range(4)]
    assert [lease.index for lease in leases].count(0) == 1
    for lease in leases:
        if lease.index == 0:
            lease.failure()
        else:
            lease.release()
    for step in range(4, 40):
        pool._set_clock(T0 + step * _balance.PANIC_RETRY_NS)
        lease = pool.acquire()
        assert lease.index != 0
        lease.release()


def test_one_lease_probes_a_node_whose_cooldown_ended(make_pool):
    pool = clocked(make_pool, 3)
    pool.mark_failed(0, 1.0)
    pool._set_clock(T0 + 2_000 * MS)
    leases = [pool.acquire() for _ in range(9)]
    assert [lease.index for lease in leases].count(0) == 1  # the probe; the others wait for it
    probe = next(lease for lease in leases if lease.index == 0)
    probe.success()
    assert pool.snapshot()[0].available
    assert pool._load_state()[0][7] == 0  # the claim is gone
    for lease in leases:
        lease.release()


def test_a_probe_that_never_settles_is_given_up_after_the_probe_timeout(make_pool):
    pool = clocked(make_pool, 3)
    pool.mark_failed(0, 1.0)
    now = T0 + 2_000 * MS
    pool._set_clock(now)
    hung = [pool.acquire() for _ in range(3)]
    assert [lease.index for lease in hung].count(0) == 1
    pool._set_clock(now + _balance.PROBE_NS + 1)
    held = [pool.acquire() for _ in range(6)]
    assert [lease.index for lease in held].count(0) >= 1


def test_a_lease_from_before_an_update_settles_against_the_new_membership(make_pool):
    pool = clocked(make_pool, 3)
    lease = pool._acquire_index(2)
    gone = pool._acquire_index(0)
    pool.update(list(reversed(nodes(3)))[:2] + nodes(5)[3:])  # node2, node1, node3, node4
    assert [state.in_flight for state in pool.snapshot()] == [1, 0, 0, 0]
    pool._set_clock(T0 + 200 * MS)
    lease.success()
    gone.failure(5.0)  # its node left: nothing to mark, nothing raised
    states = pool.snapshot()
    assert [state.in_flight for state in states] == [0, 0, 0, 0]
    assert states[0].latency == pytest.approx(0.2)
    pool._check_consistency()


def test_a_lease_on_a_duplicate_settles_the_same_copy_after_an_update(make_pool):
    a, b = nodes(2)
    pool = make_pool(1)
    pool.update([a, b, a])
    first, second = pool._acquire_index(2), pool._acquire_index(2)  # the second copy of a
    other = pool._acquire_index(0)
    pool.update([b, a, a])  # copies of a at 1 and 2: the second copy is index 2
    assert [state.in_flight for state in pool.snapshot()] == [0, 1, 2]
    first.release()
    other.release()
    assert [state.in_flight for state in pool.snapshot()] == [0, 0, 1]
    pool.update([a, b])  # the second copy left: its count went with it
    second.release()
    assert [state.in_flight for state in pool.snapshot()] == [0, 0]


def test_p2c_over_a_large_pool_avoids_a_loaded_node(make_pool):
    pool = clocked(make_pool, 40, balance="least_request")
    held = [pool._acquire_index(7) for _ in range(50)]
    picks = Counter(pool.acquire().index for _ in range(400))
    assert picks[7] == 0
    assert len(picks) == 39
    for lease in held:
        lease.release()


# -- threads --------------------------------------------------------------------------


@pytest.mark.parametrize("balance", ["peak_ewma", "least_request", "round_robin"])
def test_leases_settled_by_other_threads_leave_nothing_in_flight(make_pool, balance):
    pool = make_pool(6, balance=balance)
    handoff: queue.Queue = queue.Queue()
    outcomes = ("success", "release", "overloaded", "failure", "answered")

    def acquirer(k):
        for j in range(600):
            handoff.put((pool.acquire(), outcomes[(j + k) % len(outcomes)]))
            if j % 50 == 0:
                pool.update(nodes(6 - (j // 50) % 2))
        handoff.put(None)

    def settler():
        done = 0
        while done < 2:
            item = handoff.get()
            if item is None:
                done += 1
                continue
            lease, outcome = item
            if outcome == "failure":
                lease.failure(0.001)
            else:
                getattr(lease, outcome)()

    threads = [threading.Thread(target=acquirer, args=(k,)) for k in range(2)]
    threads += [threading.Thread(target=settler)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [state.in_flight for state in pool.snapshot()] == [0] * len(pool)
    pool._check_consistency()


def test_two_threads_settling_one_lease_settle_it_once(make_pool):
    pool = make_pool(2)
    for _ in range(200):
        lease = pool.acquire()
        results = []
        barrier = threading.Barrier(2)

        def settle(lease=lease, results=results, barrier=barrier):
            barrier.wait()
            try:
                lease.success()
                results.append("ok")
            except RuntimeError:
                results.append("refused")

        threads = [threading.Thread(target=settle) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == ["ok", "refused"]
    assert [state.in_flight for state in pool.snapshot()] == [0, 0]


# -- the C core and the twin agree ---------------------------------------------------

LEASE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire")),
        st.tuples(st.just("acquire")),
        st.tuples(st.just("acquire_index"), st.integers(0, 8)),
        st.tuples(
            st.just("settle"), st.integers(0, 30), st.sampled_from(["success", "release", "overloaded", "answered"])
        ),
        st.tuples(st.just("settle"), st.integers(0, 30), st.just("success")),
        st.tuples(st.just("fail"), st.integers(0, 30), st.sampled_from([None, 0.5, 30.0, 0])),
        st.tuples(st.just("mark"), st.integers(0, 5), st.sampled_from([None, 1.0, 0])),
        st.tuples(st.just("advance"), st.sampled_from([1, 10**6, 5 * 10**7, 2 * 10**8, 2 * 10**9, 2**34])),
        st.tuples(st.just("update"), st.lists(st.integers(0, 8), min_size=1, max_size=6)),
        st.tuples(st.just("snapshot")),
    ),
    min_size=5,
    max_size=80,
)


def _lease_apply(pool, leases, op, clock):
    kind = op[0]
    try:
        if kind == "acquire":
            leases.append(pool.acquire())
            return ("ok", leases[-1].index)
        if kind == "acquire_index":
            leases.append(pool._acquire_index(op[1]))
            return ("ok", leases[-1].index)
        if kind in ("settle", "fail"):
            if not leases:
                return ("ok", None)
            lease = leases[op[1] % len(leases)]
            if kind == "fail":
                return ("ok", lease.failure(op[2]))
            return ("ok", getattr(lease, op[2])())
        if kind == "mark":
            return ("ok", pool.mark_failed(op[1], op[2]))
        if kind == "update":
            return ("ok", pool.update([nodes(9)[i] for i in op[1]]))
        if kind == "snapshot":
            return ("ok", pool.snapshot())
        clock[0] += op[1]
        pool._set_clock(clock[0])
        return ("ok", clock[0])
    except Exception as exc:  # noqa: BLE001 - the exception is the result compared
        return (type(exc).__name__, str(exc))


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=20),
    weighted=st.booleans(),
    balance=st.sampled_from(["peak_ewma", "least_request", "round_robin"]),
    ops=LEASE_OPS,
)
def test_c_core_and_twin_agree_on_leases(both_impls, n, weighted, balance, ops):
    c_impl, py_impl = both_impls
    eps = [nodes(9)[i % 9] for i in range(n)]
    weights = [1 + i % 4 for i in range(n)] if weighted else None
    pools = [impl.EndpointPool(eps, weights=weights, start=0, balance=balance) for impl in (c_impl, py_impl)]
    leases: list[list] = [[], []]
    clocks = [[T0], [T0]]
    for pool in pools:
        pool._set_clock(T0)
    for op in ops:
        results = [_lease_apply(pool, leases[k], op, clocks[k]) for k, pool in enumerate(pools)]
        assert results[0] == results[1], op
        assert pools[0]._state() == pools[1]._state(), op
        assert pools[0]._load_state() == pools[1]._load_state(), op
        for pool in pools:
            pool._check_consistency()
    assert pools[0].snapshot() == pools[1].snapshot()


def test_the_c_core_restates_the_balance_rules_exactly(both_impls):
    c_impl, _ = both_impls
    module = c_impl.module
    for value in (0, 1, 2**40, 2**63, 2**64 - 1):
        assert module._mix64(value) == _balance.mix64(value)
    values = (0, 1, 199_999, 200_000, 800_001, 2**32, 2**32 + 1, 2**40)
    for ewma in values:
        for floor in (0, 1, 200_000):
            for sample in values[1:]:
                for largest in values:
                    args = (ewma, floor, sample, largest)
                    assert module._answered_ewma(*args) == _balance.answered_ewma(*args), args
    for now in (0, 123_456_789, 2**62):
        for idx in (0, 1, 1000):
            assert module._jitter_ns(_balance.LOAD_COOLDOWN_NS, now, idx) == _balance.jitter_ns(
                _balance.LOAD_COOLDOWN_NS, now, idx
            )


def test_gonka_pool_exports_the_lease_of_the_core_in_use():
    assert EndpointPool.acquire
    lease = EndpointPool(nodes(1)).acquire()
    assert isinstance(lease, Lease)
    lease.release()
