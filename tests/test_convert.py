"""Every argument the pools convert goes through the one converter of its rule
(``gonka_pool._convert``): for any odd value of any converting parameter, the C core
and the twin return the same result or raise the same exception with the same
message, leaving the same state, and an error is the converter's own."""

from __future__ import annotations

import math
import operator
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from conftest import BrokenIndex, BrokenReal, Index, Real, nodes
from gonka_pool import GonkaEndpoint, _convert


class IndexAndReal:
    """Both protocols: the integer rule wins, everywhere."""

    def __index__(self):
        return 3

    def __float__(self):
        return 9.5


class FloatSubclass(float):
    pass


class IntSubclass(int):
    pass


class TimedeltaSubclass(timedelta):
    pass


ODD: list[object] = [
    None,
    True,
    False,
    0,
    1,
    2,
    3,
    -1,
    -3,
    -4,
    -5,
    2**31,
    2**40,
    2**40 + 1,
    2**63,
    2**64,
    18_446_744_073,
    18_446_744_074,
    10**400,
    -(10**400),
    0.0,
    -0.0,
    0.5,
    1.0,
    30.0,
    -0.5,
    5e-324,
    -5e-324,
    1e-9,
    1e308,
    -1e308,
    math.inf,
    -math.inf,
    math.nan,
    -math.nan,
    Decimal(1),
    Decimal(-1),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("1e400"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    Fraction(1, 3),
    Fraction(-1, 2),
    Fraction(10**400, 3),
    Fraction(-(10**400), 3),
    1j,
    "1",
    "random",
    "x",
    b"1",
    [1],
    (1,),
    {},
    object,
    Index(1),
    Index(-1),
    Index(2**70),
    Index("1"),
    BrokenIndex(),
    Real(2.5),
    Real(-2.5),
    Real("3"),
    Real(math.nan),
    BrokenReal(),
    IndexAndReal(),
    FloatSubclass(2.5),
    FloatSubclass(-1.0),
    IntSubclass(2),
    IntSubclass(-2),
    timedelta(0),
    timedelta(seconds=1),
    timedelta(microseconds=-1),
    timedelta.max,
    timedelta.min,
    TimedeltaSubclass(seconds=2),
    TimedeltaSubclass(seconds=-2),
    GonkaEndpoint("https://elsewhere.example", "x"),
]


def pool_of(cls, **settings):
    """A pool of ``cls`` over four nodes, from node 0, on a frozen clock."""
    settings.setdefault("start", 0)
    pool = cls(nodes(4), **settings)
    pool._set_clock(10**12)
    return pool


def too_many_to_select(value) -> bool:
    """A count next_many would honour, allocating a list that long."""
    try:
        return 1000 < operator.index(value) <= 2**40
    except Exception:  # noqa: BLE001 - anything else is refused, so fine to try
        return False


def fail(_endpoint):
    raise ConnectionError("node down")


def answer(_endpoint):
    # Never fails: with a deadline, how many nodes a failing call tries would
    # depend on timing.
    return "answer"


# Each converting parameter: (what a pool does with the value, the converter that
# owns the parameter's rule, or None where the pool checks more than the rule).
PARAMETERS = {
    "mark_failed cooldown": (lambda pool, v: pool.mark_failed(0, v), lambda v: v is None or _convert.cooldown_ns(v)),
    "mark_failed index": (lambda pool, v: pool.mark_failed(v, 5), None),
    "mark_failed at least": (lambda pool, v: pool._mark_failed_at_least(0, None, v), _convert.cooldown_ns),
    "mark_success index": (lambda pool, v: pool.mark_success(v), None),
    "next_many count": (lambda pool, v: len(pool.next_many(v)), _convert.count),
    "pool[key]": (lambda pool, v: pool[v], lambda v: _convert.sequence_index(v, 4)),
    "base_cooldown": (lambda pool, v: pool_of(type(pool), base_cooldown=v, max_cooldown=10**400), _convert.cooldown_ns),
    "max_cooldown": (lambda pool, v: pool_of(type(pool), base_cooldown=5e-324, max_cooldown=v), _convert.cooldown_ns),
    "start": (lambda pool, v: pool_of(type(pool), start=v)._state()[0], _convert.check_start),
    "a weight": (
        lambda pool, v: pool_of(type(pool), weights=[1, v, 2, 1]).weights,
        lambda v: _convert.check_weights([1, v, 2, 1], 4),
    ),
    "weights": (lambda pool, v: pool_of(type(pool), weights=v).weights, lambda v: _convert.check_weights(v, 4)),
    "update weight": (
        lambda pool, v: (pool.update(nodes(2), [v, 1]), pool.weights),
        lambda v: _convert.check_weights([v, 1], 2),
    ),
    "call attempts": (lambda pool, v: pool.call(fail, attempts=v), _convert.check_attempts),
    "call cooldown": (lambda pool, v: pool.call(fail, cooldown=v), lambda v: _convert.check_cooldown("cooldown", v)),
    "call timeout_cooldown": (
        lambda pool, v: pool.call(fail, timeout_cooldown=v),
        lambda v: _convert.check_cooldown("timeout_cooldown", v),
    ),
    "call deadline": (lambda pool, v: pool.call(answer, deadline=v), _convert.check_deadline),
}


def outcome(action, *args):
    """What ``action(*args)`` returned, or the type and message of what it raised."""
    try:
        return ("returned", repr(action(*args)))
    except Exception as exc:  # noqa: BLE001 - the exception is the result compared
        return (type(exc).__name__, str(exc))


def odd_values(parameter):
    if parameter == "next_many count":
        return [v for v in ODD if not too_many_to_select(v)]
    return ODD


@pytest.mark.parametrize("parameter", PARAMETERS)
def test_both_cores_convert_any_odd_argument_alike(both_impls, parameter):
    c_impl, py_impl = both_impls
    act, _ = PARAMETERS[parameter]
    for value in odd_values(parameter):
        c_pool, py_pool = pool_of(c_impl.EndpointPool), pool_of(py_impl.EndpointPool)
        assert outcome(act, c_pool, value) == outcome(act, py_pool, value), value
        assert c_pool._state() == py_pool._state(), value


@pytest.mark.parametrize("parameter", [name for name, (_, rule) in PARAMETERS.items() if rule])
def test_a_refused_argument_raises_its_converters_error_and_changes_nothing(pool_impl, parameter):
    act, rule = PARAMETERS[parameter]
    for value in odd_values(parameter):
        expected = outcome(rule, value)
        if expected[0] == "returned":
            continue
        pool = pool_of(pool_impl.EndpointPool)
        before = pool._state()
        assert outcome(act, pool, value) == expected, value
        assert pool._state() == before, value


def test_an_index_target_is_refused_by_the_integer_rule_and_checked_against_the_pool(pool_impl):
    for value in ODD:
        pool = pool_of(pool_impl.EndpointPool)
        got = outcome(pool.mark_failed, value, 5)
        if isinstance(value, GonkaEndpoint):
            assert got == ("returned", "False")
        elif not _convert.is_index_target(value):
            message = f"target must be an endpoint index (int) or a GonkaEndpoint, not {type(value).__name__}"
            assert got == ("TypeError", message), value
        elif (converted := outcome(_convert.endpoint_index, value))[0] != "returned":
            assert got == converted, value
        elif not 0 <= int(converted[1]) < 4:
            assert got == ("IndexError", str(_convert.index_error(int(converted[1]), 4))), value
        else:
            assert got == ("returned", "True"), value
