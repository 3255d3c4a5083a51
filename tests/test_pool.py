"""The pool's behaviour beyond the seed's tests: cooldown arithmetic, the clock,
the sequence protocol, and bad input that must leave the pool unchanged."""

from __future__ import annotations

import copy
import inspect
import math
import pickle
import pydoc
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from conftest import nodes
from gonka_pool import GonkaEndpoint

T0 = 10**12  # test clock start, in ns
FOREVER = 2**64 - 1


def frozen(pool, now=T0):
    pool._set_clock(now)
    return pool


def picks(pool, k):
    return [pool.next_indexed()[0] for _ in range(k)]


# -- selection ------------------------------------------------------------------


@pytest.mark.parametrize("weights", [None, [1, 2, 1, 3, 1]])
def test_every_candidate_examined_moves_the_cursor_as_in_the_seed(make_pool, weights):
    # The seed takes one cursor position per candidate; the core claims the first
    # and moves past the rest in one step: the same picks, the cursor as far.
    pool = frozen(make_pool(5, weights=weights))
    pool.mark_failed(1, 60)
    pool.mark_failed(2, 60)
    seen, positions = [], []
    for _ in range(12):
        seen.append(pool.next_indexed()[0])
        positions.append(pool._state()[0])
    assert 1 not in seen and 2 not in seen
    if weights is None:
        assert seen == [0, 3, 4] * 4
        assert positions == [p + 5 * k for k in range(4) for p in (1, 4, 5)]
    for idx in (0, 3, 4):
        pool.mark_failed(idx, 30)
    # All cooling: n candidates examined, the earliest deadline returned.
    before = pool._state()[0]
    assert pool.next_indexed()[0] == 0
    assert pool._state()[0] - before == 5


def test_next_and_next_indexed_share_one_cursor(make_pool):
    pool = make_pool(3)
    assert [pool.next_indexed()[0], url(pool.next()), pool.next_indexed()[0]] == [0, 1, 2]


def url(ep):
    return int(ep.base_url.removeprefix("https://node").removesuffix(".example"))


def test_next_returns_the_pools_endpoints(make_pool, pool_impl):
    pool = make_pool(2)
    assert pool.next() == pool[0]
    assert pool.next_indexed()[1] == pool[1]


@pytest.mark.thread_unsafe(reason="counts on the next two threads created taking consecutive stripes")
def test_per_thread_copies_only_where_they_pay(make_pool, pool_impl):
    # Free-threaded C core, small pool: each cursor stripe but the first returns
    # its own equal copies, so threads do not write one reference count.
    import threading

    pool = make_pool(2)
    there = []
    for _ in range(2):  # consecutive threads take consecutive stripes: one is not 0
        worker = threading.Thread(target=lambda: there.append(pool.next()))
        worker.start()
        worker.join()
    originals = [pool.endpoints[pool.endpoints.index(theirs)] for theirs in there]
    copies = pool_impl.name == "c" and pool_impl.module.FREE_THREADED
    assert there == originals and list(map(hash, there)) == list(map(hash, originals))
    assert any(a is not b for a, b in zip(there, originals, strict=True)) is copies
    big = make_pool(4096)
    there.clear()
    worker = threading.Thread(target=lambda: there.append(big.next()))
    worker.start()
    worker.join()
    assert there[0] is big[0]  # large pools share one object per endpoint


def test_a_cooling_node_returns_once_its_deadline_passes(make_pool):
    pool = frozen(make_pool(3))
    pool.mark_failed(1, 5)
    assert 1 not in picks(pool, 6)
    pool._set_clock(T0 + 5 * 10**9 - 1)
    assert 1 not in picks(pool, 6)
    pool._set_clock(T0 + 5 * 10**9)
    assert 1 in picks(pool, 3)


def test_expired_deadlines_are_cleared_so_selection_skips_the_clock_again(make_pool):
    pool = frozen(make_pool(2))
    pool.mark_failed(0, 1)
    assert pool._state()[1] == 1
    pool._set_clock(T0 + 10**9)
    picks(pool, 2)
    assert pool._state()[1:] == (0, [0, 0])


def test_remarking_a_node_never_shortens_its_deadline(make_pool):
    # The seed replaced the deadline; a shorter re-mark would revive a node early.
    pool = frozen(make_pool(2))
    pool.mark_failed(0, 100)
    pool.mark_failed(0, 1)
    assert pool._state()[1:] == (1, [T0 + 100 * 10**9, 0])
    pool.mark_failed(0, 200)
    assert pool._state()[2][0] == T0 + 200 * 10**9


def test_zero_still_clears_a_longer_deadline(make_pool):
    pool = frozen(make_pool(2))
    pool.mark_failed(0, math.inf)
    pool.mark_failed(0, 0)
    assert pool._state()[1:] == (0, [0, 0])


def test_infinite_and_huge_cooldowns_saturate_to_until_cleared(make_pool):
    pool = frozen(make_pool(4))
    pool.mark_failed(0, math.inf)
    pool.mark_failed(1, 1e300)
    pool.mark_failed(2, 10**400)
    pool.mark_failed(3, timedelta.max)
    assert pool._state()[2] == [FOREVER] * 4
    pool._set_clock(2**63 - 1)
    assert picks(pool, 4) == [0, 0, 0, 0]  # all cooling: the first of equal deadlines
    pool.mark_failed(2, 0)
    assert picks(pool, 3) == [2, 2, 2]


def test_a_deadline_near_the_clock_limit_saturates_instead_of_wrapping(make_pool):
    pool = frozen(make_pool(2), now=2**63 - 1)
    pool.mark_failed(0, 2**40)
    assert pool._state()[2][0] == FOREVER


@pytest.mark.parametrize(
    ("cooldown", "ns"),
    [
        (1, 10**9),
        (2.5, 2_500_000_000),
        (timedelta(milliseconds=1500), 1_500_000_000),
        (timedelta(days=1, microseconds=1), 86_400_000_001_000),
        (Fraction(1, 4), 250_000_000),
        (Decimal("0.5"), 500_000_000),
        (5e-324, 1),  # subnormal: a positive cooldown is at least 1 ns
        (1e-12, 1),
        (1e308, FOREVER),
        (18_446_744_073, 18_446_744_073 * 10**9),
        (18_446_744_074, FOREVER),
    ],
)
def test_cooldowns_convert_to_whole_nanoseconds(make_pool, cooldown, ns):
    pool = frozen(make_pool(1), now=0)
    pool.mark_failed(0, cooldown)
    assert pool._state()[2][0] == ns


@pytest.mark.parametrize("zero", [0, 0.0, -0.0, timedelta(0), False.__int__()])
def test_every_kind_of_zero_clears(make_pool, zero):
    pool = frozen(make_pool(2))
    pool.mark_failed(0, 60)
    pool.mark_failed(0, zero)
    assert pool._state()[1:] == (0, [0, 0])


def test_an_int_like_index_is_accepted(make_pool):
    class Index:
        def __index__(self):
            return 1

    pool = frozen(make_pool(2))
    pool.mark_failed(Index(), 60)
    assert pool._state()[2] == [0, T0 + 60 * 10**9]


def test_real_clock_is_monotonic_nanoseconds(make_pool, pool_impl):
    # time.monotonic_ns()'s epoch and unit.  A coarse clock reads up to a tick
    # behind (plus the timer interrupt's latency) and every deadline adds one tick.
    import time

    tick = pool_impl.module.CLOCK[1]
    pool = make_pool(2)
    before = time.monotonic_ns()
    pool.mark_failed(0, 1)
    after = time.monotonic_ns()
    assert before + 10**9 - tick <= pool._state()[2][0] <= after + 10**9 + tick


def test_real_deadlines_add_one_tick_of_the_pools_clock(make_pool, pool_impl):
    # Exact on the pool's own clock: a node marked just before a tick is not let
    # back a tick early, and a mark repeated within one tick writes nothing new.
    from gonka_pool._clock import monotonic_ns

    tick = pool_impl.module.CLOCK[1]
    pool = make_pool(2)
    before = monotonic_ns()
    pool.mark_failed(0, 1)
    after = monotonic_ns()
    assert before + tick + 10**9 <= pool._state()[2][0] <= after + tick + 10**9
    pool.mark_failed(0, 0.5)  # shorter: never shortens
    assert before + tick + 10**9 <= pool._state()[2][0] <= after + tick + 10**9


def test_both_cores_read_the_same_clock():
    import sys

    from conftest import IMPLS
    from gonka_pool import _clock

    name, tick = _clock.CLOCK
    assert all(impl.module.CLOCK == (name, tick) for impl in IMPLS.values())
    assert 0 <= tick <= _clock.CLOCK_MAX_TICK_NS
    if sys.platform.startswith("linux"):
        # Coarse wherever the kernel offers it with a tick of 10 ms or less.
        assert name == "CLOCK_MONOTONIC_COARSE" and tick > 0


# -- bad input: a specific exception, the pool unchanged ----------------------


@pytest.mark.parametrize(
    ("idx", "error", "message"),
    [
        (2, IndexError, "out of range"),
        (-1, IndexError, "out of range"),
        (10**30, IndexError, "out of range"),
        (True, TypeError, "not bool"),
        (1.0, TypeError, "not float"),
        ("0", TypeError, "not str"),
        (None, TypeError, "not NoneType"),
        (1.5, TypeError, "not float"),
    ],
)
def test_bad_index_raises_and_leaves_the_pool_unchanged(make_pool, idx, error, message):
    pool = frozen(make_pool(2))
    pool.next()
    before = pool._state()
    with pytest.raises(error, match=message):
        pool.mark_failed(idx, 30)
    assert pool._state() == before
    assert picks(pool, 2) == [1, 0]


@pytest.mark.parametrize(
    ("cooldown", "error", "message"),
    [
        (-1, ValueError, ">= 0"),
        (-0.5, ValueError, ">= 0"),
        (-math.inf, ValueError, ">= 0"),
        (math.nan, ValueError, "NaN"),
        (timedelta(seconds=-1), ValueError, ">= 0"),
        (True, TypeError, "not bool"),
        ("30", TypeError, "not str"),
        (b"1", TypeError, "not bytes"),
        (1j, TypeError, "not complex"),
    ],
)
def test_bad_cooldown_raises_and_leaves_the_pool_unchanged(make_pool, cooldown, error, message):
    pool = frozen(make_pool(2))
    pool.mark_failed(1, 7)
    before = pool._state()
    with pytest.raises(error, match=message):
        pool.mark_failed(0, cooldown)
    assert pool._state() == before
    assert picks(pool, 2) == [0, 0]


@pytest.mark.parametrize(
    ("endpoints", "error", "message"),
    [
        ([], ValueError, "^EndpointPool requires at least one node$"),
        (iter(()), ValueError, "at least one node"),
        (None, TypeError, "iterable of GonkaEndpoint"),
        (5, TypeError, "iterable of GonkaEndpoint"),
        ("https://a;b", TypeError, "not a single str"),
        (GonkaEndpoint("https://a", "b"), TypeError, "not a single GonkaEndpoint"),
        (["https://a"], TypeError, "item 0 must be a GonkaEndpoint"),
        ([GonkaEndpoint("https://a", "b"), ("https://c", "d")], TypeError, "item 1"),
    ],
)
def test_bad_endpoints_are_rejected_with_a_specific_error(pool_impl, endpoints, error, message):
    with pytest.raises(error, match=message):
        pool_impl.EndpointPool(endpoints)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            nodes(3),
            {},
            (
                r"^EndpointPool\(\) takes 1 positional argument \(the endpoints\) but 3 were "
                r"given; pass a list: EndpointPool\(\[ep1, ep2\]\)$"
            ),
        ),
        ([nodes(2), None], {}, r"takes 1 positional argument \(the endpoints\) but 2 were given"),
        ([], {}, r"^EndpointPool\(\) missing 1 required argument: 'endpoints'"),
        (
            [nodes(1)],
            {"wieghts": [1]},
            (
                r"^EndpointPool\(\) got an unexpected keyword argument 'wieghts'; "
                "its keywords are weights, start, base_cooldown, max_cooldown, shared, "
                "shared_capacity and balance$"
            ),
        ),
        ([nodes(1)], {"endpoints": nodes(1)}, r"^EndpointPool\(\) got multiple values for argument 'endpoints'$"),
    ],
)
def test_a_wrong_call_of_the_constructor_is_reported_against_endpoint_pool(pool_impl, args, kwargs, message):
    with pytest.raises(TypeError, match=message) as caught:
        pool_impl.EndpointPool(*args, **kwargs)
    assert "__cinit__" not in str(caught.value) and "__new__" not in str(caught.value)


def test_the_constructor_takes_endpoints_by_keyword_and_settings_only_by_keyword(pool_impl):
    pool = frozen(pool_impl.EndpointPool(endpoints=nodes(2), weights=[2, 1], start=1, base_cooldown=1, max_cooldown=2))
    assert pool.weights == (2, 1) and pool.next_indexed()[0] == 1  # schedule 0 1 0
    pool.mark_failed(0)
    assert pool.snapshot()[0].cooldown_remaining == 1.0


def test_every_public_method_has_a_signature_with_the_twins_parameter_names(both_impls):
    # The C methods are method descriptors (not cyfunctions, which would cost the
    # hot path its exact-type call): their signatures come from the docstrings.
    c_impl, py_impl = both_impls
    c_cls, py_cls = c_impl.EndpointPool, py_impl.EndpointPool
    public = sorted(name for name in dir(py_cls) if not name.startswith("_") and callable(getattr(py_cls, name)))
    assert public == sorted(name for name in dir(c_cls) if not name.startswith("_") and callable(getattr(c_cls, name)))
    assert {"next", "mark_failed", "mark_success", "update", "snapshot", "from_env"} <= set(public)
    for name in public:
        c_sig = inspect.signature(getattr(c_cls, name))
        py_sig = inspect.signature(getattr(py_cls, name))
        assert list(c_sig.parameters) == list(py_sig.parameters), name
        # Beyond self (positional-only in C), the same kinds and defaults.
        assert described(c_sig) == described(py_sig), name
    assert inspect.signature(c_cls) == inspect.signature(py_cls)
    assert str(inspect.signature(c_cls)) == (
        "(endpoints, *, weights=None, start='random', base_cooldown=30.0, max_cooldown=300.0, "
        "shared=None, shared_capacity=None, balance='peak_ewma')"
    )


def described(signature):
    params = [p for p in signature.parameters.values() if p.name != "self"]
    return [(p.name, p.kind, p.default) for p in params]


def test_help_shows_the_signatures_of_the_c_methods(both_impls):
    text = pydoc.render_doc(both_impls[0].EndpointPool, renderer=pydoc.plaintext)
    assert "mark_failed(self, /, target, cooldown=None)" in text
    assert "next_many(self, k, /)" in text
    assert "max_cooldown=300.0" in text  # the class's own; 3.13 wraps it over lines


def test_any_iterable_of_endpoints_builds_a_pool(pool_impl):
    gen = (ep for ep in nodes(3))
    assert len(pool_impl.EndpointPool(gen)) == 3
    assert len(pool_impl.EndpointPool(tuple(nodes(2)))) == 2
    assert len(pool_impl.EndpointPool({ep: 1 for ep in nodes(2)})) == 2


def test_duplicate_endpoints_are_kept_as_separate_slots(pool_impl):
    ep = GonkaEndpoint("https://a", "b")
    pool = pool_impl.EndpointPool([ep, ep])
    assert len(pool) == 2


# -- the sequence protocol and the rest of the surface -------------------------


def test_pool_indexes_iterates_and_contains_like_a_tuple(make_pool):
    pool = make_pool(3)
    eps = nodes(3)
    assert list(pool) == eps
    assert pool[0] == eps[0] and pool[-1] == eps[2]
    assert pool[1:] == tuple(eps[1:])
    assert eps[1] in pool
    assert GonkaEndpoint("https://other", "x") not in pool
    assert pool.endpoints == tuple(eps)
    with pytest.raises(IndexError):
        pool[3]
    with pytest.raises(IndexError):
        pool[-4]
    with pytest.raises(TypeError):
        pool["0"]


def test_repr_lists_endpoints_and_truncates_long_pools(make_pool):
    assert repr(make_pool(1)) == ("EndpointPool([GonkaEndpoint(base_url='https://node0.example', address='addr0')])")
    long = repr(make_pool(20))
    assert long.endswith(", ... (12 more)])") and long.count("GonkaEndpoint(") == 8


def test_pickling_a_pool_raises_a_clear_type_error(make_pool):
    pool = make_pool(2)
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(pool)
    with pytest.raises(TypeError, match="cannot pickle"):
        copy.copy(pool)


def test_pool_has_no_instance_dict(make_pool):
    pool = make_pool(1)
    with pytest.raises(AttributeError):
        pool.anything = 1


def test_a_single_node_pool_always_returns_it(make_pool):
    pool = frozen(make_pool(1))
    assert picks(pool, 3) == [0, 0, 0]
    pool.mark_failed(0, 60)
    assert picks(pool, 3) == [0, 0, 0]


def test_all_in_cooldown_at_a_thousand_nodes_picks_the_earliest(make_pool):
    pool = frozen(make_pool(1000))
    for i in range(1000):
        pool.mark_failed(i, 1000 - i)
    assert pool.next_indexed()[0] == 999


# -- next_many -------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 5, 64, 65, 5000])
def test_next_many_picks_what_as_many_next_calls_would(make_pool, pool_impl, k):
    batched, single = make_pool(7), make_pool(7)
    for pool in (batched, single):
        pool.next()  # start mid-cycle
    assert batched.next_many(k) == [single.next() for _ in range(k)]
    assert batched._state() == single._state()


def test_next_many_skips_cooling_nodes_and_falls_back_like_next(make_pool):
    batched, single = frozen(make_pool(4)), frozen(make_pool(4))
    for pool in (batched, single):
        pool.mark_failed(1, 10)
        pool.mark_failed(2, math.inf)
    assert batched.next_many(9) == [single.next() for _ in range(9)]
    for pool in (batched, single):
        pool.mark_failed(0, 20)
        pool.mark_failed(3, 30)
    assert batched.next_many(3) == [single.next() for _ in range(3)] == [batched[1]] * 3
    assert batched._state() == single._state()


def test_next_many_returns_the_pools_endpoints(make_pool):
    pool = make_pool(3)
    assert pool.next_many(3) == list(pool.endpoints)


@pytest.mark.parametrize(
    ("k", "error"),
    [
        (-1, ValueError),
        (True, TypeError),
        (2.0, TypeError),
        ("3", TypeError),
        (None, TypeError),
        (2**70, OverflowError),
    ],
)
def test_next_many_rejects_a_bad_count_and_leaves_the_pool_unchanged(make_pool, k, error):
    pool = make_pool(3)
    before = pool._state()
    with pytest.raises(error):
        pool.next_many(k)
    assert pool._state() == before


def test_next_many_accepts_an_int_like_count(make_pool):
    class Three:
        def __index__(self):
            return 3

    assert len(make_pool(2).next_many(Three())) == 3
