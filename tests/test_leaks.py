"""No leaks: a million pools, a million selections, and marks and failing calls by
the hundred thousand leave the process's RSS, tracemalloc's count and the shared
objects' reference counts where they were.

tracemalloc sees every allocation that goes through Python's allocators, the C
core's ``PyMem_RawCalloc`` block included; RSS sees everything else; a reference
count sees a leaked reference to a shared object, which neither of the others would
(the object stays alive either way).  Each loop runs a warm-up first, so free lists,
caches and tracemalloc's own tables are full before the baseline is taken.

Every test here measures the whole process, so none may run beside a copy of
itself (pytest-run-parallel runs them in one thread).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import tracemalloc
from datetime import timedelta

import pytest

from conftest import nodes

pytestmark = pytest.mark.thread_unsafe(
    reason="measures process-wide RSS and tracemalloc totals, which allocations made by "
    "copies of the test running beside it would move"
)

MILLION = 1_000_000
# tracemalloc makes every allocation about six times slower (a pool: 5 us -> 30 us),
# so it watches a shorter run than RSS does; a leak of even one small object per
# iteration still shows far above its allowance.  GONKA_POOL_LEAK_TRACED=1000000
# makes it watch a full million too (about a minute per implementation).
TRACED = int(os.environ.get("GONKA_POOL_LEAK_TRACED", 100_000))
WARM_UP = 20_000
# A leak of one pool block (at least 256 bytes) or one 2-tuple (56 bytes) per iteration
# would be 5-256 MB; the allowances are far below that and above the noise of the
# allocator keeping or returning arenas.
RSS_SLACK = 4 * 2**20
TRACED_SLACK = 64 * 2**10


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


requires_proc = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc (Linux)")


@contextlib.contextmanager
def records_dropped(name="gonka_pool"):
    """The package's log records are still made, then dropped: pytest's log capture
    would otherwise keep every one of them for the report, which looks like a leak."""
    logger = logging.getLogger(name)
    handler, propagate = logging.NullHandler(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.propagate = propagate
        logger.removeHandler(handler)


def measure(loop, rss_count, traced_count=None):
    """Run loop(WARM_UP), take a baseline, run loop(rss_count) and compare RSS; then
    the same under tracemalloc with traced_count.  Returns the growth in (RSS bytes,
    traced bytes, live traced blocks, the largest traced differences)."""
    with records_dropped():
        loop(WARM_UP)
        gc.collect()
        rss_before = rss_bytes()
        loop(rss_count)
        gc.collect()
        rss_growth = rss_bytes() - rss_before
        tracemalloc.start()
        try:
            loop(WARM_UP)
            gc.collect()
            snapshot_before = tracemalloc.take_snapshot()
            traced_before = tracemalloc.get_traced_memory()[0]
            loop(min(rss_count, traced_count or TRACED))
            gc.collect()
            traced_growth = tracemalloc.get_traced_memory()[0] - traced_before
            snapshot_after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    growth = snapshot_after.compare_to(snapshot_before, "lineno")
    grown_blocks = sum(stat.count_diff for stat in growth if stat.count_diff > 0)
    return rss_growth, traced_growth, grown_blocks, growth[:5]


def assert_flat(result, label):
    rss, traced, blocks, top = result
    # Shown with `pytest -s tests/test_leaks.py`; docs/guarantees.md quotes these.
    print(f"\n{label}: RSS {rss / 2**20:+.2f} MiB, traced {traced:+d} B in {blocks:+d} blocks")
    assert traced < TRACED_SLACK, f"{label}: tracemalloc grew {traced} bytes: {top}"
    assert blocks < 100, f"{label}: {blocks} more live blocks: {top}"
    assert rss < RSS_SLACK, f"{label}: RSS grew {rss / 2**20:.1f} MiB"


@requires_proc
def test_a_million_pools_created_and_dropped_leave_memory_flat(pool_impl):
    endpoints = tuple(nodes(4))
    make = pool_impl.EndpointPool
    refs_before = [sys.getrefcount(ep) for ep in endpoints]

    def loop(count):
        for _ in range(count):
            make(endpoints)

    assert_flat(measure(loop, MILLION), f"{len(endpoints)}-node pools")
    assert [sys.getrefcount(ep) for ep in endpoints] == refs_before


@requires_proc
def test_pools_that_selected_and_marked_leave_memory_flat_when_dropped(pool_impl):
    # A pool that selected and has cooling nodes when dropped: nothing it holds stays.
    endpoints = tuple(nodes(3))
    make = pool_impl.EndpointPool

    def loop(count):
        for _ in range(count):
            pool = make(endpoints)
            pool.next_indexed()
            pool.mark_failed(1, 30.0)

    assert_flat(measure(loop, 200_000, 50_000), "pools that selected and marked")


@requires_proc
def test_a_million_next_indexed_tuples_leave_memory_and_refcounts_flat(make_pool):
    pool = make_pool(5)
    pool.mark_failed(3, 3600)  # the slow path too: clock read and skip
    refs_before = [sys.getrefcount(ep) for ep in pool.endpoints]

    def loop(count):
        next_indexed, nxt = pool.next_indexed, pool.next
        for _ in range(count):
            next_indexed()
            nxt()

    assert_flat(measure(loop, MILLION), "next_indexed() + next()")
    assert [sys.getrefcount(ep) for ep in pool.endpoints] == refs_before


@requires_proc
def test_marks_and_failing_calls_leak_neither_memory_nor_references(make_pool):
    pool = make_pool(3)
    huge_index, cooldown, delta = 10**30, 30.5, timedelta(seconds=5)
    refs_before = [sys.getrefcount(obj) for obj in (huge_index, cooldown, delta)]

    def loop(count):
        mark = pool.mark_failed
        for _ in range(count // 10):  # ten calls each
            mark(0, cooldown)
            mark(1, delta)
            mark(0, 0)
            for bad in ((huge_index, 1), (-1, 1), (True, 1), (1, -1.0), (1, "x"), (1, float("nan"))):
                try:
                    mark(*bad)
                except (IndexError, TypeError, ValueError):
                    pass
            pool._select_loop(10)

    assert_flat(measure(loop, 200_000, 50_000), "marks and errors")
    assert [sys.getrefcount(obj) for obj in (huge_index, cooldown, delta)] == refs_before
