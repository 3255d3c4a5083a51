"""Per-call costs of the pool API on one thread, C core and pure twin.

make bench-pytest        # or: python -m pytest benchmarks/ --benchmark-only
"""

from __future__ import annotations

import pytest


def test_next(benchmark, make_pool):
    pool = make_pool(8)
    benchmark(pool.next)


def test_next_indexed(benchmark, make_pool):
    pool = make_pool(8)
    benchmark(pool.next_indexed)


def test_mark_failed_with_a_cooldown(benchmark, make_pool):
    pool = make_pool(8)
    benchmark(pool.mark_failed, 3, 30.0)


def test_mark_failed_clear(benchmark, make_pool):
    pool = make_pool(8)
    benchmark(pool.mark_failed, 3, 0)


def test_next_with_one_node_cooling(benchmark, make_pool):
    pool = make_pool(8)
    pool.mark_failed(3, 3600)
    benchmark(pool.next)


def test_next_all_in_cooldown_at_1000_nodes(benchmark, make_pool):
    pool = make_pool(1000)
    for i in range(1000):
        pool.mark_failed(i, 3600 + i)
    result = benchmark(pool.next)
    assert result is pool[0]  # the earliest deadline


@pytest.mark.parametrize("k", [16, 256, 4096])
def test_next_many(benchmark, make_pool, k):
    pool = make_pool(8)
    result = benchmark(pool.next_many, k)
    assert len(result) == k
