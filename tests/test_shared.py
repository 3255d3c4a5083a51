"""EndpointPool(shared=NAME): node health in a named shared-memory segment that every
pool naming it sees, in this process and in others (real processes, not mocks).

The C core only: the twin refuses ``shared=`` with NotImplementedError (tested
here too).  Each test names its own segment and removes it afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from conftest import IMPLS, nodes

C = IMPLS.get("c-extension-module")
pytestmark = [
    pytest.mark.skipif(
        C is None or not C.module.SHARED_SUPPORTED, reason="needs the C core on a platform with POSIX shared memory"
    ),
    # The fixture's segment is one per test, which copies of the test run in other
    # threads would share; the threaded case starts its own threads.
    pytest.mark.thread_unsafe(reason="each test owns one named segment"),
]
DEV_SHM = "/dev/shm"
CHILD_TIMEOUT = 60


@pytest.fixture
def name():
    segment = f"test-{uuid.uuid4().hex[:16]}"
    yield segment
    C.EndpointPool.unlink_shared(segment)


def segment_file(name: str) -> str:
    """Where segment ``name`` lies on Linux: its POSIX name, which holds the user's uid."""
    assert C is not None
    return DEV_SHM + C.module._segment_file(name)


def pool(endpoints, name, **options):
    return C.EndpointPool(endpoints, shared=name, start=0, **options)


def run_child(code: str, *args: str, wait: bool = True):
    """``code`` in a fresh interpreter (as a worker process would be)."""
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done.stdout


CHILD_PRELUDE = """
import sys
from gonka_pool import EndpointPool, GonkaEndpoint
eps = [GonkaEndpoint(f"https://node{i}.example", f"addr{i}") for i in range(int(sys.argv[2]))]
pool = EndpointPool(eps, shared=sys.argv[1], start=0)
"""


def test_pools_naming_one_segment_share_each_nodes_health(name):
    a, b = pool(nodes(3), name), pool(nodes(3)[::-1], name)
    assert a.shared == b.shared == name
    assert a.mark_failed(nodes(3)[1], 30.0)
    # b lists the nodes in another order: health follows the endpoint, not the index
    assert [s.available for s in b.snapshot()] == [True, False, True]
    assert nodes(3)[1] not in b.next_many(10)
    assert b.snapshot()[1].consecutive_failures == 1
    b.mark_failed(nodes(3)[1], 0)
    assert all(s.available for s in a.snapshot())
    # the backoff level is shared too: a's next failure of node0 is the second
    a.mark_failed(0)
    b.mark_success(nodes(3)[0])
    assert a.snapshot()[0].consecutive_failures == 0
    assert a.snapshot()[0].total_failures == 1


def test_a_pool_sees_only_its_own_nodes_and_update_changes_only_its_membership(name):
    a, b = pool(nodes(4), name), pool(nodes(2), name)
    a.mark_failed(3, 60.0)
    b.update(nodes(4)[2:])  # b now holds node2 and node3: node3 cools there too
    assert [s.available for s in b.snapshot()] == [True, False]
    assert a.endpoints == tuple(nodes(4))
    b.update(nodes(1))
    b.update(nodes(4))
    assert not b.snapshot()[3].available


def test_a_mark_in_one_process_is_seen_by_the_next_selection_in_another(name):
    p = pool(nodes(3), name)
    run_child(CHILD_PRELUDE + "pool.mark_failed(eps[2], 60.0)\n", name, "3")
    assert not p.snapshot()[2].available
    assert nodes(3)[2] not in p.next_many(30)
    # and the other way round
    p.mark_failed(nodes(3)[0], 60.0)
    out = run_child(CHILD_PRELUDE + "print([s.available for s in pool.snapshot()])\n", name, "3")
    assert out.strip() == "[False, True, False]"


def _spawned_worker(name: str, marks: int, done) -> None:
    """A worker process started by multiprocessing's spawn method (as uvicorn's are):
    builds its own pool on the segment and marks ``marks`` nodes."""
    assert C is not None
    p = C.EndpointPool(nodes(8), shared=name, start=0)
    for i in range(marks):
        p.mark_failed(i, 60.0)
    done.put([s.available for s in p.snapshot()])


def test_spawned_worker_processes_share_the_segment(name):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    p = pool(nodes(8), name)
    p.mark_failed(7, 60.0)  # the parent's mark, seen by the workers
    done = context.Queue()
    workers = [context.Process(target=_spawned_worker, args=(name, k + 1, done)) for k in range(3)]
    for w in workers:
        w.start()
    seen = [done.get(timeout=CHILD_TIMEOUT) for _ in workers]
    for w in workers:
        w.join(CHILD_TIMEOUT)
        assert w.exitcode == 0
    assert all(not view[7] for view in seen)
    # every worker's marks (nodes 0..2) reached the parent's pool
    assert [s.available for s in p.snapshot()] == [False] * 3 + [True] * 4 + [False]


def test_the_segment_outlives_the_process_that_created_it(name):
    run_child(CHILD_PRELUDE + "pool.mark_failed(1, 120.0)\npool.mark_failed(1, 120.0)\n", name, "2")
    p = pool(nodes(2), name)  # the creator is gone; what it learned is not
    assert [s.available for s in p.snapshot()] == [True, False]
    assert p.snapshot()[1].total_failures == 2
    assert C.EndpointPool.unlink_shared(name) is True
    assert C.EndpointPool.unlink_shared(name) is False
    assert pool(nodes(2), name).snapshot()[1].available  # a new, empty segment
    # the pool made before the unlink keeps its mapping
    assert not p.snapshot()[1].available


def test_workers_killed_while_marking_leave_the_segment_consistent(name):
    worker = CHILD_PRELUDE + textwrap.dedent("""
        print("ready", flush=True)
        i = 0
        while True:  # mark, clear, succeed, as fast as it can, until killed
            pool.mark_failed(i % 8, 0.001 * (i % 3))
            pool.mark_success(eps[(i * 5) % 8])
            pool.next()
            i += 1
    """)
    for round_ in range(3):
        workers = [run_child(worker, name, "8", wait=False) for _ in range(3)]
        for w in workers:
            assert w.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.05 * round_)
        for w in workers:
            w.send_signal(signal.SIGKILL)
        for w in workers:
            w.wait(timeout=CHILD_TIMEOUT)
            w.stdout.close()
    p = pool(nodes(8), name)
    _, cooling, deadlines = p._state()
    # the count errs high only: never below the deadlines set
    assert cooling >= sum(1 for d in deadlines if d)
    p._check_consistency()
    # every record still resolves, marks still apply, and selection still works
    p.mark_failed(nodes(8)[5], 60.0)
    assert not p.snapshot()[5].available
    for i in range(8):
        p.mark_failed(i, 0)
    assert sorted(e.address for e in p.next_many(8)) == sorted(e.address for e in nodes(8))
    _, cooling, deadlines = p._state()
    assert deadlines == [0] * 8 and cooling >= 0


@pytest.mark.skipif(not os.path.isdir(DEV_SHM), reason="needs /dev/shm (Linux)")
def test_a_record_half_written_by_a_dead_process_is_taken_over(name):
    pool(nodes(2)[1:], name, shared_capacity=1)  # a segment of one record
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    with open(segment_file(name), "r+b") as segment:
        segment.seek(128)  # the record's state word: claimed by a process now gone
        segment.write(((int(exited.stdout) << 2) | 1).to_bytes(8, "little"))
    started = time.monotonic()
    p = pool(nodes(1), name)  # takes the record over rather than waiting on it
    assert time.monotonic() - started < 1.0
    p.mark_failed(0, 60.0)
    assert not pool(nodes(1), name).snapshot()[0].available


def test_a_full_segment_leaves_a_membership_its_own_health_with_one_warning(name, caplog):
    p = pool(nodes(2), name, shared_capacity=2)
    with caplog.at_level("WARNING", logger="gonka_pool"):
        q = pool(nodes(3), name)  # p holds both records: q's node2 has none
        q.update(nodes(3)[::-1])
    assert [r.getMessage() for r in caplog.records if "is full" in r.getMessage()] == [
        (
            f"shared memory segment {name!r} is full: its 2 endpoint records are held by live pools; "
            "this membership of 3 nodes keeps its health to itself (shared again once it fits; or create "
            f"the segment larger with shared_capacity=, after EndpointPool.unlink_shared({name!r}))"
        )
    ]
    q.mark_failed(nodes(3)[0], 60.0)
    assert p.snapshot()[0].available  # q's health is its own
    q._check_consistency()
    p.update(nodes(2)[::-1])  # nodes it already has need no new record
    p.mark_failed(nodes(2)[1], 60.0)
    q.update(nodes(2))  # fits again: shared
    assert [s.available for s in q.snapshot()] == [True, False]


def test_a_segment_of_another_capacity_or_layout_is_refused_clearly(name):
    pool(nodes(1), name, shared_capacity=16)
    with pytest.raises(ValueError, match="holds 16 endpoints, not shared_capacity=32"):
        pool(nodes(1), name, shared_capacity=32)
    assert pool(nodes(1), name).shared == name  # no capacity given: the segment's
    if os.path.isdir(DEV_SHM):
        with open(segment_file(name), "r+b") as segment:
            segment.write(b"not ours")
        with pytest.raises(ValueError, match="another layout or version"):
            pool(nodes(1), name)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"shared": "a/b"}, ValueError, "letters, digits"),
        ({"shared": ""}, ValueError, "letters, digits"),
        ({"shared": "x" * 201}, ValueError, "letters, digits"),
        ({"shared": b"name"}, TypeError, "shared must be a str"),
        ({"shared": "ok", "shared_capacity": 0}, ValueError, r"shared_capacity must be 1\.\."),
        ({"shared": "ok", "shared_capacity": True}, TypeError, "shared_capacity must be an int"),
        ({"shared_capacity": 8}, TypeError, "pass shared= too"),
    ],
)
def test_bad_shared_arguments_are_refused(options, error, message):
    with pytest.raises(error, match=message):
        C.EndpointPool(nodes(2), **options)


@pytest.mark.parametrize(
    ("bad", "error"), [("a/b", ValueError), ("", ValueError), (None, TypeError), (b"x", TypeError)]
)
def test_unlink_shared_refuses_what_no_segment_can_be_named(bad, error):
    with pytest.raises(error, match="shared must be"):
        C.EndpointPool.unlink_shared(bad)


def test_the_twin_refuses_shared_clearly():
    twin = IMPLS["pure-python-module"].EndpointPool
    with pytest.raises(NotImplementedError, match="needs gonka_pool's C core"):
        twin(nodes(2), shared="x")
    with pytest.raises(NotImplementedError):
        twin.unlink_shared("x")
    with pytest.raises(TypeError, match="pass shared= too"):
        twin(nodes(2), shared_capacity=8)
    assert twin(nodes(2)).shared is None
    assert C.EndpointPool(nodes(2)).shared is None


def test_an_unshared_pool_is_unchanged_by_a_shared_one_with_the_same_nodes(name):
    shared, own = pool(nodes(2), name), C.EndpointPool(nodes(2), start=0)
    shared.mark_failed(0, 60.0)
    assert own.snapshot()[0].available


def test_threads_marking_through_two_pools_keep_the_count_exact(name):
    import random
    import threading

    endpoints = nodes(8)
    a, b = pool(endpoints, name), pool(endpoints[::-1], name)
    threads = int(os.environ.get("GONKA_POOL_TEST_THREADS", "4"))
    barrier = threading.Barrier(threads)

    def work(seed):
        rng = random.Random(seed)
        p = a if seed % 2 else b
        barrier.wait()
        for i in range(3000):
            target = endpoints[rng.randrange(8)]
            roll = rng.random()
            if roll < 0.4:
                p.mark_failed(target, rng.choice([0, 0.0005, 60.0]))
            elif roll < 0.5:
                p.mark_success(target)
            elif roll < 0.52 and p is b:
                b.update(endpoints[::-1] if i % 2 else endpoints)
            else:
                p.next()

    workers = [threading.Thread(target=work, args=(s,)) for s in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    a._check_consistency()
    b._check_consistency()
    time.sleep(0.002)
    a.next_many(16)  # clears what expired
    _, cooling, deadlines = a._state()
    assert cooling == sum(1 for d in deadlines if d)
    assert sorted(b._state()[2]) == sorted(deadlines)


def test_an_endpoint_listed_twice_is_one_record(name):
    twice = [nodes(2)[0], nodes(2)[1], nodes(2)[0]]
    p = pool(twice, name)
    p.mark_failed(nodes(2)[0], 30.0)
    states = p.snapshot()
    assert [s.available for s in states] == [False, True, False]
    assert states[0].total_failures == states[2].total_failures == 1
    assert nodes(2)[0] not in p.next_many(9)


# The twin comparison with a shared C pool: alone on its segment, without update()
# (after which the segment remembers nodes a pool dropped, by design) and without
# duplicates (one record each), it must agree with the twin on every result, error
# and stored value.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from test_twins import ENDPOINTS, OPS, assert_agree  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=7),
    start=st.integers(0, 2**62),
    base=st.sampled_from([1, 30.0, 0.25]),
    now=st.integers(0, 2**62),
    ops=OPS.map(lambda ops: [op for op in ops if op[0] != "update"]),
)
def test_a_shared_c_pool_agrees_with_the_twin_on_any_operation_sequence(n, start, base, now, ops):
    name = f"twin-{uuid.uuid4().hex[:16]}"
    settings_ = dict(start=start, base_cooldown=base, max_cooldown=base * 1000)
    try:
        c_pool = C.EndpointPool(ENDPOINTS[:n], shared=name, **settings_)
        py_pool = IMPLS["pure-python-module"].EndpointPool(ENDPOINTS[:n], **settings_)
        assert_agree(c_pool, py_pool, ops, now)
    finally:
        C.EndpointPool.unlink_shared(name)


@pytest.mark.thread_unsafe(reason="sets an environment variable")
def test_from_env_takes_the_constructors_keywords(name, monkeypatch):
    monkeypatch.setenv("GONKA_ENDPOINTS", "https://node0.example;addr0,https://node1.example;addr1")
    p = C.EndpointPool.from_env(shared=name, weights=[2, 1])
    twin = IMPLS["pure-python-module"].EndpointPool.from_env(weights=[2, 1])
    assert p.shared == name and p.weights == twin.weights == (2, 1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'shard'"):
        C.EndpointPool.from_env(shard=name)
