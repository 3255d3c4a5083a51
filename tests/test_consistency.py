"""``pool._check_consistency()``: the state invariants both cores keep, checked on
demand (the twin comparison and the concurrency tests call it after every step
and every join), and the debug build's assertions on the same invariants."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import nodes


def test_a_pool_is_consistent_through_marks_clears_and_updates(make_pool):
    pool = make_pool(4, weights=[1, 3, 2, 5])
    pool._set_clock(10**12)
    assert pool._check_consistency() is None
    pool.mark_failed(1, 30)
    pool.mark_failed(nodes(4)[2])
    pool.next_many(50)
    pool.update(nodes(4)[::-1] + nodes(6)[4:])
    pool.mark_success(2)
    pool._set_clock(10**12 + 31 * 10**9)
    pool.next_many(50)
    pool.mark_failed(0, 0)
    assert pool._check_consistency() is None


def test_a_cooling_count_above_the_deadlines_is_named(make_pool):
    pool = make_pool(3)
    pool._add_to_cooling(1)
    with pytest.raises(AssertionError, match=r"^cooling is 1, but 0 deadlines are non-zero$"):
        pool._check_consistency()


def test_a_cooling_count_below_the_deadlines_is_named(make_pool):
    pool = make_pool(3)
    pool.mark_failed(0, 60)
    pool.mark_failed(2, 60)
    pool._add_to_cooling(-1)
    with pytest.raises(AssertionError, match=r"^cooling is 1, but 2 deadlines are non-zero$"):
        pool._check_consistency()


@pytest.mark.c_extension
@pytest.mark.skipif(
    not os.environ.get("GONKA_POOL_DEBUG_BUILD"),
    reason="needs the debug build (make test-debug)",
)
def test_the_debug_build_aborts_when_cooling_would_go_below_zero(pool_impl):
    if pool_impl.name != "c":
        pytest.skip("the debug build's assertions are the C core's")
    # One deadline, counted nowhere: clearing it takes cooling below zero.
    script = textwrap.dedent(
        """
        from gonka_pool import GonkaEndpoint, _pool
        pool = _pool.EndpointPool([GonkaEndpoint("https://node0.example", "addr0")])
        pool.mark_failed(0, 60)
        pool._add_to_cooling(-1)
        pool.mark_failed(0, 0)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == -signal.SIGABRT, run.stderr
    assert "before >= 1" in run.stderr
