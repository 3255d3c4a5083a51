"""The C core and the pure twin, driven by the same random operations, agree on
every result, every error and every stored value (a frozen test clock makes
cooldown expiry deterministic), and each keeps its invariants after every step."""

from __future__ import annotations

import math
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import nodes
from gonka_pool import GonkaEndpoint
from gonka_pool._schedule import SchedulePlan, schedule_table_py

COOLDOWNS = st.one_of(
    st.none(),
    st.none(),
    st.integers(min_value=0, max_value=100),
    st.sampled_from([None, 0, 0.0, -0.0, 1, 2.5, 1e-9, 5e-324, math.inf, 1e300, 10**30, -1, math.nan]),
    st.floats(min_value=0, max_value=1e4, allow_nan=False),
    st.integers(min_value=-5, max_value=10**6),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    st.sampled_from([True, "5", timedelta(seconds=-1), timedelta.max]),
)
ENDPOINTS = nodes(9)
TARGETS = st.one_of(
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=-2, max_value=9),
    st.sampled_from(ENDPOINTS),
    st.sampled_from([GonkaEndpoint("https://elsewhere.example", "x"), 1.0, "0", None]),
)
WEIGHTS = st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=7)
# Weights far past the exact table (issue 15): the quantized, spread-order path.
BIG_WEIGHTS = st.lists(st.integers(min_value=1, max_value=10**30), min_size=1, max_size=7)
MEMBERS = st.lists(st.integers(min_value=0, max_value=8), min_size=1, max_size=7)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("next")),
        st.tuples(st.just("next_indexed")),
        st.tuples(st.just("next_many"), st.one_of(st.integers(-1, 20), st.sampled_from([True, 1.5]))),
        st.tuples(st.just("mark"), TARGETS, COOLDOWNS),
        st.tuples(st.just("mark"), TARGETS, COOLDOWNS),
        st.tuples(st.just("mark"), TARGETS, COOLDOWNS),
        st.tuples(st.just("success"), TARGETS),
        st.tuples(st.just("advance"), st.integers(min_value=0, max_value=5 * 10**9)),
        st.tuples(st.just("advance"), st.integers(min_value=0, max_value=10**12)),
        st.tuples(st.just("update"), MEMBERS, st.one_of(st.none(), WEIGHTS, BIG_WEIGHTS)),
        st.tuples(st.just("snapshot")),
        # the backoff ladder: one node failing again after each cooldown ends
        st.just(("mark", 0, None)),
        st.just(("advance", 10**12)),
        # weighted fallback: every node but one cooling
        st.just(("mark", 0, math.inf)),
        st.just(("mark", 1, math.inf)),
    ),
    min_size=10,
    max_size=100,
)


def apply(pool, op, clock):
    kind = op[0]
    try:
        if kind == "next":
            return ("ok", pool.next())
        if kind == "next_indexed":
            return ("ok", pool.next_indexed())
        if kind == "next_many":
            return ("ok", pool.next_many(op[1]))
        if kind == "mark":
            return ("ok", pool.mark_failed(op[1], op[2]))
        if kind == "success":
            return ("ok", pool.mark_success(op[1]))
        if kind == "update":
            weights = None if op[2] is None else (op[2] * 7)[: len(op[1])]
            return ("ok", pool.update([ENDPOINTS[i] for i in op[1]], weights))
        if kind == "snapshot":
            return ("ok", pool.snapshot())
        clock[0] += op[1]
        pool._set_clock(clock[0])
        return ("ok", clock[0])
    except Exception as exc:  # noqa: BLE001 - the exception is the result compared
        return (type(exc).__name__, str(exc))


@settings(max_examples=500, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=7),
    weights=st.one_of(st.none(), WEIGHTS, BIG_WEIGHTS),
    start=st.integers(0, 2**62),
    base=st.sampled_from([1, 30.0, 0.25]),
    ops=OPS,
    now=st.integers(0, 2**62),
)
def test_c_core_and_pure_twin_agree_on_any_operation_sequence(both_impls, n, weights, start, base, ops, now):
    c_impl, py_impl = both_impls
    eps = ENDPOINTS[:n]
    weights = None if weights is None else (weights * 7)[:n]
    settings_ = dict(weights=weights, start=start, base_cooldown=base, max_cooldown=base * 1000)
    assert_agree(c_impl.EndpointPool(eps, **settings_), py_impl.EndpointPool(eps, **settings_), ops, now)


def assert_agree(c_pool, py_pool, ops, now):
    """Drive both pools, frozen at ``now``, through ``ops``: the same result or
    error, the same stored state and consistent invariants after every step."""
    c_clock, py_clock = [now], [now]
    c_pool._set_clock(now)
    py_pool._set_clock(now)
    for op in ops:
        assert apply(c_pool, op, c_clock) == apply(py_pool, op, py_clock), op
        assert c_pool._state() == py_pool._state(), op
        c_pool._check_consistency()
        py_pool._check_consistency()
    assert c_pool.snapshot() == py_pool.snapshot()


@settings(max_examples=150, deadline=None)
@given(
    slots=st.one_of(
        st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=12),
        st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=4),
        st.lists(st.sampled_from([1, 2, 63, 64, 65, 129]), min_size=1, max_size=60),
    ),
    smooth=st.booleans(),
)
def test_c_core_and_pure_twin_lay_out_the_same_table_for_any_plan(both_impls, slots, smooth):
    c_impl, _ = both_impls
    plan = SchedulePlan(tuple(slots), smooth)
    table = schedule_table_py(plan)
    assert c_impl.module._schedule_table(plan.slots, smooth) == table
    assert sorted(table) == [i for i, c in enumerate(slots) for _ in range(c)]
