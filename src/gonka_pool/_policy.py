"""What both cores share and need no speed: weights, the smooth schedule, the state
record, the cooldown log line.  Runs at construction and on the failure path only."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from math import gcd
from operator import index
from typing import NamedTuple

from ._endpoint import GonkaEndpoint

__all__ = [
    "CLOCK",
    "CLOCK_MAX_TICK_NS",
    "EndpointState",
    "FailureReport",
    "MAX_PERIOD",
    "check_start",
    "check_weights",
    "failure_report",
    "log_cooldown",
    "monotonic_ns",
    "smooth_schedule",
]

logger = logging.getLogger("gonka_pool")
# A library logs; the application decides where it goes (no lastResort stderr).
logger.addHandler(logging.NullHandler())

# Longest schedule (sum of the weights divided by their gcd) a pool precomputes,
# and the most work (slots x nodes) building it may take.  Weights beyond either
# are refused rather than silently rounded.
MAX_PERIOD = 1 << 20
MAX_SCHEDULE_WORK = 1 << 24

# Deadlines are read on CLOCK_MONOTONIC_COARSE on Linux (CLOCK_MONOTONIC as of the
# last timer tick, a fraction of a precise read's cost: benchmarks/clock_cost.c),
# when its tick is at most this long (HZ=100); else the precise clock.  A real-clock deadline adds one tick, so no node comes back a tick early.
CLOCK_MAX_TICK_NS = 10_000_000
_CLOCK_MONOTONIC_COARSE = 6  # Linux's clockid_t; the time module does not name it


def _pick_clock() -> tuple[str, int]:
    """(clock name, tick in ns or 0 for the precise clock): the C core's choice."""
    if sys.platform.startswith("linux"):
        try:
            tick = time.clock_getres(_CLOCK_MONOTONIC_COARSE)
            time.clock_gettime_ns(_CLOCK_MONOTONIC_COARSE)
        except OSError:
            pass
        else:
            tick_ns = round(tick * 1e9)
            if 0 < tick_ns <= CLOCK_MAX_TICK_NS:
                return ("CLOCK_MONOTONIC_COARSE", tick_ns)
    return ("QueryPerformanceCounter" if sys.platform == "win32" else "CLOCK_MONOTONIC", 0)


CLOCK = _pick_clock()


def _coarse_ns() -> int:
    return time.clock_gettime_ns(_CLOCK_MONOTONIC_COARSE)


# Now on ``CLOCK``, in the epoch of ``time.monotonic_ns()``.
monotonic_ns = _coarse_ns if CLOCK[1] else time.monotonic_ns


class EndpointState(NamedTuple):
    """One node's state in ``pool.snapshot()``, read without blocking selection."""

    endpoint: GonkaEndpoint
    weight: int
    available: bool  # selectable now
    cooldown_remaining: float  # seconds; 0.0 when available, inf when "until cleared"
    consecutive_failures: int  # cooldowns entered since the last mark_success
    total_failures: int  # every mark_failed with a non-zero cooldown


def check_weights(weights: Iterable[int] | None, n: int) -> tuple[int, ...] | None:
    """Positive integer weights, one per endpoint, or None for "all equal"."""
    if weights is None:
        return None
    if isinstance(weights, (str, bytes)):
        raise TypeError(f"weights must be an iterable of int, not {type(weights).__name__}")
    try:
        values = tuple(weights)
    except TypeError:
        raise TypeError(f"weights must be an iterable of int, not {type(weights).__name__}") from None
    if len(values) != n:
        raise ValueError(f"got {len(values)} weights for {n} endpoints")
    checked = []
    for position, weight in enumerate(values):
        if isinstance(weight, bool) or not hasattr(type(weight), "__index__"):
            raise TypeError(f"weight {position} must be an int, not {type(weight).__name__}")
        weight = index(weight)
        if weight <= 0:
            raise ValueError(f"weight {position} must be positive, got {weight}")
        checked.append(weight)
    period = sum(checked) // gcd(*checked)
    if period > MAX_PERIOD or (len(set(checked)) > 1 and period * n > MAX_SCHEDULE_WORK):
        raise ValueError(
            f"weights too fine-grained: their sum divided by their gcd is {period} "
            f"schedule slots for {n} endpoints (at most {MAX_PERIOD} slots and "
            f"{MAX_SCHEDULE_WORK} slots x endpoints)"
        )
    return tuple(checked)


def smooth_schedule(weights: tuple[int, ...] | None) -> list[int] | None:
    """The node of each slot of one period, or None when all weights are equal.

    nginx's smooth weighted round robin: every step each node's ``current`` grows by
    its weight, the node with the largest ``current`` (the lower index on a tie) is
    picked and pays back the total.  Over a period of sum(w)/gcd(w) slots node i
    appears exactly w_i/gcd(w) times, interleaved (weights 5,1,1 give a a b a c a a,
    not a a a a a b c), and any window of sum(weights) consecutive slots is whole
    periods.  Computed once, so a weighted pick is still one atomic step plus one
    table read.  The C core computes the same list in C (``_pool._smooth_schedule``).
    """
    if weights is None or len(set(weights)) == 1:
        return None
    common = gcd(*weights)
    reduced = tuple(w // common for w in weights)
    try:
        from ._pool import _smooth_schedule
    except ImportError:
        return smooth_schedule_py(reduced)
    return _smooth_schedule(reduced)


def smooth_schedule_py(reduced: tuple[int, ...]) -> list[int]:
    """``smooth_schedule`` in Python, for weights already divided by their gcd."""
    total = sum(reduced)
    current = [0] * len(reduced)
    nodes = range(len(reduced))
    schedule = []
    for _ in range(total):
        best = 0
        for i in nodes:
            current[i] += reduced[i]
            if current[i] > current[best]:
                best = i
        current[best] -= total
        schedule.append(best)
    return schedule


def check_start(start: object) -> int | None:
    """``"random"`` -> None (each cursor stripe at a random offset), or an int >= 0."""
    if isinstance(start, str):
        if start != "random":
            raise ValueError(f"start must be 'random' or an int >= 0, not {start!r}")
        return None
    if isinstance(start, bool) or not hasattr(type(start), "__index__"):
        raise TypeError(f"start must be 'random' or an int >= 0, not {type(start).__name__}")
    offset = index(start)  # type: ignore[arg-type]
    if offset < 0:
        raise ValueError(f"start must be 'random' or an int >= 0, got {offset}")
    return offset % (1 << 63)


def random_offset() -> int:
    """A random starting cursor position, from os.urandom: the global ``random``
    sequence a user may have seeded stays untouched."""
    return int.from_bytes(os.urandom(8), "little") >> 1


class FailureReport:
    """What the failover loop tells the pool's log line about a mark it is making
    (the reason), and what it learns back (whether the mark started a cooldown)."""

    __slots__ = ("reason", "entered")

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.entered = False


# Set by the failover loop around its own mark_failed call, on the same thread (or
# task): the core calls log_cooldown synchronously, so the reason reaches the one
# record of that failure without passing through the C signature.
failure_report: ContextVar[FailureReport | None] = ContextVar("gonka_pool_failure_report",
                                                               default=None)


def log_cooldown(endpoint: GonkaEndpoint, cooldown_ns: int, failures: int) -> None:
    """The one log record of a failure: a node entered its cooldown.

    Carries the reason (an HTTP status or exception name) when the failover loop
    made the mark, the cooldown and the consecutive count, as text and as record
    attributes (``gonka_endpoint``, ``gonka_reason``, ``gonka_cooldown`` in seconds,
    ``inf`` for "until cleared", ``gonka_failures``)."""
    report = failure_report.get()
    reason = None
    if report is not None:
        report.entered = True
        reason = report.reason
    if logger.isEnabledFor(logging.WARNING):
        forever = cooldown_ns >= 2**64 - 1
        seconds = "until cleared" if forever else f"{cooldown_ns / 1e9:.3f} s"
        logger.warning(
            "endpoint %s (%s)%s entered cooldown for %s (%d consecutive failure%s)",
            endpoint.base_url, endpoint.address,
            "" if reason is None else f" failed ({reason}),",
            seconds, failures, "" if failures == 1 else "s",
            extra={"gonka_endpoint": endpoint, "gonka_reason": reason,
                   "gonka_cooldown": math.inf if forever else cooldown_ns / 1e9,
                   "gonka_failures": failures},
        )
