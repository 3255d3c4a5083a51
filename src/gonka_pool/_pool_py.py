"""The pure-Python twin of ``_pool.pyx``: the same behaviour, state and test hooks.

Used where the C extension cannot load (PyPy, a platform without a wheel, or
``GONKA_POOL_NO_EXTENSIONS=1``).  It mirrors the C core function for function so the
two can be read side by side; one lock per pool replaces the atomics, which keeps
it thread-safe with the GIL off as well.
"""

from __future__ import annotations

import inspect
import math
import threading
from typing import Any

from . import _failover
from ._balance import (
    BALANCE_POLICIES,
    LOAD_COOLDOWN_NS,
    PANIC_RETRY_NS,
    PANIC_SHARE,
    PEAK_CLIP,
    PROBE_NS,
    SCAN_MAX,
    STALE_SHIFT,
    UNKNOWN_US,
    answered_ewma,
    check_balance,
    cost,
    jitter_ns,
    learn_limit,
    mix64,
    next_ewma,
    next_floor,
    overloaded_limit,
)
from ._clock import CLOCK, monotonic_ns
from ._convert import FOREVER, cooldown_ns, count, endpoint_index, index_error, integer, is_index_target, sequence_index
from ._endpoint import GonkaEndpoint
from ._pool_common import (
    constructor_arguments,
    from_env,
    pool_repr,
    prepare,
    prepare_update,
    restart_at_random_after_fork,
)
from ._report import EndpointState, FailureReport, failure_report, log_cooldown
from ._schedule import SchedulePlan, random_offset, schedule_table_py

__all__ = ["EndpointPool", "Lease"]

ATOMICS = "python-lock"
STRIPES = 1  # one lock-protected cursor
FREE_THREADED = False  # nothing here depends on it
NEXT_MANY_NOGIL_MIN = 0  # no GIL to release in Python code

# mark_failed's cooldown when the pool's backoff policy decides.
POLICY = 2**64 - 2
# What update() carries over per node beside the health, as _swap does.
_LOAD_FIELDS = ("in_flight", "ewma_us", "stamp_ns", "floor_us", "limit", "last_event_ns", "failed_at_ns", "probe_ns")
# What a pick finds a node to be (_availability), in order of preference.
_AVAILABLE, _PROBE, _RETRY, _BLOCKED = range(4)


def _best(seen: list, worst: int) -> tuple[int, int]:
    """(index, state) of the least cost among ``seen`` (index, cost, state) whose
    state is at most ``worst``, the first among equals; (-1, 0) if none."""
    best, best_cost, best_state = -1, 0.0, 0
    for i, node_cost, state in seen:
        if state <= worst and (best < 0 or node_cost < best_cost):
            best, best_cost, best_state = i, node_cost, state
    return best, best_state


# How a lease settles.
_RELEASE, _SUCCESS, _FAILURE, _OVERLOADED, _ANSWERED = range(5)


def _check_index(idx: int, n: int) -> int:
    if idx < 0 or idx >= n:
        raise index_error(idx, n)
    return idx


def _as_u64(value: object, what: str) -> int:
    """An int that fits the C core's uint64_t, as Cython converts it."""
    value = integer(value, what)
    if not 0 <= value < 2**64:
        raise OverflowError(f"{what} {value!r} does not fit 64 unsigned bits")
    return value


def _table(plan, n: int) -> list[int]:
    """``plan``'s table, after the checks the C core makes on it."""
    slots = tuple(plan[0])
    if len(slots) != n:
        raise ValueError(f"schedule plan for {len(slots)} nodes, not {n}")
    if any(type(c) is not int or not 1 <= c < 2**32 for c in slots) or sum(slots) >= 2**32:
        raise ValueError("schedule slots must be ints from 1, summing below 2**32")
    return schedule_table_py(SchedulePlan(slots, bool(plan[1])))


class _Members:
    """One membership: nodes, weights, schedule and the nodes' state."""

    __slots__ = (
        "nodes",
        "weights",
        "schedule",
        "n",
        "period",
        "cooling",
        "failed_until",
        "consecutive",
        "total",
        "positions",
        "generation",
        "capacity",
        "in_flight",
        "ewma_us",
        "stamp_ns",
        "floor_us",
        "limit",
        "inverse",
        "last_event_ns",
        "failed_at_ns",
        "probe_ns",
        "rank",
    )

    def __init__(self, nodes: tuple, weights, schedule) -> None:
        if type(nodes) is not tuple:
            raise TypeError(f"nodes must be a tuple, not {type(nodes).__name__}")
        if not nodes:
            raise ValueError("EndpointPool requires at least one node")
        self.nodes = nodes
        self.weights = weights  # None when all equal
        # The node of each slot, laid out from the plan (``_schedule.SchedulePlan``)
        # as the C core lays it out in C.
        self.schedule = table = None if schedule is None else _table(schedule, len(nodes))
        self.n = len(nodes)
        self.period = self.n if table is None else len(table)
        self.cooling = 0  # non-zero deadlines (+ marks in flight, always 0 here)
        self.failed_until = [0] * self.n
        self.consecutive = [0] * self.n
        self.total = [0] * self.n
        # Load-aware picks (``_balance``): per node, as the C core keeps them.
        self.generation = 0  # update() numbers each membership: a lease knows its own
        # 1 / weight: a pick multiplies by it, as the C core does
        self.capacity = None if weights is None else [1.0 / float(w) for w in weights]
        self.in_flight = [0] * self.n
        self.ewma_us = [0] * self.n
        self.stamp_ns = [0] * self.n
        self.floor_us = [0] * self.n
        self.limit = [1] * self.n
        self.inverse = [1.0] * self.n  # 1 / limit, kept beside it as the C core keeps it
        self.last_event_ns = [0] * self.n
        self.failed_at_ns = [0] * self.n
        self.probe_ns = [0] * self.n
        positions: dict[GonkaEndpoint, tuple[int, ...]] = {}
        self.rank = [0] * self.n  # which copy of its endpoint each node is (duplicates)
        for i, node in enumerate(nodes):
            same = positions.get(node, ())
            self.rank[i] = len(same)
            positions[node] = (*same, i)
        self.positions = positions  # read-only once built

    def indices_of(self, endpoint) -> tuple:
        """Every index holding ``endpoint`` (duplicates are separate slots)."""
        return self.positions.get(endpoint, ())

    def node_at(self, position: int) -> int:
        if self.schedule is None:
            return position % self.n
        return self.schedule[position % self.period]

    def earliest(self) -> int:
        """Index of the smallest deadline; the first one wins a tie."""
        return self.failed_until.index(min(self.failed_until))

    def healthy_at(self, idx: int, now: int) -> bool:
        deadline = self.failed_until[idx]
        if deadline > now:
            return False
        if deadline != 0:
            self.failed_until[idx] = 0
            self.cooling -= 1
        return True


_NO_SHARED = (
    "shared= needs gonka_pool's C core (IMPLEMENTATION == 'c'); this is the pure-Python "
    "twin, which keeps node health per process"
)


class EndpointPool:
    """Pool of endpoints that skips nodes in their failure cooldown: ``next()`` in
    round-robin order, ``acquire()`` by load (``balance=``).

    ``EndpointPool(endpoints, *, weights=None, start="random", base_cooldown=30.0,
    max_cooldown=300.0, shared=None, shared_capacity=None, balance="peak_ewma")`` takes any
    non-empty iterable of ``GonkaEndpoint``.  Safe
    to share across threads, with or without the GIL: one lock per pool guards
    everything, and selection takes it once.
    """

    __slots__ = (
        "_members",
        "_lock",
        "_cursor",
        "_cursor_origin",
        "_test_now",
        "_base_ns",
        "_max_ns",
        "_observer",
        "_policy",
        "_orphans",
        "_panic_ns",
        "__weakref__",  # start="random": the fork hook's registry holds it weakly
    )
    # For type checkers, which do not follow __new__'s object.__new__(cls).
    _members: _Members
    _lock: threading.Lock
    _cursor: int
    _cursor_origin: int
    _test_now: int
    _base_ns: int
    _max_ns: int
    _observer: Any
    _policy: int
    _orphans: list
    _panic_ns: int

    def __new__(cls, *args: object, **kwargs: object) -> EndpointPool:
        endpoints, weights, start, base_cooldown, max_cooldown, shared, shared_capacity, balance = (
            constructor_arguments(cls.__name__, args, kwargs)
        )
        policy = check_balance(balance)
        base_ns, max_ns = cooldown_ns(base_cooldown), cooldown_ns(max_cooldown)
        if base_ns == 0 or max_ns < base_ns:
            raise ValueError(f"need 0 < base_cooldown <= max_cooldown, got {base_cooldown!r} and {max_cooldown!r}")
        nodes, weights, schedule, start = prepare(endpoints, weights, start)
        if shared is not None:
            raise NotImplementedError(_NO_SHARED)
        if shared_capacity is not None:
            raise TypeError("shared_capacity= sizes a shared segment: pass shared= too")
        self = object.__new__(cls)
        self._members = _Members(nodes, weights, schedule)
        self._lock = threading.Lock()
        # One cursor: under one lock a stripe per thread would gain nothing.
        self._cursor = random_offset() if start is None else start
        self._cursor_origin = self._cursor
        self._test_now = -1  # test clock in ns, or -1 for the real clock
        self._base_ns = base_ns
        self._max_ns = max_ns
        self._observer = None
        self._policy = policy
        # Leases dropped unsettled (Lease.__del__ takes no lock: a collection may run
        # it while this thread holds the pool's); released by the next locked call.
        self._orphans = []
        self._panic_ns = 0  # 1 + when a pick last found more than half cooling, or 0
        if start is None:
            restart_at_random_after_fork(self)
        return self

    # What inspect and help() show instead of (*args, **kwargs), as the first line
    # of the C core's docstring does for it.
    def _signature(
        cls,
        endpoints,
        *,
        weights=None,
        start="random",
        base_cooldown=30.0,
        max_cooldown=300.0,
        shared=None,
        shared_capacity=None,
        balance="peak_ewma",
    ):  # pragma: no cover - never called, only inspected
        pass

    __new__.__signature__ = inspect.signature(_signature)  # type: ignore[attr-defined]
    del _signature

    def _now_tick(self) -> tuple[int, int]:
        """Now, and what a deadline set now adds: the real clock's tick (0 for a
        precise clock), or 0 on the test clock."""
        fake = self._test_now
        return (fake, 0) if fake >= 0 else (monotonic_ns(), CLOCK[1])

    def _now(self) -> int:
        fake = self._test_now
        return fake if fake >= 0 else monotonic_ns()

    # -- selection (lock held) ---------------------------------------------------

    def _select_at(self, m: _Members, now: int) -> int:
        """The seed's selection: at most n candidates in schedule order, skip
        cooling nodes, else the node whose cooldown ends first."""
        position = 0
        for _ in range(m.n):
            position = self._cursor
            self._cursor += 1
            idx = m.node_at(position)
            if m.healthy_at(idx, now):
                return idx
        if m.schedule is not None:
            for i in range(m.n):
                idx = (position + i) % m.n
                if m.healthy_at(idx, now):
                    return idx
        return m.earliest()

    def _select(self, m: _Members) -> int:
        if m.cooling <= 0:
            position = self._cursor
            self._cursor += 1
            return m.node_at(position)
        return self._select_at(m, self._now())

    def _select_batch(self, m: _Members, k: int) -> list:
        """k selections with at most one clock read."""
        if m.cooling <= 0:
            position = self._cursor
            self._cursor += k
            return [m.node_at(position + i) for i in range(k)]
        now = self._now()
        return [self._select_at(m, now) for _ in range(k)]

    # -- failures (lock held) ----------------------------------------------------

    def _backoff_ns(self, level: int) -> int:
        shift = level - 1
        if shift >= 63 or self._base_ns > (self._max_ns >> shift):
            return self._max_ns
        return self._base_ns << shift

    def _fail(self, m: _Members, idx: int, cooldown_ns: int, floor_ns: int = 0) -> tuple[int, int]:
        """Record a failure of node idx; return (cooldown, level) if it entered a
        cooldown, else (0, 0).  See _pool.pyx's _fail for the rules."""
        if cooldown_ns == 0:
            if m.failed_until[idx] != 0:
                m.cooling -= 1
            m.failed_until[idx] = 0
            return (0, 0)
        now, tick = self._now_tick()
        m.failed_at_ns[idx] = now
        old = m.failed_until[idx]
        cooling_now = old > now
        level = m.consecutive[idx]
        if not cooling_now:
            level += 1
        elif level == 0:
            level = 1
        ns = self._backoff_ns(level) if cooldown_ns == POLICY else cooldown_ns
        if ns < floor_ns:
            ns = floor_ns
        deadline = FOREVER if ns >= FOREVER - now - tick else now + tick + ns
        if not (cooling_now and old >= deadline):
            if old == 0:
                m.cooling += 1
            m.failed_until[idx] = deadline
        m.total[idx] += 1
        if cooling_now:
            return (0, 0)
        m.consecutive[idx] += 1
        return (ns, level)

    # -- load-aware picks (lock held; the rules are _balance's) -----------------

    def _cost(self, m: _Members, i: int, now: int) -> float:
        """Node i's cost, ``latency x (in_flight + 1) / capacity``, in doubles as
        the C core computes it."""
        in_flight = m.in_flight[i]
        latency = cost(self._policy, m.ewma_us[i], m.stamp_ns[i], in_flight, m.last_event_ns[i], now)
        if m.capacity is not None:
            inverse = m.capacity[i]
        elif self._policy == 0:
            inverse = m.inverse[i]
        else:
            inverse = 1.0
        return float(latency) * float(in_flight + 1) * inverse

    def _availability(self, m: _Members, i: int, now: int) -> int:
        """AVAILABLE; PROBE: a probe must claim it (its cooldown ended, or began in
        a correlated failure and PANIC_RETRY_NS has passed since it last failed);
        RETRY: cooling, but a candidate (with a claim) when more than half cool;
        BLOCKED."""
        deadline = m.failed_until[i]
        if deadline == 0:
            return _AVAILABLE
        if m.probe_ns[i] > now:
            return _BLOCKED
        if deadline <= now:
            return _PROBE
        failed_at = m.failed_at_ns[i]
        if now >= failed_at and now - failed_at >= PANIC_RETRY_NS:
            return _PROBE if failed_at < self._panic_ns else _RETRY
        return _BLOCKED

    def _claim(self, m: _Members, i: int, state: int, now: int) -> int:
        if state == _AVAILABLE:
            return 0
        claim = now + PROBE_NS
        m.probe_ns[i] = claim
        return claim

    def _pick(self, m: _Members, now: int) -> tuple[int, int]:
        """(index, probe claim or 0) by the pool's cost, as _pool.pyx's _pick."""
        n = m.n
        check = m.cooling > 0
        if n <= SCAN_MAX and not check:
            # Every node available, none to probe, no panic: the least cost, first
            # among equals, computed inline (the twin's hot path).
            position = self._cursor
            self._cursor += 1
            start = position % n
            policy = self._policy
            in_flight, ewma, stamp, last_event = m.in_flight, m.ewma_us, m.stamp_ns, m.last_event_ns
            inverses = m.capacity
            if inverses is None:
                inverses = m.inverse if policy == 0 else [1.0] * n
            best = start
            best_cost = math.inf
            for i in (*range(start, n), *range(start)):
                q = in_flight[i]
                if policy == 1:
                    latency = 1
                else:
                    # _balance.cost(0, ...), inline: a call per node was a third of
                    # the twin's pick (cProfile).
                    latency = ewma[i]
                    if latency == 0:
                        latency = 0 if q == 0 else UNKNOWN_US
                    elif q == 0:
                        if now > stamp[i]:
                            halvings = (now - stamp[i]) >> STALE_SHIFT
                            latency = 0 if halvings >= 63 else latency >> halvings
                    elif now > last_event[i]:
                        age_us = (now - last_event[i]) // 1000
                        if age_us > latency:
                            clip = latency * PEAK_CLIP
                            latency = age_us if age_us < clip else clip
                node_cost = float(latency) * float(q + 1) * inverses[i]
                if node_cost < best_cost:
                    best, best_cost = i, node_cost
            return best, 0
        if n <= SCAN_MAX:
            # The C core scans again when another thread wins a probe claim; under
            # the lock a claim always succeeds, so one scan is all there is.
            position = self._cursor
            self._cursor += 1
            seen = []
            blocked = 0
            every = -1
            every_cost = 0.0
            for k in range(n):
                i = (position + k) % n
                node_cost = self._cost(m, i, now)
                if every < 0 or node_cost < every_cost:
                    every, every_cost = i, node_cost
                state = self._availability(m, i, now) if check else _AVAILABLE
                blocked += state >= _RETRY
                seen.append((i, node_cost, state))
            panic = blocked * PANIC_SHARE[1] > n * PANIC_SHARE[0]
            if panic:
                self._panic_ns = now + 1
            best, state = _best(seen, _RETRY if panic else _PROBE)
            if best < 0:
                return every, 0
            return best, self._claim(m, best, state, now)
        every = -1
        every_cost = 0.0
        drawn = []
        for _ in range(4):
            position = self._cursor
            self._cursor += 1
            h = mix64(position & 0xFFFFFFFFFFFFFFFF)
            a = (h >> 32) % n
            b = (a + 1 + (h & 0xFFFFFFFF) % (n - 1)) % n
            pair = []
            for i in (a, b):
                node_cost = self._cost(m, i, now)
                if every < 0 or node_cost < every_cost:
                    every, every_cost = i, node_cost
                pair.append((i, node_cost, self._availability(m, i, now) if check else _AVAILABLE))
            best, state = _best(pair, _PROBE)
            if best >= 0:
                return best, self._claim(m, best, state, now)
            drawn += pair
        # Eight draws and none available: more than half cool, most likely.
        self._panic_ns = now + 1
        best, state = _best(drawn, _RETRY)
        if best < 0:
            return every, 0
        return best, self._claim(m, best, state, now)

    def _drain_orphans(self) -> None:
        """Release the leases dropped unsettled since the last call (lock held)."""
        while self._orphans:
            self._settle_locked(self._orphans.pop(), _RELEASE, 0, 0)

    def _lease_index(self, m: _Members, generation: int, index: int, endpoint, rank: int) -> int:
        """Where a lease's node is in ``m`` (the membership in force): the same copy
        of its endpoint, as update() carried it over; -1 when it left."""
        if m.generation == generation:
            return index
        indices = m.indices_of(endpoint)
        return indices[rank] if rank < len(indices) else -1

    def _settle_locked(self, lease: tuple, kind: int, cooldown_ns: int, floor_ns: int) -> tuple[int, int, int, int]:
        """Settle a lease's state (lock held): (index or -1, entered, level,
        failures the success reset)."""
        generation, index, endpoint, start_ns, q, claim, rank = lease
        m = self._members
        idx = self._lease_index(m, generation, index, endpoint, rank)
        if idx < 0:
            return (-1, 0, 0, 0)
        now, tick = self._now_tick()
        if m.in_flight[idx] > 0:
            m.in_flight[idx] -= 1
        m.last_event_ns[idx] = now
        entered = level = failures = 0
        sample = (now - start_ns) // 1000 if now > start_ns else 0
        if sample == 0:
            sample = 1
        if kind == _SUCCESS:
            floor = m.floor_us[idx]
            limit = learn_limit(m.limit[idx], floor, sample, q)
            if limit != m.limit[idx]:
                m.limit[idx] = limit
                m.inverse[idx] = 1.0 / float(limit)
            m.floor_us[idx] = next_floor(floor, sample)
            # floor 0: no answer measured the node, and an estimate is answered()'s stand-in.
            m.ewma_us[idx] = next_ewma(m.ewma_us[idx] if floor else 0, m.stamp_ns[idx], sample, now)
            m.stamp_ns[idx] = now
            failures = m.consecutive[idx]
            m.consecutive[idx] = 0
            if m.failed_until[idx] != 0 and start_ns > m.failed_at_ns[idx]:
                m.failed_until[idx] = 0
                m.cooling -= 1
        elif kind == _ANSWERED:
            floor = m.floor_us[idx]
            largest = 0 if floor else max((e for i, e in enumerate(m.ewma_us) if i != idx), default=0)
            m.ewma_us[idx] = answered_ewma(m.ewma_us[idx], floor, sample, largest)
            m.stamp_ns[idx] = now
        elif kind == _FAILURE:
            entered, level = self._fail(m, idx, cooldown_ns, floor_ns)
        elif kind == _OVERLOADED:
            ns = jitter_ns(LOAD_COOLDOWN_NS, now, idx) if cooldown_ns == POLICY else cooldown_ns
            if ns:
                deadline = FOREVER if ns >= FOREVER - now - tick else now + tick + ns
                if m.failed_until[idx] < deadline:
                    if m.failed_until[idx] == 0:
                        m.cooling += 1
                    m.failed_until[idx] = deadline
            m.failed_at_ns[idx] = now
            m.limit[idx] = limit = overloaded_limit(m.limit[idx], q)
            m.inverse[idx] = 1.0 / float(limit)
            if m.capacity is not None and m.ewma_us[idx]:
                m.ewma_us[idx] = min(m.ewma_us[idx] * 2, 1 << 32)
        if claim and m.probe_ns[idx] == claim:
            m.probe_ns[idx] = 0
        return (idx, entered, level, failures)

    # -- the public surface ------------------------------------------------------

    def acquire(self) -> Lease:
        """Pick a node by the pool's ``balance`` policy and count a request to it in
        flight: settle the returned ``Lease`` with ``success()``, ``failure()``,
        ``overloaded()`` or ``release()`` (or use it in a ``with`` block, which
        releases it if it was not settled).  Never raises."""
        with self._lock:
            if self._orphans:
                self._drain_orphans()
            m = self._members
            now = self._now()
            if self._policy == 2:
                idx = self._select_at(m, now) if m.cooling > 0 else self._select(m)
                claim = 0
            else:
                idx, claim = self._pick(m, now)
            return self._lease(m, idx, now, claim)

    def _acquire_index(self, index) -> Lease:
        """A lease on node ``index`` of the membership in force, with no pick (the
        failover loop's "first untried node")."""
        key = endpoint_index(index)
        with self._lock:
            if self._orphans:
                self._drain_orphans()
            m = self._members
            return self._lease(m, _check_index(key, m.n), self._now(), 0)

    def _lease(self, m: _Members, idx: int, now: int, claim: int) -> Lease:
        q = m.in_flight[idx] + 1
        m.in_flight[idx] = q
        if q == 1:
            m.last_event_ns[idx] = now
        lease = object.__new__(Lease)
        lease._pool = self
        lease._state = (m.generation, idx, m.nodes[idx], now, q, claim, m.rank[idx])
        lease._settled = False
        return lease

    @property
    def balance(self) -> str:
        """The pick policy of ``acquire()``: "peak_ewma", "least_request" or "round_robin"."""
        return BALANCE_POLICIES[self._policy]

    def next(self):
        """Return the next healthy endpoint in round-robin order.

        Nodes inside their cooldown are skipped; when every node is cooling down,
        the one whose cooldown ends first is returned.  Never raises.
        """
        with self._lock:
            m = self._members
            return m.nodes[self._select(m)]

    def next_indexed(self):
        """Like ``next()``, also returning the node's index for ``mark_failed``."""
        with self._lock:
            m = self._members
            idx = self._select(m)
        return (idx, m.nodes[idx])

    def next_many(self, k, /) -> list:
        """``k`` selections in one call, as ``[pool.next() for _ in range(k)]`` would
        make them on this thread, with one clock read at most."""
        k = count(k)
        with self._lock:
            m = self._members
            picks = self._select_batch(m, k)
        nodes = m.nodes
        return [nodes[i] for i in picks]

    def mark_failed(self, target, cooldown=None) -> bool:
        """Skip ``target`` (an index, or a ``GonkaEndpoint`` of the pool) for
        ``cooldown`` (seconds or a timedelta; 0 clears it; None lets the pool's
        backoff policy decide).

        The deadline becomes the later of the current one and now + cooldown: a new
        mark never shortens a cooldown, except 0, which clears.  Returns True, or
        False when an endpoint target is not in the pool (the mark is ignored).
        Raises IndexError, TypeError or ValueError for bad arguments, leaving the
        pool unchanged.
        """
        return self._mark(target, POLICY if cooldown is None else cooldown_ns(cooldown), 0)

    def _mark_failed_at_least(self, target, cooldown, at_least) -> bool:
        """``mark_failed(target, cooldown)`` with a cooldown of at least ``at_least``
        seconds: the failover loop's mark when a node's ``Retry-After`` asks for
        longer than the pool's backoff may give (one failure, counted once)."""
        policy_or_ns = POLICY if cooldown is None else cooldown_ns(cooldown)
        return self._mark(target, policy_or_ns, cooldown_ns(at_least))

    def _mark(self, target, cooldown_ns: int, floor_ns: int) -> bool:
        if is_index_target(target):
            key = endpoint_index(target)  # may run Python: not under the lock
            with self._lock:
                m = self._members
                idx = _check_index(key, m.n)
                entered, level = self._fail(m, idx, cooldown_ns, floor_ns)
            if entered:
                log_cooldown(m.nodes[idx], entered, level)
                observer = self._observer
                if observer is not None:
                    observer("cooldown", m.nodes[idx], entered, level)
            return True
        endpoint = _check_endpoint(target)
        logged = []
        with self._lock:
            # The membership is read under the lock that update() swaps it under:
            # a mark overlapping an update() lands on the set in force after both.
            m = self._members
            indices = m.indices_of(endpoint)
            for idx in indices:
                entered, level = self._fail(m, idx, cooldown_ns, floor_ns)
                if entered:
                    logged.append((entered, level))
        for entered, level in logged:
            log_cooldown(target, entered, level)
            observer = self._observer
            if observer is not None:
                observer("cooldown", target, entered, level)
        return bool(indices)

    def mark_success(self, target, /) -> bool:
        """Reset ``target``'s consecutive-failure count (its backoff level); a
        cooldown already running is left to run.  Returns True, or False when an
        endpoint target is not in the pool."""
        if self._observer is not None:
            return self._mark_success_observed(target)
        if is_index_target(target):
            key = endpoint_index(target)
            with self._lock:
                m = self._members
                m.consecutive[_check_index(key, m.n)] = 0
            return True
        endpoint = _check_endpoint(target)
        with self._lock:
            m = self._members
            indices = m.indices_of(endpoint)
            for idx in indices:
                m.consecutive[idx] = 0
        return bool(indices)

    # -- membership and the request loop ------------------------------------------

    def update(self, endpoints, weights=None) -> None:
        """Replace the membership in one atomic step while other threads select.

        Nodes present before and after keep their deadlines and failure counts; a
        concurrent ``next()`` returns a node of the old set or of the new one.  An
        index from ``next_indexed()`` refers to the set in force when it was issued:
        after an update, mark by endpoint, which resolves against the current set.
        Same validation as the constructor; on error the pool is unchanged.
        """
        self._replace(*prepare_update(endpoints, weights))

    @classmethod
    def from_env(cls, var="GONKA_ENDPOINTS", **options):
        """A pool from comma-separated ``url;address`` entries in an environment
        variable, the format gonka-openai reads (see ``GonkaEndpoint.parse``); the
        keywords are the constructor's (``weights``, ``shared``...)."""
        return from_env(cls, var, options)

    @classmethod
    def from_gonka(cls, source_url, **options):
        """A pool of the Gonka network's participants, discovered from
        ``source_url`` and weighted by their weights: see
        ``gonka_pool.gonka.pool_from_gonka`` (keywords ``epoch``, ``allowlist``,
        ``timeout``, then the pool's own).  Needs ``pip install gonka-pool[gonka]``."""
        from .gonka import pool_from_gonka

        return pool_from_gonka(source_url, pool_class=cls, **options)

    def call(self, fn, **options):
        """``fn(endpoint)`` on the next healthy node, failing over while the node is
        at fault.

        Keywords: ``attempts=None`` (at most 8 nodes and 3 timeouts; or at most N),
        ``cooldown=None`` (the pool's backoff; or seconds), ``timeout_cooldown=None``
        (a timeout is an error; or seconds, never less than ``cooldown``),
        ``retry_on=()`` and ``timeout_on=()`` (exception classes added to the node's
        faults: ``OSError``, which includes ``ConnectionError`` and ``TimeoutError``,
        and the transport errors of httpx, httpx2 and aiohttp, known by name),
        ``deadline=None`` (seconds for the whole call: no attempt starts after it).
        A fault marks the node and tries the next; the last one is raised when the
        attempts run out; any other exception is raised at once and marks nothing; a
        return value marks the node a success.  An async ``fn`` is a TypeError.
        """
        return _failover.call(self, fn, **options)

    def acall(self, afn, **options):
        """``await pool.acall(afn)``: ``call``'s failover for an async ``afn(endpoint)``,
        with the same keywords; cancellation is never retried."""
        return _failover.acall(self, afn, **options)

    def __repr__(self) -> str:
        return pool_repr(self)

    def _replace(self, nodes: tuple, weights=None, schedule=None) -> None:
        """Swap in a new membership; nodes present before and after keep their
        deadlines and failure counts (k-th duplicate to k-th duplicate)."""
        new = _Members(nodes, weights, schedule)
        with self._lock:
            old = self._members
            seen: dict = {}
            for j, node in enumerate(nodes):
                k = seen.get(node, 0)
                seen[node] = k + 1
                same = old.indices_of(node)
                if k < len(same):
                    i = same[k]
                    new.consecutive[j] = old.consecutive[i]
                    new.total[j] = old.total[i]
                    new.failed_until[j] = old.failed_until[i]
                    if old.failed_until[i] != 0:
                        new.cooling += 1
                    for name in _LOAD_FIELDS:
                        getattr(new, name)[j] = getattr(old, name)[i]
                    new.inverse[j] = old.inverse[i]
            new.generation = old.generation + 1
            self._members = new

    def snapshot(self) -> tuple:
        """One ``EndpointState`` per node, in pool order."""
        with self._lock:
            if self._orphans:
                self._drain_orphans()
            m = self._members
            now = self._now()
            rows = [
                (m.failed_until[i], m.consecutive[i], m.total[i], m.in_flight[i], m.ewma_us[i], m.limit[i])
                for i in range(m.n)
            ]
        return tuple(
            EndpointState(
                m.nodes[i],
                1 if m.weights is None else m.weights[i],
                deadline <= now,
                0.0 if deadline <= now else (math.inf if deadline == FOREVER else (deadline - now) / 1e9),
                consecutive,
                total,
                in_flight,
                ewma_us / 1e6 if ewma_us else None,
                limit,
            )
            for i, (deadline, consecutive, total, in_flight, ewma_us, limit) in enumerate(rows)
        )

    @property
    def shared(self) -> None:
        """Always None: the twin keeps node health per process."""
        return None

    @staticmethod
    def unlink_shared(name: str) -> bool:
        """Segments are the C core's (``shared=``): NotImplementedError here."""
        raise NotImplementedError(_NO_SHARED)

    @property
    def endpoints(self) -> tuple:
        """The endpoints, in pool order, as a tuple."""
        return self._members.nodes

    @property
    def weights(self) -> tuple:
        """The weights, one per endpoint (all 1 when not given)."""
        m = self._members
        return (1,) * m.n if m.weights is None else m.weights

    def is_empty(self) -> bool:
        """Always False: a pool cannot be built without endpoints."""
        return False

    def __len__(self) -> int:
        return self._members.n

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, key):
        nodes = self._members.nodes
        if type(key) is slice:
            return nodes[key]
        return nodes[sequence_index(key, len(nodes))]

    def __iter__(self):
        return iter(self._members.nodes)

    def __contains__(self, item) -> bool:
        return item in self._members.nodes

    # -- test and benchmark hooks (not public API) ---------------------------

    def _set_clock(self, now_ns) -> None:
        """Freeze the pool's clock at ``now_ns`` (>= 0), or resume the real one (None)."""
        with self._lock:
            self._test_now = -1 if now_ns is None else now_ns

    def _state(self):
        """(selections so far, cooling, deadlines) exactly as stored, for the twin
        comparison."""
        with self._lock:
            m = self._members
            return ((self._cursor - self._cursor_origin) % 2**64, m.cooling, list(m.failed_until))

    def _load_state(self) -> list:
        """Per node (in_flight, ewma_us, stamp_ns, floor_us, limit, last_event_ns,
        failed_at_ns, probe_ns) exactly as stored, for the twin comparison."""
        with self._lock:
            if self._orphans:
                self._drain_orphans()
            m = self._members
            return [tuple(getattr(m, name)[i] for name in _LOAD_FIELDS) for i in range(m.n)]

    def _check_consistency(self) -> None:
        """Raise AssertionError naming the first invariant the state breaks, else
        return None: the C core's checks, less those of its atomics (marks in
        flight, retired memberships), which the lock makes moot here."""
        with self._lock:
            m = self._members
            for i in range(m.n):
                consecutive, total = m.consecutive[i], m.total[i]
                if consecutive < 0 or total < 0:
                    raise AssertionError(f"node {i}'s failure counts went below zero")
                if consecutive > total:  # _fail raises both; mark_success resets the first
                    raise AssertionError(
                        f"node {i} has {consecutive} consecutive failures, more than its {total} in all"
                    )
                if m.limit[i] < 1:
                    raise AssertionError(f"node {i}'s concurrency limit is {m.limit[i]}, below 1")
                if m.inverse[i] != 1.0 / float(m.limit[i]):
                    raise AssertionError(f"node {i}'s inverse limit {m.inverse[i]} is not 1 / {m.limit[i]}")
                if m.in_flight[i] < 0:
                    raise AssertionError(f"node {i}'s in-flight count went below zero")
                if m.ewma_us[i] > 1 << 32 or m.floor_us[i] > 1 << 32:
                    raise AssertionError(f"node {i}'s latency estimates exceed 2**32 us")
            non_zero = sum(deadline != 0 for deadline in m.failed_until)
            if m.cooling != non_zero:
                raise AssertionError(f"cooling is {m.cooling}, but {non_zero} deadlines are non-zero")
            if m.schedule is None:
                if m.period != m.n:
                    raise AssertionError(f"an unweighted pool of {m.n} nodes has a period of {m.period}")
            else:
                for slot, node in enumerate(m.schedule):
                    if not 0 <= node < m.n:
                        raise AssertionError(f"schedule slot {slot} names node {node} of a pool of {m.n}")

    def _add_to_cooling(self, delta: int) -> None:
        """Add ``delta`` to ``cooling`` and to nothing else, breaking the invariant
        (test hook for ``_check_consistency``)."""
        with self._lock:
            self._members.cooling += delta

    def _restart_at_random(self) -> None:
        """Move the cursor to a fresh random position, as ``start="random"`` placed it
        at construction; the selections counted so far (``_state()``) stay as they
        were.  The fork hook's, in the child (``_pool_common``): it takes no lock, as
        a lock held by a thread of the parent's at the fork is never released there."""
        offset = random_offset()
        self._cursor_origin += offset - self._cursor
        self._cursor = offset

    def _next_releasing_gil(self):
        """Same as ``next()`` (there is no GIL to release in Python code)."""
        return self.next()

    def _select_loop(self, k: int, release_gil: bool = True) -> list:
        """k selections, returning how often each node was chosen."""
        m = self._members
        counts = [0] * m.n
        lock = self._lock
        for _ in range(k):
            with lock:
                counts[self._select(m)] += 1
        return counts

    def __reduce__(self):
        raise TypeError(
            f"cannot pickle {type(self).__name__!r} object: rebuild it from "
            "pool.endpoints instead (cooldown state is per process)"
        )

    # -- health shared with other processes (gonka_pool.redis; not public API) ------

    def _set_observer(self, fn) -> None:
        """Call ``fn(event, endpoint, remaining_ns, failures)`` after this process's
        own marks, outside the lock, never from selection: ``"cooldown"`` when a mark
        enters a cooldown (the log line's moment and figures), ``"success"`` (0, 0)
        when ``mark_success`` resets a non-zero consecutive count, ``"cleared"`` (0, 0)
        when ``_readmit`` ends a cooldown "until cleared".  None stops it.
        ``fn`` must not raise: it runs inside ``mark_failed``."""
        if fn is not None and not callable(fn):
            raise TypeError(f"observer must be callable or None, not {type(fn).__name__}")
        self._observer = fn

    def _mark_success_observed(self, target) -> bool:
        """``mark_success`` while an observer is set: it hears of a reset that found
        a non-zero consecutive count."""
        observer = self._observer
        if is_index_target(target):
            key = endpoint_index(target)
            with self._lock:
                m = self._members
                idx = _check_index(key, m.n)
                failures = m.consecutive[idx]
                m.consecutive[idx] = 0
            endpoint = m.nodes[idx]
        else:
            endpoint = _check_endpoint(target)
            with self._lock:
                m = self._members
                indices = m.indices_of(endpoint)
                failures = 0
                for idx in indices:
                    failures |= m.consecutive[idx]
                    m.consecutive[idx] = 0
            if not indices:
                return False
        if failures and observer is not None:
            observer("success", endpoint, 0, 0)
        return True

    def _apply_remote(self, endpoint, remaining_ns, failures) -> bool:
        """Another process's cooldown, by the local rules: the deadline becomes at
        least now + ``remaining_ns`` (never shortened) and the consecutive count at
        least ``failures``; ``total`` counts this process's failures only, so it is
        left alone.  ``remaining_ns`` is capped at this pool's ``max_cooldown``: a
        remote event never cools a node longer than this pool's own backoff could.
        No observer call, no log line.  False when ``endpoint`` is not in the pool."""
        endpoint = _check_endpoint(endpoint)
        remaining = min(_as_u64(remaining_ns, "remaining_ns"), self._max_ns)
        count = _as_u64(failures, "failures")
        with self._lock:
            m = self._members
            indices = m.indices_of(endpoint)
            now, tick = self._now_tick()
            deadline = FOREVER if remaining >= FOREVER - now - tick else now + tick + remaining
            for idx in indices:
                if remaining:
                    m.failed_at_ns[idx] = now
                if remaining and m.failed_until[idx] < deadline:
                    if m.failed_until[idx] == 0:
                        m.cooling += 1
                    m.failed_until[idx] = deadline
                if m.consecutive[idx] < count:
                    m.consecutive[idx] = count
        return bool(indices)

    def _apply_remote_success(self, endpoint) -> bool:
        """Another process's ``mark_success``: the consecutive count is reset, a
        running cooldown is left to run.  No observer call.  False when ``endpoint``
        is not in the pool."""
        endpoint = _check_endpoint(endpoint)
        with self._lock:
            m = self._members
            indices = m.indices_of(endpoint)
            for idx in indices:
                m.consecutive[idx] = 0
        return bool(indices)

    def _readmit(self, endpoint) -> bool:
        """Discovery lists ``endpoint`` again (``gonka.refresh``): a cooldown "until
        cleared" ends now, with its backoff level; any other cooldown runs on.  The
        observer hears ``("cleared", endpoint, 0, 0)`` when something was cleared
        (which the return value says)."""
        endpoint = _check_endpoint(endpoint)
        cleared = False
        with self._lock:
            m = self._members
            for idx in m.indices_of(endpoint):
                if m.failed_until[idx] == FOREVER:
                    m.failed_until[idx] = 0
                    m.cooling -= 1
                    m.consecutive[idx] = 0
                    cleared = True
        observer = self._observer
        if cleared and observer is not None:
            observer("cleared", endpoint, 0, 0)
        return cleared


class Lease:
    """One request's hold on a node, from ``pool.acquire()``: settle it once with
    ``success()``, ``failure()``, ``overloaded()`` or ``release()``, or use it as a
    context manager, which releases it unless settled.  Any thread may settle it."""

    __slots__ = ("_pool", "_settled", "_state")
    # (membership generation, index, endpoint, start ns, in flight at the pick, probe
    # claim, which copy of its endpoint the node was)
    _state: tuple
    _pool: EndpointPool
    _settled: bool

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError("Lease objects come from pool.acquire()")

    @property
    def index(self) -> int:
        """The node's index in the membership in force when it was acquired."""
        index: int = self._state[1]
        return index

    @property
    def endpoint(self):
        """The node."""
        return self._state[2]

    @property
    def settled(self) -> bool:
        """Whether success, failure, overloaded or release has settled it."""
        return self._settled

    def success(self) -> None:
        """The node answered: record the latency since ``acquire()``, reset its
        backoff level, and end a running cooldown if this request started after the
        node's last failure."""
        self._settle(_SUCCESS, 0, 0, None)

    def failure(self, cooldown=None, reason=None, *, retry_after=None) -> bool:
        """The node failed: mark it as ``mark_failed(endpoint, cooldown)`` does, for
        at least ``retry_after`` seconds when given; ``reason`` goes into the log
        line.  True when this mark started a cooldown."""
        cooldown_ns_ = POLICY if cooldown is None else cooldown_ns(cooldown)
        floor_ns = 0 if retry_after is None else cooldown_ns(retry_after)
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str or None, not {type(reason).__name__}")
        return self._settle(_FAILURE, cooldown_ns_, floor_ns, reason)

    def overloaded(self, cooldown=None) -> None:
        """The node refused for load (a 429 without ``Retry-After``): leave it alone
        for ``cooldown`` seconds (by default 0.25-0.75 s, jittered) without raising
        its backoff level, and lower what it is trusted to take at once."""
        self._settle(_OVERLOADED, POLICY if cooldown is None else cooldown_ns(cooldown), 0, None)

    def answered(self) -> None:
        """The node answered, but the answer says nothing of its health or speed:
        its latency may raise the node's estimate, never lower it (a node never
        measured takes the other nodes' largest); backoff, failure counts and
        cooldown are left as they are."""
        self._settle(_ANSWERED, 0, 0, None)

    def release(self) -> None:
        """Settle with neither outcome (the request was not the node's to judge).
        A no-op on a settled lease."""
        self._settle(_RELEASE, 0, 0, None)

    def _settle(self, kind: int, cooldown_ns_: int, floor_ns: int, reason) -> bool:
        pool = self._pool
        with pool._lock:
            if self._settled:
                if kind == _RELEASE:
                    return False
                raise RuntimeError("lease already settled")
            self._settled = True
            if pool._orphans:
                pool._drain_orphans()
            _, entered, level, failures = pool._settle_locked(self._state, kind, cooldown_ns_, floor_ns)
        endpoint = self._state[2]
        observer = pool._observer
        if entered:
            token = None if reason is None else failure_report.set(FailureReport(reason))
            try:
                log_cooldown(endpoint, entered, level)
            finally:
                if token is not None:
                    failure_report.reset(token)
            if observer is not None:
                observer("cooldown", endpoint, entered, level)
        elif kind == _SUCCESS and failures and observer is not None:
            observer("success", endpoint, 0, 0)
        return bool(entered)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._settled:
            self.release()

    def __del__(self) -> None:
        # No lock here: a collection may run this while this thread holds the pool's.
        if not getattr(self, "_settled", True):
            self._settled = True
            self._pool._orphans.append(self._state)

    def __repr__(self) -> str:
        state = "settled" if self._settled else "in flight"
        return f"<Lease {self._state[1]} {self._state[2]!r} ({state})>"

    def __reduce__(self):
        raise TypeError("cannot pickle 'Lease' object: it holds a request in flight in this process")


def _check_endpoint(target: object) -> object:
    if not isinstance(target, GonkaEndpoint):
        raise TypeError(f"target must be an endpoint index (int) or a GonkaEndpoint, not {type(target).__name__}")
    return target
