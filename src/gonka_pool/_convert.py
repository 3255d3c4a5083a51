"""One converter per argument rule: cooldowns, indexes and counts, with their errors.

Every argument a user passes that is not an endpoint is converted here, and only
here: by the pure-Python twin, the failover loop, the transports, the facade, and
the C core's slow paths.  The C core keeps inline only its fast paths (an exact
``float`` or ``int`` in range: ``benchmarks/mark_cost.py``) and calls these for
everything else, so the two cores raise the same errors by construction
(``tests/test_convert.py`` compares them).

The integer rule: an ``int``, or any object whose type has ``__index__``, but never
a ``bool`` (``mark_failed(True)`` is a bug, not node 1).  The cooldown rule: seconds
as an ``int`` (kept exact, so ``10**400`` still means "until cleared"), any real
number (``__float__``; one beyond any float is infinite), or a ``timedelta``; not a
``bool``, negative or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta
from operator import index
from typing import Any

from ._endpoint import GonkaEndpoint

__all__ = [
    "FOREVER",
    "NS_PER_S",
    "check_attempts",
    "check_cooldown",
    "check_deadline",
    "check_start",
    "check_weights",
    "cooldown_ns",
    "count",
    "endpoint_index",
    "index_error",
    "integer",
    "is_index_target",
    "sequence_index",
]

# Deadline meaning "until cleared"; also where every cooldown saturates.
FOREVER = 2**64 - 1
NS_PER_S = 1_000_000_000
# Whole seconds at or above which a cooldown saturates to FOREVER; as a float, the
# nanosecond count that does.
SATURATING_SECONDS = 18_446_744_074
SATURATING_NS_DOUBLE = 18446744073709551616.0
# The most selections one next_many() call makes.
MAX_COUNT = 1 << 40
_ZERO_TIMEDELTA = timedelta(0)
_MICROSECOND = timedelta(microseconds=1)  # a timedelta's resolution


def integer(value: object, what: str, expected: str = "an int") -> int:
    """``value`` by the integer rule, as an exact int; else
    ``TypeError("{what} must be {expected}, not {type}")``."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{what} must be {expected}, not {type(value).__name__}")
    return index(value)  # type: ignore[arg-type]


def is_index_target(target: object) -> bool:
    """Whether ``mark_failed`` / ``mark_success`` read ``target`` as an index rather
    than an endpoint.  A bool counts, so that ``endpoint_index`` refuses it by name."""
    return type(target) is int or (not isinstance(target, GonkaEndpoint) and hasattr(type(target), "__index__"))


def endpoint_index(key: object) -> int:
    """A mark's index target as an int; the range is the membership's to check."""
    return integer(key, "endpoint index")


def index_error(key: int, n: int) -> IndexError:
    """The error of an index that a membership of ``n`` nodes does not hold."""
    return IndexError(f"endpoint index {key} out of range for a pool of {n}")


def sequence_index(key: object, n: int) -> int:
    """``pool[key]`` for a non-slice key: negative counts from the end, as for a tuple."""
    position = integer(key, "pool indices", "integers or slices")
    if position < 0:
        position += n
    if position < 0 or position >= n:
        raise IndexError("pool index out of range")
    return position


def count(k: object) -> int:
    """``next_many``'s count: an int from 0 to 2**40."""
    k = integer(k, "count")
    if k < 0:
        raise ValueError(f"count must be >= 0, got {k!r}")
    if k > MAX_COUNT:
        raise OverflowError(f"count {k!r} is too large")
    return k


def check_attempts(attempts: object) -> int | None:
    """``attempts`` as an int >= 1, or None (at most 8 nodes and three timeouts)."""
    if attempts is None:
        return None
    attempts = integer(attempts, "attempts", "an int or None")
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    return attempts


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
        weight = integer(weight, f"weight {position}")
        if weight <= 0:
            raise ValueError(f"weight {position} must be positive, got {weight}")
        checked.append(weight)
    return tuple(checked)


def check_start(start: object) -> int | None:
    """``"random"`` -> None (each cursor stripe at a random offset), or an int >= 0."""
    if isinstance(start, str):
        if start != "random":
            raise ValueError(f"start must be 'random' or an int >= 0, not {start!r}")
        return None
    offset = integer(start, "start", "'random' or an int >= 0")
    if offset < 0:
        raise ValueError(f"start must be 'random' or an int >= 0, got {offset}")
    return offset % (1 << 63)


def _seconds(cooldown: object, name: str) -> int | float | timedelta:
    """The cooldown rule's types, before its sign: an exact int, a float (NaN
    refused, beyond any float infinite) or the timedelta itself."""
    if type(cooldown) is float:
        seconds = cooldown
    elif isinstance(cooldown, timedelta):
        return cooldown
    elif isinstance(cooldown, bool):
        raise TypeError(f"{name} must be a number of seconds or a datetime.timedelta, not bool")
    elif hasattr(type(cooldown), "__index__"):
        return index(cooldown)  # type: ignore[arg-type]
    elif hasattr(type(cooldown), "__float__"):
        try:
            seconds = float(cooldown)  # type: ignore[arg-type]
        except OverflowError:  # a real number beyond any float, e.g. Fraction(10**400)
            seconds = math.inf if cooldown > 0 else -math.inf  # type: ignore[operator]
    else:
        raise TypeError(f"{name} must be a number of seconds or a datetime.timedelta, not {type(cooldown).__name__}")
    if math.isnan(seconds):
        raise ValueError(f"{name} must not be NaN")
    return seconds


def cooldown_ns(cooldown: object) -> int:
    """A cooldown as ``mark_failed`` takes it -> whole nanoseconds, 0 to FOREVER.

    0 means "clear"; any positive cooldown is at least 1 ns; too large saturates.
    A negative one is reported as the number it converted to (``-1.0`` for
    ``Decimal(-1)``), as the C core always has."""
    seconds = _seconds(cooldown, "cooldown")
    if isinstance(seconds, timedelta):
        if seconds < _ZERO_TIMEDELTA:
            raise ValueError(f"cooldown must be >= 0, got {seconds!r}")
        return min(seconds // _MICROSECOND * 1000, FOREVER)  # exact: one C division
    if seconds < 0:
        raise ValueError(f"cooldown must be >= 0, got {seconds!r}")
    if isinstance(seconds, int):
        return FOREVER if seconds >= SATURATING_SECONDS else seconds * NS_PER_S
    if seconds == 0:  # -0.0 too
        return 0
    if seconds * NS_PER_S >= SATURATING_NS_DOUBLE:
        return FOREVER
    return math.ceil(seconds * NS_PER_S)


def check_cooldown(name: str, cooldown: object, *, allow_none: bool = True) -> Any:
    """A cooldown by ``mark_failed``'s rule, as seconds that compare with a float
    (an int kept exact), or None (the pool's backoff).

    For a transport or call, which checks its cooldowns when it is set up rather
    than at the first failure; the errors name the keyword and repeat the value
    as given."""
    if cooldown is None and allow_none:
        return None
    seconds = _seconds(cooldown, name)
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if seconds < 0:
        raise ValueError(f"{name} must be >= 0, got {cooldown!r}")
    return seconds


def check_deadline(deadline: object) -> float | None:
    """The whole request's time budget in seconds (> 0, finite), or None."""
    if deadline is None:
        return None
    seconds = check_cooldown("deadline", deadline, allow_none=False)
    if not 0 < seconds < math.inf:
        raise ValueError(f"deadline must be a positive, finite number of seconds, got {deadline!r}")
    return float(seconds)
