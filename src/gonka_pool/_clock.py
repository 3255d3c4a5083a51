"""The clock deadlines are read on, shared by both cores: ``CLOCK`` and
``monotonic_ns()`` (the twin's reads; the C core reads the same clock in C)."""

from __future__ import annotations

import sys
import time

__all__ = ["CLOCK", "CLOCK_MAX_TICK_NS", "monotonic_ns"]

# Deadlines are read on CLOCK_MONOTONIC_COARSE on Linux (CLOCK_MONOTONIC as of the
# last timer tick, a fraction of a precise read's cost: benchmarks/clock_cost.c),
# when its tick is at most this long (HZ=100); else the precise clock.  A real-clock
# deadline adds one tick, so no node comes back a tick early.
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
