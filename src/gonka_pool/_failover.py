"""The failover loop of the seed's caller, written once for every client.

Per request, at most ``attempts`` times: take ``pool.next_indexed()``, try that node,
and judge the outcome.  A failure that is the node's fault (the caller says which)
marks the node for its cooldown and moves on; anything else is the answer.  When
the attempts run out, the last outcome stands: its exception is raised, or its
result returned.

The loop is a generator (``failover_plan``) that yields the node to try and is sent
the result, or thrown the exception, of trying it; ``run`` and ``arun`` drive it
with a sync or an async send.  So one loop serves ``pool.call``, ``pool.acall`` and
the httpx2 / httpx transports, sync and async alike, and none of them imports an
HTTP library.  Nothing here runs on the selection hot path.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Generator
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from operator import index as _index
from typing import Any, TypeVar

from ._endpoint import GonkaEndpoint

__all__ = [
    "DEFAULT_COOLDOWN",
    "DEFAULT_TIMEOUT_COOLDOWN",
    "acall",
    "arun",
    "call",
    "check_attempts",
    "check_cooldown",
    "failover_plan",
    "retry_after_seconds",
    "run",
]

T = TypeVar("T")

# The seed's caller: 30 s after an error status or a transport error, 60 s after a
# timeout (a node that stalls costs its callers a whole timeout each time).
DEFAULT_COOLDOWN = 30.0
DEFAULT_TIMEOUT_COOLDOWN = 60.0
MAX_DEFAULT_ATTEMPTS = 3

# Every node marked failed is logged here at INFO, with the node, the cooldown and
# the reason as record attributes (gonka_endpoint, gonka_index, gonka_cooldown,
# gonka_reason), so an application can count or alert on failovers.
log = logging.getLogger("gonka_pool")

# A verdict on one attempt: (cooldown in seconds, reason), or None for "not the
# node's fault: this outcome is the answer".
Verdict = tuple[Any, str] | None
# What the plan yields: the node to try.
Step = tuple[int, GonkaEndpoint]


def check_attempts(pool: Any, attempts: object) -> int:
    """``attempts``, or the seed's ``min(len(pool), 3)`` for None; at least 1."""
    if attempts is None:
        return min(len(pool), MAX_DEFAULT_ATTEMPTS)
    if isinstance(attempts, bool) or not hasattr(type(attempts), "__index__"):
        raise TypeError(f"attempts must be an int or None, not {type(attempts).__name__}")
    attempts = _index(attempts)  # type: ignore[arg-type]
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    return attempts


def check_cooldown(name: str, cooldown: object) -> Any:
    """A cooldown as ``mark_failed`` takes it, as seconds that compare with a float.

    The rules are ``mark_failed``'s, checked when a transport or call is set up
    rather than at the first failure: an int (kept exact, so ``10**400`` still
    means "until cleared"), any real number, or a ``timedelta``; not a bool,
    negative or NaN.
    """
    if isinstance(cooldown, timedelta):
        seconds: Any = cooldown.total_seconds()
    elif isinstance(cooldown, bool):
        raise TypeError(f"{name} must be a number of seconds or a datetime.timedelta, not bool")
    elif hasattr(type(cooldown), "__index__"):
        seconds = _index(cooldown)  # type: ignore[arg-type]
    elif hasattr(type(cooldown), "__float__"):
        try:
            seconds = float(cooldown)  # type: ignore[arg-type]
        except OverflowError:  # Fraction(10**400): beyond any float, as mark_failed takes it
            seconds = -math.inf if cooldown < 0 else math.inf  # type: ignore[operator]
        if math.isnan(seconds):
            raise ValueError(f"{name} must not be NaN")
    else:
        raise TypeError(
            f"{name} must be a number of seconds or a datetime.timedelta, "
            f"not {type(cooldown).__name__}"
        )
    if seconds < 0:
        raise ValueError(f"{name} must be >= 0, got {cooldown!r}")
    return seconds


# RFC 9110 delay-seconds is 1*DIGIT; a fraction is tolerated, as some servers send one.
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """The delay a ``Retry-After`` header asks for, in seconds; None if unusable.

    Either delay-seconds (``"120"``) or an HTTP-date, counted from ``now`` (the
    current UTC time by default); a date in the past is 0.  Anything else is
    ignored rather than trusted.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)  # a huge value becomes inf: "until cleared"
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=timezone.utc)
    now = datetime.now(timezone.utc) if now is None else now
    return max(0.0, (when - now).total_seconds())


def failover_plan(
    pool: Any,
    attempts: int,
    judge_error: Callable[[Exception], Verdict],
    judge_result: Callable[[Any], Verdict],
) -> Generator[Step, Any, Any]:
    """Yield ``(idx, endpoint)`` to try; be sent its result or thrown its exception.

    A judged failure marks the node and, while attempts remain, yields the next
    node; the driver then discards the result it sent.  Returns the accepted (or
    last) result; re-raises an exception that is not the node's fault at once, and
    the last one when the attempts run out.  Exceptions that are not ``Exception``
    (``KeyboardInterrupt``, ``asyncio.CancelledError``) pass through unjudged.
    """
    for attempt in range(1, attempts + 1):
        idx, endpoint = pool.next_indexed()
        try:
            result = yield idx, endpoint
        except Exception as exc:
            verdict = judge_error(exc)
            if verdict is None:
                raise
            _mark_failed(pool, idx, endpoint, verdict)
            if attempt == attempts:
                raise
            continue
        verdict = judge_result(result)
        if verdict is not None:
            _mark_failed(pool, idx, endpoint, verdict)
        if verdict is None or attempt == attempts:
            return result
    raise AssertionError("unreachable: attempts >= 1")  # pragma: no cover


def _mark_failed(pool: Any, idx: int, endpoint: GonkaEndpoint, verdict: tuple[Any, str]) -> None:
    cooldown, reason = verdict
    # By endpoint, not index: an update() between the pick and the failure may have
    # moved the node, and the endpoint resolves against the set in force now.
    pool.mark_failed(endpoint, cooldown)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "node %d %s failed (%s); skipped for %s s",
            idx, endpoint.base_url, reason, cooldown,
            extra={"gonka_endpoint": endpoint, "gonka_index": idx,
                   "gonka_cooldown": cooldown, "gonka_reason": reason},
        )


def run(
    plan: Generator[Step, Any, T],
    send: Callable[[int, GonkaEndpoint], Any],
    discard: Callable[[Any], object] | None = None,
) -> T:
    """Drive ``plan`` with a blocking ``send(idx, endpoint)``.

    ``discard(result)`` releases a result the plan moved past (an HTTP response to
    close); its errors are ignored, as that node is already marked failed.
    """
    try:
        step = next(plan)
        while True:
            try:
                result = send(*step)
            except Exception as exc:
                step = plan.throw(exc)
                continue
            try:
                step = plan.send(result)
            except StopIteration as done:
                return done.value
            if discard is not None:
                try:
                    discard(result)
                except Exception:  # noqa: BLE001,S110 - see the docstring
                    pass
    finally:
        plan.close()


async def arun(
    plan: Generator[Step, Any, T],
    send: Callable[[int, GonkaEndpoint], Awaitable[Any]],
    discard: Callable[[Any], Awaitable[object]] | None = None,
) -> T:
    """``run`` for an async ``send`` and ``discard``; cancellation passes through."""
    try:
        step = next(plan)
        while True:
            try:
                result = await send(*step)
            except Exception as exc:
                step = plan.throw(exc)
                continue
            try:
                step = plan.send(result)
            except StopIteration as done:
                return done.value
            if discard is not None:
                try:
                    await discard(result)
                except Exception:  # noqa: BLE001,S110 - see run()
                    pass
    finally:
        plan.close()


# -- pool.call / pool.acall ---------------------------------------------------------


class _NotAwaitable(TypeError):
    """``acall`` was given a function whose result cannot be awaited: the caller's
    mistake, never retried (even under ``retry_on=(Exception,)``)."""


def _check_retry_on(retry_on: object) -> tuple[type[BaseException], ...]:
    kinds = (retry_on,) if isinstance(retry_on, type) else retry_on
    if not isinstance(kinds, tuple) or not all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in kinds
    ):
        raise TypeError("retry_on must be an exception class or a tuple of them")
    return kinds


def _call_plan(pool: Any, attempts: object, cooldown: object, timeout_cooldown: object,
               retry_on: object) -> Generator[Step, Any, Any]:
    attempts = check_attempts(pool, attempts)
    cooldown = check_cooldown("cooldown", cooldown)
    timeout_cooldown = check_cooldown("timeout_cooldown", timeout_cooldown)
    kinds = _check_retry_on(retry_on)

    def judge_error(exc: Exception) -> Verdict:
        if isinstance(exc, _NotAwaitable) or not isinstance(exc, kinds):
            return None
        # The built-in TimeoutError covers socket.timeout and, from 3.11,
        # asyncio.TimeoutError; a stalled node costs a whole timeout per try.
        slow = isinstance(exc, TimeoutError)
        return (timeout_cooldown if slow else cooldown), type(exc).__name__

    return failover_plan(pool, attempts, judge_error, lambda result: None)


def call(pool: Any, fn: Callable[[GonkaEndpoint], T], *, attempts: object = None,
         cooldown: object = DEFAULT_COOLDOWN, timeout_cooldown: object = DEFAULT_TIMEOUT_COOLDOWN,
         retry_on: object = (Exception,)) -> T:
    """``pool.call``: see ``EndpointPool.call``."""
    plan = _call_plan(pool, attempts, cooldown, timeout_cooldown, retry_on)
    return run(plan, lambda idx, endpoint: fn(endpoint))


async def acall(pool: Any, afn: Callable[[GonkaEndpoint], Awaitable[T]], *,
                attempts: object = None, cooldown: object = DEFAULT_COOLDOWN,
                timeout_cooldown: object = DEFAULT_TIMEOUT_COOLDOWN,
                retry_on: object = (Exception,)) -> T:
    """``pool.acall``: see ``EndpointPool.acall``."""
    plan = _call_plan(pool, attempts, cooldown, timeout_cooldown, retry_on)

    async def send(idx: int, endpoint: GonkaEndpoint) -> Any:
        pending = afn(endpoint)
        if not inspect.isawaitable(pending):
            raise _NotAwaitable(
                f"pool.acall needs a function that returns an awaitable (an async def), "
                f"got {type(pending).__name__} from {afn!r}; use pool.call for sync functions"
            )
        return await pending

    return await arun(plan, send)
