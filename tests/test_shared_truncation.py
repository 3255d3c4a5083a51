"""A ``shared=`` segment truncated under a running pool never crashes it (issue 21,
item 3): picks, leases and marks that touch a page past the segment's new end fault
into the SIGBUS guard (``_shared.h``), which leaves zeros in the segment's place;
the pool serves on and warns once at its next ``update()``.  A SIGBUS anywhere else
behaves as if the guard were not there.

Real processes throughout: a second process truncates the segment while the victim
loops, and the faults outside a segment are real faults of a child's own mapping.
Linux only (the guard's platform), and the C core (the twin has no ``shared=``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

from conftest import IMPLS

C = IMPLS.get("c-extension-module")
pytestmark = [
    pytest.mark.skipif(
        C is None or not C.module.SHARED_SUPPORTED or not sys.platform.startswith("linux"),
        reason="the SIGBUS guard is Linux's, for the C core's shared= segments",
    ),
    pytest.mark.thread_unsafe(reason="child processes on one named segment"),
]
CHILD_TIMEOUT = 120


@pytest.fixture
def name():
    segment = f"truncated-{uuid.uuid4().hex[:16]}"
    yield segment
    C.EndpointPool.unlink_shared(segment)


def run_child(code: str, *args: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter on the C core, as a worker process would run it."""
    prelude = "import sys\nfrom gonka_pool import GonkaEndpoint\nfrom gonka_pool._pool import EndpointPool\n"
    return subprocess.run(
        [sys.executable, *options, "-c", prelude + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )


# The victim loops next(), acquire() and a mark that enters and clears a cooldown
# (deadline and count words, both of which a truncation can take away) on `threads`
# threads, until a second process has truncated the segment to `size` bytes and
# every thread has looped 2000 times more.  Without the guard the first touch of a
# page past the new end kills it with SIGBUS (the baseline did).
VICTIM = """
import logging, os, subprocess, threading
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(message)s")
logging.getLogger("gonka_pool").addFilter(lambda record: "cooldown" not in record.getMessage())
from gonka_pool._pool import _segment_file
name, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
eps = [GonkaEndpoint(f"https://node{i}.example", f"addr{i}") for i in range(4)]
pool = EndpointPool(eps, shared=name, start=0)
path = "/dev/shm" + _segment_file(name)

def mapped():  # whether this process still maps the segment's file
    with open("/proc/self/maps") as maps:
        return any(line.rstrip().endswith(path) for line in maps)

assert mapped()
truncator = subprocess.Popen([sys.executable, "-c", "import os, sys, time; time.sleep(0.2); "
                              "os.truncate(sys.argv[1], int(sys.argv[2]))", path, str(size)])
truncated = threading.Event()

def loop(k):
    after = 0
    while after < 2000:
        pool.next()
        with pool.acquire():
            pass
        pool.mark_failed(eps[k], 60.0)
        pool.mark_failed(eps[k], 0)
        if truncated.is_set():
            after += 1

workers = [threading.Thread(target=loop, args=(k % 4,)) for k in range(threads)]
for worker in workers:
    worker.start()
truncator.wait()
truncated.set()
for worker in workers:
    worker.join()
print("size", os.stat(path).st_size, "mapped", mapped())
print("picked", len(set(pool.next_many(1000))))
pool.update(eps)  # where the pool learns it: one warning
pool.mark_failed(eps[1], 60.0)
pool.update(eps[::-1])
print("after update: picked", len(set(pool.next_many(1000))), "cooling",
      [not s.available for s in pool.snapshot()])
"""


@pytest.mark.parametrize("size", [0, 4096], ids=["to-nothing", "to-its-header"])
@pytest.mark.parametrize("threads", [1, 4], ids=["one-thread", "four-threads"])
def test_a_pool_picking_and_marking_across_a_truncation_keeps_serving_and_warns_once(name, size, threads):
    done = run_child(VICTIM, name, str(size), str(threads))
    assert done.returncode == 0, f"the pool died ({done.returncode}): {done.stderr}"
    lines = done.stdout.splitlines()
    # the guard took the file's mapping away: zeros of this process's own are there
    assert f"size {size} mapped False" in lines
    assert "picked 4" in lines  # every node selectable: no deadline survives in zeros
    warned = [line for line in lines if "shorter than its layout" in line]
    assert len(warned) == 1 and warned[0].startswith("WARNING") and repr(name) in warned[0]
    # the pool goes on with health of its own: eps[1] third in eps[::-1]
    assert "after update: picked 3 cooling [False, False, True, False]" in lines


# A child with a shared pool (so the guard is installed) that then reads a page
# past the end of a file it mapped itself: not a segment, so it must die as before.
OUTSIDE = """
import faulthandler, mmap, os, tempfile
if sys.argv[1] == "before":
    faulthandler.enable()
pool = EndpointPool([GonkaEndpoint("https://node0.example", "addr0")], shared=sys.argv[2])
if sys.argv[1] == "after":
    faulthandler.enable()
pool.next()
with tempfile.TemporaryFile() as f:
    f.truncate(2 * mmap.PAGESIZE)
    view = mmap.mmap(f.fileno(), 2 * mmap.PAGESIZE)
    f.truncate(0)
    def read_past_the_end():
        return view[mmap.PAGESIZE]
    read_past_the_end()
print("survived")
"""


@pytest.mark.parametrize("faulthandler", ["off", "before", "after"])
def test_a_sigbus_outside_every_segment_still_kills_the_process(name, faulthandler):
    done = run_child(OUTSIDE, faulthandler, name)
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stdout, done.stderr)
    assert "survived" not in done.stdout
    if faulthandler == "off":
        assert "Fatal Python error" not in done.stderr
    else:  # faulthandler, enabled before or after the guard, still reports it
        assert "Fatal Python error: Bus error" in done.stderr
        assert "read_past_the_end" in done.stderr


def test_a_sigbus_sent_by_kill_still_kills_the_process(name):
    done = run_child(
        """
        import os, signal
        pool = EndpointPool([GonkaEndpoint("https://node0.example", "addr0")], shared=sys.argv[1])
        os.kill(os.getpid(), signal.SIGBUS)
        print("survived")
        """,
        name,
    )
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stdout, done.stderr)
    assert "survived" not in done.stdout
