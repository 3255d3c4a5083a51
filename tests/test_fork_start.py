"""A pool built before fork() (gunicorn --preload) starts at random in each child.

A pool with ``start="random"`` (the default) moves its cursor to a fresh random
position in every child forked after it was built (``os.register_at_fork``), so that
workers forked from one master do not walk the nodes in the master's order, all
picking the same node at the same moment.  A pool with an explicit ``start=`` keeps
its order in every process.  What the parent learned (cooldowns, the count of
selections) goes on in the child; only where the cursor stands changes.

The fork tests are thread-unsafe for the reason test_fork_and_pickle.py gives.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import weakref
from pathlib import Path

import pytest

from conftest import nodes
from gonka_pool import _pool_common
from test_fork_and_pickle import fork_only, in_child, picks, thread_unsafe_fork

# Enough nodes that independent random starts almost never coincide: 8 children
# all starting on one node of 64 has probability 64**-7.
NODES = 64
CHILDREN = 8


def first_picks_of_children(pool, children=CHILDREN, k=3):
    return [tuple(in_child(lambda: picks(pool, k))) for _ in range(children)]


@fork_only
@thread_unsafe_fork
def test_children_forked_from_one_pool_start_at_random_each(pool_impl):
    pool = pool_impl.EndpointPool(nodes(NODES))  # start="random", the default
    seen = first_picks_of_children(pool)
    # In lockstep every child would return the same picks; independent starts give
    # 8 draws of 64, fewer than 4 of them distinct with probability about 1e-6.
    assert len({first for first, *_ in seen}) >= 4, seen
    # Each child still walks round robin from wherever it starts.
    assert all(b == (a + 1) % NODES and c == (b + 1) % NODES for a, b, c in seen)


@fork_only
@thread_unsafe_fork
def test_a_pool_with_an_explicit_start_keeps_its_order_in_every_child(pool_impl):
    pool = pool_impl.EndpointPool(nodes(NODES), start=5)
    assert picks(pool, 2) == [5, 6]
    assert first_picks_of_children(pool, children=4) == [(7, 8, 9)] * 4
    assert picks(pool, 1) == [7]  # and the parent goes on where it was


@fork_only
@thread_unsafe_fork
def test_a_child_keeps_the_parents_cooldowns_and_selection_count(pool_impl):
    pool = pool_impl.EndpointPool(nodes(4))
    picks(pool, 5)
    pool.mark_failed(1, math.inf)
    pool.mark_failed(2, math.inf)
    before = pool._state()

    def child():
        moved = pool._state()
        return moved, sorted(set(picks(pool, 40)))

    state_in_child, chosen = in_child(child)
    assert state_in_child == before  # 5 selections so far, 2 cooling, the same deadlines
    assert chosen == [0, 3]
    assert pool._state() == before


@fork_only
@thread_unsafe_fork
def test_a_child_forked_from_a_child_starts_at_random_again(pool_impl):
    pool = pool_impl.EndpointPool(nodes(NODES))

    def grandchildren():
        return first_picks_of_children(pool, children=4, k=1)

    seen = in_child(grandchildren)
    assert len(set(seen)) > 1, seen  # all 4 equal: probability 64**-3


@fork_only
@thread_unsafe_fork
def test_forked_workers_of_a_shared_pool_share_health_but_not_a_cursor(pool_impl):
    if pool_impl.name != "c":
        pytest.skip("shared= needs the C core")
    segment = f"test-fork-{uuid.uuid4().hex[:16]}"
    try:
        pool = pool_impl.EndpointPool(nodes(NODES), shared=segment)  # built in the "master"
        seen = first_picks_of_children(pool)
        assert len({first for first, *_ in seen}) >= 4, seen

        def worker_marks_node_7():
            pool.mark_failed(7, math.inf)

        in_child(worker_marks_node_7)
        # Another worker (and the master) sees the first worker's mark.
        assert 7 not in in_child(lambda: picks(pool, NODES))
        assert not pool.snapshot()[7].available
    finally:
        pool_impl.EndpointPool.unlink_shared(segment)


@fork_only
@thread_unsafe_fork
def test_a_fork_while_the_registry_lock_is_held_leaves_the_child_able_to_build_pools(pool_impl):
    # A thread of the parent's building a pool holds the registry's lock: in the
    # child that thread is gone, and the lock must not be inherited held.
    pool = pool_impl.EndpointPool(nodes(NODES))
    with _pool_common._random_start_lock:

        def child():
            fresh = pool_impl.EndpointPool(nodes(NODES))  # would wait forever on the old lock
            return picks(fresh, 1) + picks(pool, 1)

        assert len(in_child(child)) == 2


@fork_only
@thread_unsafe_fork
def test_the_twin_restarts_in_a_child_forked_while_its_lock_is_held(pool_impl):
    # The hook must not take the twin's per-pool lock: held at the fork by a thread
    # that does not exist in the child, it is never released there.
    if pool_impl.name != "python":
        pytest.skip("the C core's pools have no lock")
    pool = pool_impl.EndpointPool(nodes(NODES))
    cursors = []
    with pool._lock:
        for _ in range(4):
            cursors.append(in_child(lambda: pool._cursor))
        parent_cursor = pool._cursor
    assert len(set(cursors)) > 1 and parent_cursor not in cursors, (cursors, parent_cursor)


@pytest.mark.thread_unsafe(reason="builds pools on threads of its own and checks a process-wide registry")
def test_pools_built_on_many_threads_at_once_are_all_registered(pool_impl):
    threads, per_thread = 4, 50
    barrier = threading.Barrier(threads)
    built: list[list] = [[] for _ in range(threads)]

    def build(k):
        barrier.wait()
        built[k].extend(pool_impl.EndpointPool(nodes(3)) for _ in range(per_thread))
        built[k].append(pool_impl.EndpointPool(nodes(3), start=0))

    workers = [threading.Thread(target=build, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    registered = set(_pool_common._random_start_pools)
    assert all(pool in registered for pools in built for pool in pools[:-1])
    assert not any(pools[-1] in registered for pools in built)  # start=0: deterministic


def test_the_fork_registry_does_not_keep_a_pool_alive(pool_impl):
    pool = pool_impl.EndpointPool(nodes(3))
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None


# -- gunicorn --preload ----------------------------------------------------------

APP = """
import os
from gonka_pool import EndpointPool, GonkaEndpoint

options = {"shared": os.environ["SEGMENT"]} if os.environ.get("SEGMENT") else {}
# Built at import: with --preload, in the master, before the workers are forked.
pool = EndpointPool([GonkaEndpoint(f"https://n{i}.example", f"gonka1n{i}") for i in range(64)], **options)
urls = [endpoint.base_url for endpoint in pool.endpoints]
MASTER = os.getpid()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""

CONFIG = """
import json, os


def post_worker_init(worker):
    import app

    first = [app.urls.index(app.pool.next().base_url) for _ in range(3)]
    report = {"pid": os.getpid(), "forked_from": app.MASTER, "first_picks": first}
    path = os.path.join(os.environ["REPORTS"], f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as out:
        json.dump(report, out)
    os.replace(path + ".tmp", path)
"""


@pytest.mark.thread_unsafe(reason="starts a gunicorn master with 4 worker processes")
@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn runs on POSIX only")
@pytest.mark.parametrize("shared", [False, True], ids=["unshared", "shared"])
def test_gunicorn_preload_workers_each_start_at_random(tmp_path, shared):
    pytest.importorskip("gunicorn")
    import gonka_pool

    if shared and gonka_pool.IMPLEMENTATION != "c":
        pytest.skip("shared= needs the C core")
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "gunicorn.conf.py").write_text(textwrap.dedent(CONFIG))
    reports = tmp_path / "reports"
    reports.mkdir()
    segment = f"test-gunicorn-{uuid.uuid4().hex[:12]}" if shared else ""
    package_root = Path(gonka_pool.__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), str(package_root), os.environ.get("PYTHONPATH")])),
        "REPORTS": str(reports),
        "SEGMENT": segment,
    }
    command = [sys.executable, "-m", "gunicorn", "--preload", "--workers", "4", "--bind", "127.0.0.1:0"]
    command += ["--config", str(tmp_path / "gunicorn.conf.py"), "app:app"]
    # Its own session (and process group), so that stopping it stops its workers too.
    master = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(reports.glob("*.json"))) < 4 and time.monotonic() < deadline and master.poll() is None:
            time.sleep(0.05)
        found = [json.loads(path.read_text()) for path in reports.glob("*.json")]
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(master.pid, signal.SIGTERM)
        try:
            output = master.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(master.pid, signal.SIGKILL)
            output = master.communicate(timeout=30)[0].decode(errors="replace")
        if shared:
            gonka_pool.EndpointPool.unlink_shared(segment)
    assert len(found) == 4, output[-3000:]
    assert len({report["forked_from"] for report in found}) == 1  # one master built the pool
    assert len({report["pid"] for report in found}) == 4
    firsts = [tuple(report["first_picks"]) for report in found]
    # Forked copies of the master's cursor would all report the same picks; four
    # independent starts of 64 coincide with probability 64**-3.
    assert len(set(firsts)) > 1, firsts
