"""The trust boundary of ``shared=`` segments (issue 21, items 3, 4 and 9): another
user cannot steer or crash a pool through its segment, no answer fills the segment
for good, and a node discovery lists again is cleared in the segment too.

Real processes throughout: the squatter runs as another uid (where the suite runs as
root), truncation is a real ``truncate()`` by a second process, and a killed worker
is killed with SIGKILL.  The segment tests need the C core (the twin refuses
``shared=``); the tests of ``_readmit`` and ``refresh()`` on pools of their own run
on both cores.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import warnings

import pytest

from conftest import IMPLS, nodes
from test_shared import DEV_SHM, pool, segment_file

C = IMPLS.get("c-extension-module")
needs_segments = pytest.mark.skipif(
    C is None or not C.module.SHARED_SUPPORTED or not os.path.isdir("/dev/shm"),
    reason="needs the C core and POSIX shared memory under /dev/shm (Linux)",
)
CHILD_TIMEOUT = 60
NOBODY = 65534
TICK = 0.05  # at least the coarse clock's tick, which a deadline set now adds


@pytest.fixture
def name():
    segment = f"trust-{uuid.uuid4().hex[:16]}"
    yield segment
    C.EndpointPool.unlink_shared(segment)


def fakes(n: int, tag: str = "fake"):
    """What a hostile discovery answer lists: n nodes nobody runs."""
    from gonka_pool import GonkaEndpoint

    return [GonkaEndpoint(f"https://{tag}{i}.example", f"gonka1{tag}{i}") for i in range(n)]


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter on the C core (whatever
    GONKA_POOL_NO_EXTENSIONS says), as a worker process would run it."""
    prelude = "import sys\nfrom gonka_pool import GonkaEndpoint\nfrom gonka_pool._pool import EndpointPool\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )


# -- 3. another local user squatting the segment -------------------------------------


@needs_segments
@pytest.mark.thread_unsafe(reason="forks, and changes the uid of the child")
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to run a child as uid 65534")
def test_a_segment_another_user_created_first_is_refused_and_steers_nothing(name):
    # What the attacker writes: a well-formed segment in which 3 of the 4 nodes cool
    # "until cleared", made world-writable, at the victim's segment name.
    scratch = f"scratch-{uuid.uuid4().hex[:12]}"
    p = pool(nodes(4), scratch)
    for i in (1, 2, 3):
        p.mark_failed(i, math.inf)
    with open(segment_file(scratch), "rb") as f:
        image = f.read()
    del p
    C.EndpointPool.unlink_shared(scratch)
    path = segment_file(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        child = os.fork()
    if child == 0:  # the attacker: only system calls, then _exit
        code = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            os.fchmod(fd, 0o666)
            os.write(fd, image)
            os.close(fd)
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    assert os.stat(path).st_uid == NOBODY
    with pytest.raises(PermissionError) as refused:
        pool(nodes(4), name)
    message = str(refused.value)
    assert repr(name) in message and path[len(DEV_SHM) :] in message
    assert f"owner uid {NOBODY}, mode 0o666" in message
    assert "use another shared= name" in message and f"rm {path}" in message
    # the fix it names works: another name is this user's own
    other = f"{name}-2"
    try:
        assert all(s.available for s in pool(nodes(4), other).snapshot())
    finally:
        C.EndpointPool.unlink_shared(other)


@needs_segments
@pytest.mark.thread_unsafe(reason="one named segment per test")
@pytest.mark.parametrize("mode", [0o660, 0o604, 0o620, 0o601])
def test_a_segment_with_any_group_or_other_permission_is_refused(name, mode):
    pool(nodes(2), name)
    os.chmod(segment_file(name), mode)
    with pytest.raises(PermissionError, match=rf"mode 0o{mode:o}\).*belong to uid {os.geteuid()} with mode 0600"):
        pool(nodes(2), name)
    os.chmod(segment_file(name), 0o600)
    assert pool(nodes(2), name).shared == name


@needs_segments
@pytest.mark.thread_unsafe(reason="one named segment per test")
def test_segment_names_are_per_user(name):
    assert C.module._segment_file(name) == f"/gonka_pool.{os.geteuid()}.{name}"
    pool(nodes(1), name)
    assert os.path.exists(segment_file(name))
    assert oct(os.stat(segment_file(name)).st_mode & 0o777) == "0o600"


@needs_segments
@pytest.mark.thread_unsafe(reason="one named segment per test")
def test_deadlines_found_in_the_segment_are_bounded_by_the_pools_max_cooldown(name):
    writer = pool(nodes(3), name, max_cooldown=600.0)
    writer.mark_failed(0, 60.0)
    writer.mark_failed(1, math.inf)  # "until cleared" is a state a pool may leave
    # A process of this user writes node0's deadline 31 years ahead, straight into
    # the file (the only deadline of exactly that value in it).
    deadline = writer._state()[2][0]
    with open(segment_file(name), "r+b") as f:
        data = f.read()
        offset = data.index(deadline.to_bytes(8, "little"))
        f.seek(offset)
        f.write((time.monotonic_ns() + 31 * 365 * 86400 * 10**9).to_bytes(8, "little"))
    reader = pool(nodes(3), name, max_cooldown=300.0)
    states = reader.snapshot()
    assert 290.0 < states[0].cooldown_remaining <= 300.0 + TICK  # as a deadline the pool set now
    assert states[1].cooldown_remaining == math.inf
    assert states[2].available
    # every pool building a membership bounds it again, update() included
    with open(segment_file(name), "r+b") as f:
        f.seek(offset)
        f.write((2**64 - 2).to_bytes(8, "little"))
    reader.update(nodes(3)[::-1])
    assert reader.snapshot()[2].cooldown_remaining <= 300.0 + TICK


TRUNCATED_VICTIM = """
import logging, os, subprocess
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(message)s")
name = sys.argv[1]
eps = [GonkaEndpoint(f"https://node{i}.example", f"addr{i}") for i in range(4)]
pool = EndpointPool(eps, shared=name, start=0)
pool.mark_failed(eps[1], 60.0)
path = sys.argv[2]
# a second process of this user truncates the segment under the running pool
subprocess.run([sys.executable, "-c", "import os, sys; os.truncate(sys.argv[1], 4096)", path], check=True)
pool.update(eps)  # where a running pool checks: every update(), so every refresh()
picked = set(pool.next_many(1000))
pool.mark_failed(eps[2], 60.0)
pool.update(eps[::-1])
pool.mark_failed(eps[3], 0)
pool._check_consistency()
print("picked", len(picked), "cooling", [not s.available for s in pool.snapshot()])
try:
    EndpointPool(eps, shared=name)
except ValueError as e:
    print("reopen:", e)
"""


@needs_segments
@pytest.mark.thread_unsafe(reason="one named segment per test")
def test_a_segment_truncated_under_a_running_pool_leaves_it_running_on_its_own_health(name):
    done = run_child(TRUNCATED_VICTIM, name, segment_file(name))
    assert done.returncode == 0, f"the pool died ({done.returncode}): {done.stderr}"
    lines = done.stdout.splitlines()
    warned = [line for line in lines if "shorter than its layout" in line]
    assert len(warned) == 1 and warned[0].startswith("WARNING") and repr(name) in warned[0]
    assert "picked 4 cooling [False, True, False, False]" in lines  # eps[::-1]: eps[2] is second
    assert any(line.startswith("reopen:") and "is damaged" in line and "unlink_shared" in line for line in lines)


# -- 4. a segment filled for good ----------------------------------------------------


@needs_segments
@pytest.mark.thread_unsafe(reason="one named segment per test")
def test_records_no_live_pool_holds_are_reclaimed_for_new_nodes(name):
    a = pool(fakes(8), name, shared_capacity=10)  # an answer that nearly fills the segment
    a.update(nodes(2))  # the next answer drops them: no live membership holds them
    b = pool(fakes(6, "new"), name)  # 6 new nodes, and every record has been used
    b.mark_failed(0, 60.0)
    assert not pool(fakes(6, "new"), name).snapshot()[0].available  # they are shared
    assert all(s.available for s in a.snapshot())
    a.mark_failed(nodes(2)[1], 60.0)  # a's records were never taken from it
    assert not pool(nodes(2), name).snapshot()[1].available
    # a new process with a new node builds its pool on the segment
    done = run_child(
        """
        p = EndpointPool([GonkaEndpoint("https://other.example", "gonka1other")], shared=sys.argv[1])
        p.mark_failed(0, 60.0)
        print(p.shared, p.snapshot()[0].available)
        """,
        name,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [name, "False"]


@needs_segments
@pytest.mark.thread_unsafe(reason="one named segment per test")
def test_a_hostile_answer_larger_than_the_segment_fails_nothing_and_is_forgotten(name, caplog):
    honest = nodes(4)
    p = pool(honest, name)
    p.mark_failed(honest[0], 60.0)
    with caplog.at_level("WARNING", logger="gonka_pool"):
        p.update(honest + fakes(1100))  # what refresh() does with such an answer
        assert len(p) == 1104
        p.update(honest + fakes(1100)[::-1])
        p.mark_failed(honest[1], 60.0)  # this membership's health is its own
        q = pool(honest + fakes(1100), name)  # so is a new pool's, built meanwhile
        assert len(q) == 1104
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 2 and all(r.levelname == "WARNING" for r in full)  # one per pool
    assert not p.snapshot()[0].available  # carried over from the segment
    del q
    p.update(honest)  # the next, honest answer: shared again, fakes reclaimable
    assert not pool(honest, name).snapshot()[0].available
    p.mark_failed(honest[2], 60.0)
    assert not pool(honest, name).snapshot()[2].available
    done = run_child(
        """
        eps = [GonkaEndpoint(f"https://new{i}.example", f"gonka1new{i}") for i in range(50)]
        print(EndpointPool(eps, shared=sys.argv[1]).shared)
        """,
        name,
    )
    assert done.returncode == 0 and done.stdout.strip() == name and "full" not in done.stderr


def full_warnings(caplog) -> int:
    return sum("is full" in r.getMessage() for r in caplog.records)


@needs_segments
@pytest.mark.thread_unsafe(reason="one named segment per test")
def test_the_records_of_a_killed_worker_are_reclaimed(name, caplog):
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
                import sys
                from gonka_pool import GonkaEndpoint
                from gonka_pool._pool import EndpointPool
                eps = [GonkaEndpoint(f"https://w{i}.example", f"gonka1w{i}") for i in range(4)]
                p = EndpointPool(eps, shared=sys.argv[1], shared_capacity=4)
                print("ready", flush=True)
                sys.stdin.read()
            """),
            name,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout.readline().strip() == "ready"
        with caplog.at_level("WARNING", logger="gonka_pool"):
            pool(nodes(1), name)  # the live worker holds all 4 records
        assert full_warnings(caplog) == 1
        worker.send_signal(signal.SIGKILL)
        worker.wait(CHILD_TIMEOUT)
    finally:
        worker.kill()
        worker.wait(CHILD_TIMEOUT)
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.close()
        worker.stdout.close()
    caplog.clear()
    with caplog.at_level("WARNING", logger="gonka_pool"):
        p, q = pool(nodes(4), name), pool(nodes(4), name)  # the dead worker's holds are reaped
    assert full_warnings(caplog) == 0
    p.mark_failed(3, 60.0)
    assert not q.snapshot()[3].available


@needs_segments
@pytest.mark.thread_unsafe(reason="forks")
def test_a_forked_child_holds_its_records_after_the_parent_lets_go(name, caplog):
    p = pool(nodes(2), name, shared_capacity=2)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        child = os.fork()
    if child == 0:  # keeps its copy of p until the parent closes the pipe
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0 if p.snapshot()[0].endpoint == nodes(2)[0] else 1)
    os.close(read_end)
    try:
        del p  # the parent lets go of both records; the child still holds them
        with caplog.at_level("WARNING", logger="gonka_pool"):
            pool(fakes(2), name)
        assert full_warnings(caplog) == 1
    finally:
        os.close(write_end)
        assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    caplog.clear()
    with caplog.at_level("WARNING", logger="gonka_pool"):
        q, r = pool(fakes(2), name), pool(fakes(2), name)  # the child is gone: reaped
    assert full_warnings(caplog) == 0
    q.mark_failed(1, 60.0)
    assert not r.snapshot()[1].available


# -- 9. a node discovery lists again is cleared everywhere ----------------------------


def test_readmit_ends_only_a_cooldown_until_cleared_and_tells_the_observer(pool_impl):
    p = pool_impl.make(3)
    events = []
    p._set_observer(lambda *event: events.append(event))
    p.mark_failed(0, math.inf)
    p.mark_failed(1, 120.0)
    events.clear()
    assert p._readmit(nodes(3)[0]) is True
    assert events == [("cleared", nodes(3)[0], 0, 0)]
    assert p._readmit(nodes(3)[0]) is False  # nothing left to clear: no event
    assert p._readmit(nodes(3)[1]) is False  # any other cooldown runs on
    assert p._readmit(nodes(4)[3]) is False  # not in the pool
    assert events == [("cleared", nodes(3)[0], 0, 0)]
    states = p.snapshot()
    assert states[0].available and states[0].consecutive_failures == 0 and states[0].total_failures == 1
    assert not states[1].available and states[1].consecutive_failures == 1
    p._check_consistency()
    with pytest.raises(TypeError):
        p._readmit("https://node0.example")


@pytest.fixture(scope="module")
def network():
    gonka = pytest.importorskip("gonka_pool.gonka", reason="the [gonka] extra is not installed")
    from gonka_pool.testing import LocalGonkaNetwork

    net = LocalGonkaNetwork()
    for i in range(3):
        net.add_node(f"n{i}", gonka.Signer(format(2000 + i, "064x"), backend="ecdsa").address)
    net.start()
    yield net
    net.stop()


def test_refresh_clears_a_node_until_cleared_and_tells_the_observer(pool_impl, network):
    from gonka_pool import gonka

    p = gonka.pool_from_gonka(network.source_url, allow_private=True, pool_class=pool_impl.EndpointPool)
    events = []
    p._set_observer(lambda *event: events.append(event))
    p.mark_failed(p[0], math.inf)  # what a 403 "Transfer Agent not allowed" does
    p.mark_failed(p[1], 120.0)
    events.clear()
    gonka.refresh(p, network.source_url, allow_private=True)  # the network runs on this machine
    assert [s.available for s in p.snapshot()] == [True, False, True]
    assert events == [("cleared", p[0], 0, 0)]


@needs_segments
@pytest.mark.thread_unsafe(reason="one named segment per test")
def test_refresh_clears_a_node_until_cleared_in_the_segment_for_every_pool(name, network):
    from gonka_pool import gonka

    p = gonka.pool_from_gonka(network.source_url, allow_private=True, pool_class=C.EndpointPool, shared=name)
    other = C.EndpointPool(list(p)[::-1], shared=name)  # another worker of the host
    p.mark_failed(p[0], math.inf)
    other.mark_failed(p[2], math.inf)  # by another pool: cooling in p too
    assert [s.available for s in p.snapshot()] == [False, True, False]
    gonka.refresh(p, network.source_url, allow_private=True)  # the network runs on this machine
    assert all(s.available for s in other.snapshot())
    assert all(s.available for s in C.EndpointPool(list(p), shared=name).snapshot())  # a restart
    assert all(s.available for s in p.snapshot())
