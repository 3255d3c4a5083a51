"""What only the C core's leases do: the probe claim and failure moment in a shared
segment, leases dropped after an update(), the GIL-free handshake on many threads.
(The behaviour both cores share is in tests/test_balance.py.)"""

from __future__ import annotations

import gc
import sys
import threading
import uuid

import pytest

from conftest import IMPLS, nodes

C = IMPLS.get("c-extension-module")
pytestmark = pytest.mark.skipif(C is None, reason="needs the C core")
T0 = 10**12


@pytest.fixture
def segment():
    if not C.module.SHARED_SUPPORTED:
        pytest.skip("needs POSIX shared memory")
    name = f"test-{uuid.uuid4().hex[:16]}"
    yield name
    C.EndpointPool.unlink_shared(name)


@pytest.mark.thread_unsafe(reason="one named segment per test")
def test_a_probe_claimed_by_one_pool_blocks_the_node_in_every_pool_of_the_segment(segment):
    first, second = (C.EndpointPool(nodes(3), shared=segment, start=0) for _ in range(2))
    for pool in (first, second):
        pool._set_clock(T0)
    first.mark_failed(0, 1.0)
    for pool in (first, second):
        pool._set_clock(T0 + 2 * 10**9)  # the cooldown is over, not yet proven
    probe = first.acquire()
    assert probe.index == 0
    assert second._load_state()[0][7] == T0 + 2 * 10**9 + 2 * 10**9  # the claim, in the segment
    assert all(second.acquire().index != 0 for _ in range(4))
    probe.success()
    assert second._load_state()[0][7] == 0
    assert second.snapshot()[0].available


@pytest.mark.thread_unsafe(reason="one named segment per test")
def test_a_shared_pool_keeps_its_loads_across_an_update(segment):
    pool = C.EndpointPool(nodes(3), shared=segment, start=0)
    lease = pool.acquire()
    pool.update(nodes(4))
    assert pool._load_state()[lease.index][0] == 1
    lease.release()
    assert [state.in_flight for state in pool.snapshot()] == [0, 0, 0, 0]
    pool._check_consistency()


def test_a_lease_dropped_after_an_update_gives_its_count_to_the_new_membership():
    pool = C.EndpointPool(nodes(3), start=0)
    leases = [pool.acquire() for _ in range(3)]
    pool.update(nodes(3)[::-1])  # every node moves
    assert [state.in_flight for state in pool.snapshot()] == [1, 1, 1]
    del leases
    gc.collect()
    assert [state.in_flight for state in pool.snapshot()] == [0, 0, 0]
    pool._check_consistency()


def test_a_lease_of_a_node_that_left_settles_without_touching_the_others():
    pool = C.EndpointPool(nodes(3), start=0)
    lease = pool._acquire_index(2)
    pool.update(nodes(2))
    lease.failure(5.0)
    assert lease.settled
    assert [state.total_failures for state in pool.snapshot()] == [0, 0]


def test_a_lease_outlives_its_pool():
    pool = C.EndpointPool(nodes(2), start=0)
    calls = []
    pool._set_observer(lambda *event: calls.append(event[0]))
    pool.mark_failed(0, 5.0)
    pool.mark_failed(1, 5.0)
    leases = [pool.acquire() for _ in range(4)]
    pool.update(nodes(2)[::-1])  # the first two settle by endpoint, after an update
    del pool
    gc.collect()
    leases[0].success()  # no pool left: settles on what the lease keeps alive
    leases[1].failure(1.0)
    leases[2].release()
    assert [lease.settled for lease in leases] == [True, True, True, False]
    assert calls == ["cooldown", "cooldown", "success"]
    del leases  # the last one is released unsettled, with no pool either
    gc.collect()


def test_a_lease_keeps_no_reference_to_its_pool():
    pool = C.EndpointPool(nodes(2), start=0)
    before = sys.getrefcount(pool)
    lease = pool.acquire()
    assert sys.getrefcount(pool) == before  # what a lease holds is per stripe, not the pool
    del pool
    gc.collect()
    lease.success()
    assert lease.settled


def test_leases_race_updates_without_losing_a_count():
    pool = C.EndpointPool(nodes(4), start=0)
    stop = threading.Event()
    barrier = threading.Barrier(4)

    def churn():
        barrier.wait()
        for k in range(300):
            pool.update(nodes(4 + k % 3))
        stop.set()

    def lease_loop():
        barrier.wait()
        while not stop.is_set():
            with pool.acquire() as lease:
                if lease.index % 2:
                    lease.success()

    threads = [threading.Thread(target=churn)] + [threading.Thread(target=lease_loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(state.in_flight == 0 for state in pool.snapshot())
    pool._check_consistency()


def test_the_rules_reject_what_does_not_fit_64_bits():
    with pytest.raises(OverflowError):
        C.module._mix64(-1)
    with pytest.raises(OverflowError):
        C.module._jitter_ns(2**64, 0, 0)
