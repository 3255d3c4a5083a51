"""A pool and process boundaries: a forked child gets a working, independent copy; a
pool does not pickle (cooldown state is per process), its endpoints do.

Fork tests are marked thread-unsafe: fork() while other threads run is what POSIX
leaves undefined and Python 3.12+ warns about (a DeprecationWarning, an error in
this suite), so pytest-run-parallel must not run them beside copies of themselves.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import select
import threading
import time
import warnings

import pytest

from conftest import nodes

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
thread_unsafe_fork = pytest.mark.thread_unsafe(
    reason="os.fork() beside other running threads is undefined by POSIX and warned "
    "against by Python; each copy of the test would fork while the others run"
)

CHILD_TIMEOUT = 30.0


def in_child(work):
    """Run work() in a forked child; return its (picklable) result or raise its error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            try:
                payload = ("ok", work())
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                payload = ("error", f"{type(exc).__name__}: {exc}")
                status = 1
            os.write(write_end, pickle.dumps(payload))
        finally:
            os._exit(status)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + CHILD_TIMEOUT
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, 9)
                raise AssertionError(f"the forked child did not finish in {CHILD_TIMEOUT} s")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, wait_status = os.waitpid(pid, 0)
    kind, value = pickle.loads(b"".join(chunks))
    assert kind == "ok", f"child failed: {value}"
    assert os.waitstatus_to_exitcode(wait_status) == 0
    return value


def picks(pool, k):
    return [pool.next_indexed()[0] for _ in range(k)]


@fork_only
@thread_unsafe_fork
def test_a_forked_child_gets_a_working_pool_independent_of_the_parent(make_pool):
    pool = make_pool(3)
    assert picks(pool, 1) == [0]
    pool.mark_failed(2, 3600)
    before = pool._state()

    def child():
        # The child goes on from the parent's state at fork time...
        seen = picks(pool, 4)
        # ...and what it does next stays in the child.
        pool.mark_failed(0, math.inf)
        pool.mark_failed(1, math.inf)
        pool.mark_failed(2, 0)
        return seen, picks(pool, 3)

    seen, after_marks = in_child(child)
    assert seen == [1, 0, 1, 0]  # node 2 was cooling in the parent, so in the child
    assert after_marks == [2, 2, 2]
    assert pool._state() == before  # the child's selections and marks are not here
    assert picks(pool, 3) == [1, 0, 1]


@fork_only
@thread_unsafe_fork
def test_the_c_core_works_in_a_child_forked_while_other_threads_select(pool_impl):
    # The C core holds no lock, so a thread that was mid-selection at fork time leaves
    # nothing held behind in the child.  (The twin's per-pool lock could be held at
    # that instant and would then never be released in the child: fork from a
    # multi-threaded process is only as safe as the locks it copies; docs/api.md.)
    if pool_impl.name != "c":
        pytest.skip("the twin uses a lock; forking while another thread holds it is unsafe")
    pool = pool_impl.make(4)
    stop = threading.Event()

    def select_until_stopped():
        nxt, mark = pool.next_indexed, pool.mark_failed
        while not stop.is_set():
            idx, _ep = nxt()
            mark(idx, 0)

    threads = [threading.Thread(target=select_until_stopped) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.05)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded ... fork()"

            def child():
                pool.mark_failed(3, math.inf)
                return sorted(set(picks(pool, 300)))

            assert in_child(child) == [0, 1, 2]
    finally:
        stop.set()
        for thread in threads:
            thread.join()


# -- pickling ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_a_pool_raises_a_type_error_that_says_what_to_do(make_pool, protocol):
    pool = make_pool(2)
    pool.mark_failed(0, 60)
    before = pool._state()
    with pytest.raises(
        TypeError,
        match="cannot pickle 'EndpointPool' object: rebuild it from "
        r"pool.endpoints instead \(cooldown state is per process\)",
    ):
        pickle.dumps(pool, protocol=protocol)
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps({"pool": [pool]}, protocol=protocol)
    assert pool._state() == before


def test_copying_a_pool_raises_the_same_type_error(make_pool):
    pool = make_pool(2)
    for copier in (copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot pickle 'EndpointPool' object"):
            copier(pool)


def test_a_pool_rebuilt_from_its_pickled_endpoints_has_fresh_state(pool_impl):
    pool = pool_impl.make(3)
    pool.next()
    pool.mark_failed(0, math.inf)
    endpoints = pickle.loads(pickle.dumps(pool.endpoints))
    rebuilt = pool_impl.EndpointPool(endpoints)
    assert rebuilt.endpoints == pool.endpoints == tuple(nodes(3))
    assert sorted(picks(rebuilt, 3)) == [0, 1, 2]  # no cooldown carried over
