"""The pure-Python twin of ``_pool.pyx``: the same behaviour, state and test hooks.

Used where the C extension cannot load (PyPy, a platform without a wheel, or
``GONKA_POOL_NO_EXTENSIONS=1``).  It mirrors the C core function for function so the
two can be read side by side; one lock per pool replaces the atomics, which keeps
it thread-safe with the GIL off as well.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from operator import index as _index

__all__ = ["EndpointPoolCore"]

ATOMICS = "python-lock"
STRIPES = 1  # one lock-protected cursor
NEXT_MANY_NOGIL_MIN = 0  # no GIL to release in Python code

# Deadline meaning "until cleared"; also where every addition saturates.
FOREVER = 2**64 - 1
NS_PER_S = 1_000_000_000
# Whole seconds at or above which the cooldown saturates to FOREVER; as a float,
# the nanosecond count that does.
SATURATING_SECONDS = 18_446_744_074
SATURATING_NS_DOUBLE = 18446744073709551616.0
_ZERO_TIMEDELTA = timedelta(0)


def _check_index(idx: object, n: int) -> int:
    if type(idx) is not int:
        if isinstance(idx, bool) or not hasattr(type(idx), "__index__"):
            raise TypeError(f"endpoint index must be an int, not {type(idx).__name__}")
        idx = _index(idx)
    if idx < 0 or idx >= n:
        raise IndexError(f"endpoint index {idx} out of range for a pool of {n}")
    return idx


def _whole_ns(ns: int) -> int:
    """A non-negative int of nanoseconds, saturated to FOREVER."""
    return FOREVER if ns >= FOREVER else ns


def _cooldown_ns(cooldown: object) -> int:
    """Seconds (int, float, any real number) or a timedelta -> whole nanoseconds.

    0 means "clear"; any positive cooldown is at least 1 ns; too large saturates."""
    if type(cooldown) is float:
        seconds = cooldown
    elif isinstance(cooldown, timedelta):
        if cooldown < _ZERO_TIMEDELTA:
            raise ValueError(f"cooldown must be >= 0, got {cooldown!r}")
        return _whole_ns(
            ((cooldown.days * 86400 + cooldown.seconds) * 1_000_000 + cooldown.microseconds)
            * 1000
        )
    elif isinstance(cooldown, bool):
        raise TypeError("cooldown must be a number of seconds or a datetime.timedelta, not bool")
    elif type(cooldown) is int or hasattr(type(cooldown), "__index__"):
        whole = _index(cooldown)  # type: ignore[arg-type]
        if whole < 0:
            raise ValueError(f"cooldown must be >= 0, got {whole!r}")
        if whole >= SATURATING_SECONDS:
            return FOREVER
        return whole * NS_PER_S
    elif hasattr(type(cooldown), "__float__"):
        try:
            seconds = float(cooldown)  # type: ignore[arg-type]
        except OverflowError:  # a real number beyond any float, e.g. Fraction(10**400)
            seconds = math.inf if cooldown > 0 else -math.inf  # type: ignore[operator]
    else:
        raise TypeError(
            "cooldown must be a number of seconds or a datetime.timedelta, "
            f"not {type(cooldown).__name__}"
        )
    if seconds != seconds:
        raise ValueError("cooldown must not be NaN")
    if seconds < 0:
        raise ValueError(f"cooldown must be >= 0, got {seconds!r}")
    if seconds == 0:
        return 0
    if seconds * NS_PER_S >= SATURATING_NS_DOUBLE:
        return FOREVER
    return math.ceil(seconds * NS_PER_S)


def _check_count(k: object) -> int:
    if type(k) is not int:
        if isinstance(k, bool) or not hasattr(type(k), "__index__"):
            raise TypeError(f"count must be an int, not {type(k).__name__}")
        k = _index(k)  # type: ignore[arg-type]
    if k < 0:
        raise ValueError(f"count must be >= 0, got {k!r}")
    if k > 1 << 40:
        raise OverflowError(f"count {k!r} is too large")
    return k


def _check_sequence_index(key: object, n: int) -> int:
    """Sequence indexing: negative counts from the end, as for a tuple."""
    if isinstance(key, bool) or not hasattr(type(key), "__index__"):
        raise TypeError(f"pool indices must be integers or slices, not {type(key).__name__}")
    key = _index(key)  # type: ignore[arg-type]
    if key < 0:
        key += n
    if key < 0 or key >= n:
        raise IndexError("pool index out of range")
    return key


class EndpointPoolCore:
    """Round-robin selection with fail-skip cooldowns (the pure-Python twin).

    Not used directly: ``gonka_pool.EndpointPool`` subclasses it and validates the
    endpoints.  ``nodes`` is a non-empty tuple of the objects that selection returns.
    """

    __slots__ = ("_nodes", "_n", "_lock", "_cursor", "_cooling", "_test_now", "_failed_until")

    def __new__(cls, nodes: tuple):
        if type(nodes) is not tuple:
            raise TypeError(f"nodes must be a tuple, not {type(nodes).__name__}")
        if not nodes:
            raise ValueError("EndpointPool requires at least one node")
        self = object.__new__(cls)
        self._nodes = nodes
        self._n = len(nodes)
        self._lock = threading.Lock()
        self._cursor = 0  # one stripe, as in the C core
        self._cooling = 0  # non-zero deadlines (+ marks in flight, always 0 here)
        self._test_now = -1  # test clock in ns, or -1 for the real clock
        self._failed_until = [0] * self._n
        return self

    def _now(self) -> int:
        fake = self._test_now
        return fake if fake >= 0 else time.monotonic_ns()

    def _earliest(self) -> int:
        """Index of the smallest deadline; the first one wins a tie."""
        failed_until = self._failed_until
        return failed_until.index(min(failed_until))

    def _select_at(self, now: int) -> int:
        """The seed's selection: at most n round-robin candidates, skip cooling
        nodes, else the node whose cooldown ends first.  Call with the lock held."""
        n = self._n
        failed_until = self._failed_until
        for _ in range(n):
            idx = self._cursor % n
            self._cursor += 1
            deadline = failed_until[idx]
            if deadline <= now:
                if deadline != 0:
                    failed_until[idx] = 0
                    self._cooling -= 1
                return idx
        return self._earliest()

    def _select(self) -> int:
        """Lock held.  One cursor: under one lock a stripe per thread gains nothing."""
        if self._cooling <= 0:
            idx = self._cursor % self._n
            self._cursor += 1
            return idx
        return self._select_at(self._now())

    def _select_batch(self, k: int) -> list:
        """k selections with at most one clock read.  Lock held."""
        n = self._n
        if self._cooling <= 0:
            position = self._cursor
            self._cursor += k
            return [(position + i) % n for i in range(k)]
        now = self._now()
        return [self._select_at(now) for _ in range(k)]

    def _mark(self, idx: int, cooldown_ns: int) -> None:
        """Replace node idx's deadline with now + cooldown (0 clears it).  Lock held."""
        failed_until = self._failed_until
        if cooldown_ns == 0:
            if failed_until[idx] != 0:
                self._cooling -= 1
            failed_until[idx] = 0
            return
        if cooldown_ns == FOREVER:
            deadline = FOREVER
        else:
            deadline = min(self._now() + cooldown_ns, FOREVER)
        if failed_until[idx] == 0:
            self._cooling += 1
        failed_until[idx] = deadline

    def next(self):
        """Return the next healthy endpoint in round-robin order.

        Nodes inside their cooldown are skipped; when every node is cooling down,
        the one whose cooldown ends first is returned.  Never raises.
        """
        with self._lock:
            return self._nodes[self._select()]

    def next_indexed(self):
        """Like ``next()``, also returning the node's index for ``mark_failed``."""
        with self._lock:
            idx = self._select()
        return (idx, self._nodes[idx])

    def next_many(self, k) -> list:
        """``k`` selections in one call, as ``[pool.next() for _ in range(k)]`` would
        make them on this thread, with one clock read at most."""
        count = _check_count(k)
        with self._lock:
            picks = self._select_batch(count)
        nodes = self._nodes
        return [nodes[i] for i in picks]

    def mark_failed(self, idx, cooldown) -> None:
        """Skip node ``idx`` for ``cooldown`` (seconds or a timedelta); 0 clears it.

        Replaces any earlier deadline.  ``math.inf`` (or anything past ~584 years)
        means "until cleared".  Raises IndexError, TypeError or ValueError for bad
        arguments, leaving the pool unchanged.
        """
        i = _check_index(idx, self._n)
        cooldown_ns = _cooldown_ns(cooldown)
        with self._lock:
            self._mark(i, cooldown_ns)

    def is_empty(self) -> bool:
        """Always False: a pool cannot be built without endpoints."""
        return False

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, key):
        if type(key) is slice:
            return self._nodes[key]
        return self._nodes[_check_sequence_index(key, self._n)]

    def __iter__(self):
        return iter(self._nodes)

    def __contains__(self, item) -> bool:
        return item in self._nodes

    @property
    def endpoints(self) -> tuple:
        """The endpoints, in pool order, as a tuple."""
        return self._nodes

    # -- test and benchmark hooks (not public API) ---------------------------

    def _set_clock(self, now_ns) -> None:
        """Freeze the pool's clock at ``now_ns`` (>= 0), or resume the real one (None)."""
        with self._lock:
            self._test_now = -1 if now_ns is None else now_ns

    def _state(self):
        """(cursor, cooling, deadlines) exactly as stored, for the twin comparison."""
        with self._lock:
            return (self._cursor, self._cooling, list(self._failed_until))

    def _next_releasing_gil(self):
        """Same as ``next()`` (there is no GIL to release in Python code)."""
        return self.next()

    def _select_loop(self, k: int, release_gil: bool = True) -> list:
        """k selections, returning how often each node was chosen."""
        counts = [0] * self._n
        lock = self._lock
        for _ in range(k):
            with lock:
                counts[self._select()] += 1
        return counts

    def __reduce__(self):
        raise TypeError(
            f"cannot pickle {type(self).__name__!r} object: rebuild it from "
            "pool.endpoints instead (cooldown state is per process)"
        )
