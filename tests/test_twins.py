"""The C core and the pure twin, driven by the same random operations, agree on
every result, every error and every stored value (a frozen test clock makes
cooldown expiry deterministic)."""

from __future__ import annotations

import math
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import nodes

COOLDOWNS = st.one_of(
    st.sampled_from([0, 0.0, -0.0, 1, 2.5, 1e-9, 5e-324, math.inf, 1e300, 10**30, -1, math.nan]),
    st.floats(min_value=0, max_value=1e4, allow_nan=False),
    st.integers(min_value=-5, max_value=10**6),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    st.sampled_from([True, "5", None, timedelta(seconds=-1), timedelta.max]),
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("next")),
        st.tuples(st.just("next_indexed")),
        st.tuples(st.just("next_many"), st.one_of(st.integers(-1, 20), st.sampled_from([True, 1.5]))),
        st.tuples(st.just("mark"), st.integers(min_value=-2, max_value=9), COOLDOWNS),
        st.tuples(st.just("advance"), st.integers(min_value=0, max_value=5 * 10**9)),
    ),
    max_size=60,
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
        clock[0] += op[1]
        pool._set_clock(clock[0])
        return ("ok", clock[0])
    except Exception as exc:  # noqa: BLE001 - the exception is the result compared
        return (type(exc).__name__, str(exc))


@settings(max_examples=300, deadline=None)
@given(n=st.integers(min_value=1, max_value=7), ops=OPS, start=st.integers(0, 2**62))
def test_c_core_and_pure_twin_agree_on_any_operation_sequence(both_impls, n, ops, start):
    c_impl, py_impl = both_impls
    eps = nodes(n)
    c_pool, py_pool = c_impl.EndpointPool(eps), py_impl.EndpointPool(eps)
    c_clock, py_clock = [start], [start]
    c_pool._set_clock(start)
    py_pool._set_clock(start)
    for op in ops:
        assert apply(c_pool, op, c_clock) == apply(py_pool, op, py_clock), op
        assert c_pool._state() == py_pool._state(), op
