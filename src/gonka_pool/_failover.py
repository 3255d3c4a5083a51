"""The failover loop of the seed's caller, written once for every client.

Per request, while the request may go on: take a lease on the pool's pick
(``pool.acquire()``) that this request has not tried, try its node, and judge the
outcome.  With ``attempts=None`` (the default) a request goes on until a node
answers, ``DEFAULT_MAX_ATTEMPTS`` (8) nodes or every node have been tried, the
``deadline`` has passed, or three attempts have timed out (fast failures, a
refused connection or an error status, do not count against the three: only
stalls threaten latency); ``attempts=N`` means at most N, more than 8 included
(no node is tried twice, so ``attempts=len(pool)`` reaches every node).  When the
attempts or the time run out, the last outcome stands: its exception is raised,
or its result returned.

Every attempt's lease is settled exactly once, as soon as its verdict is known,
so that the pool's in-flight counts never leak and its latency samples measure
the node, not the caller:

- an outcome that is the answer and the node's success: ``lease.success()``, which records the latency
  from the pick to that moment and resets the node's backoff level.  For the
  transports the verdict is known when the status line and headers have arrived,
  so a streamed answer counts its time to the first byte; a non-streamed one its
  whole generation (the pool's peak-EWMA clips one long sample, see
  ``_balance.PEAK_CLIP``).  For ``pool.call`` it is the function's duration;
- an outcome that is the answer but no sign of the node's health or speed (the
  ``NEUTRAL`` verdict: the transports' 4xx and other statuses they do not retry,
  the caller's to fix), and the ``PASS`` verdict (a refusal that is not the node's
  fault): ``lease.answered()``, whose latency may raise the node's estimate, never
  lower it.  A node answering errors at once would otherwise look the fastest and
  draw the traffic (and read every prompt): a node steering the pool;
- a failure that is the node's fault (the caller's judge says which):
  ``lease.failure(cooldown, reason, retry_after=...)``, as ``mark_failed`` marks;
- a refusal for load (a 429 without ``Retry-After``, the ``LOAD`` verdict):
  ``lease.overloaded()``: a short, jittered cooldown that does not escalate the
  node's backoff (it was busy, not broken), and the request fails over;
- an exception that is not the node's fault, and anything
  that ends the attempt from outside (``KeyboardInterrupt``, asyncio
  cancellation, the driver closing the plan): ``lease.release()``, neither
  outcome.

Cooldowns: ``None`` (the default) lets the pool's backoff policy decide
(``base_cooldown * 2**(n-1)`` for the n-th consecutive outage, capped at
``max_cooldown``); a number is that many seconds.  A timeout is never cooled for
less than an error: with ``timeout_cooldown=None`` it is an error like any other
(so with the policy, stalling escalates exactly as fast as failing); a number
there gives timeouts ``max(timeout_cooldown, cooldown)`` when ``cooldown`` is a
number too, and that number floor over the pool's backoff when it is not.  A node
may ask for longer with ``Retry-After`` (the transports), never more than
``max_retry_after`` seconds: a 429 or 503 with a usable ``Retry-After`` is a
failure, cooled at least that long.

The loop is a generator (``failover_plan``) that yields the node to try and is sent
the result, or thrown the exception, of trying it; ``run`` and ``arun`` drive it
with a sync or an async send.  So one loop serves ``pool.call``, ``pool.acall`` and
the httpx2 / httpx transports, sync and async alike, and none of them imports an
HTTP library.  Nothing here runs on the selection hot path.

Each failure is logged once: the pool's WARNING when the mark starts a cooldown
(``_report.log_cooldown``, with the reason this loop hands ``lease.failure``),
else a DEBUG line here ("already cooling", ``lease.failure`` returning False).
A refusal for load and a ``PASS`` are logged at DEBUG only.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Generator
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar, cast

from ._client_errors import client_fault
from ._convert import check_attempts, check_cooldown, check_deadline
from ._endpoint import GonkaEndpoint

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_RETRY_AFTER",
    "LOAD",
    "MAX_SLOW_FAILURES",
    "NEUTRAL",
    "PASS",
    "Cooldowns",
    "acall",
    "arun",
    "call",
    "expiry",
    "failover_plan",
    "load_verdict",
    "remaining",
    "retry_after_seconds",
    "run",
]

T = TypeVar("T")

# The most a node's Retry-After may ask for, in seconds: Linkerd's cap.  Unbounded,
# one "Retry-After: 99999999999" would take a node out until cleared.
DEFAULT_MAX_RETRY_AFTER = 300.0

log = logging.getLogger("gonka_pool")

# A verdict on one attempt: (cooldown in seconds, None for the pool's backoff,
# PASS or LOAD; at-least seconds or 0; reason; whether it was slow, a timeout), or
# None for "this outcome is the answer" (``lease.success()``), or NEUTRAL for "the
# answer, which says nothing of the node" (``lease.answered()``).
# PASS fails over without marking the node: the attempt failed for a reason that
# another node (or a fresh attempt) may not share, and the node is not at fault
# (a Gonka node refusing a reused signature, say).
# LOAD fails over after ``lease.overloaded()``: the node refused for load (a 429
# without Retry-After, Gonka's "Transfer Agent capacity reached"); it is left alone
# for a short jittered moment, its backoff level untouched.
Verdict = tuple[Any, float, str, bool] | None
# What the plan yields: the node to try.
Step = tuple[int, GonkaEndpoint]


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


PASS: Any = _Sentinel("PASS")
LOAD: Any = _Sentinel("LOAD")
NEUTRAL: Any = _Sentinel("NEUTRAL")


def load_verdict(reason: str) -> tuple[Any, float, str, bool]:
    """The verdict on a refusal for load: fail over, ``lease.overloaded()``."""
    return LOAD, 0.0, reason, False


class Cooldowns:
    """How long a failure cools its node: ``cooldown`` for an error,
    ``timeout_cooldown`` for a timeout (never less than an error's)."""

    __slots__ = ("error", "timeout", "timeout_floor")

    def __init__(self, cooldown: object, timeout_cooldown: object) -> None:
        error = check_cooldown("cooldown", cooldown)
        timeout = check_cooldown("timeout_cooldown", timeout_cooldown)
        self.error = error
        self.timeout_floor = 0.0
        if timeout is None:
            self.timeout = error
        elif error is None:
            # The pool's backoff, but at least timeout_cooldown.
            self.timeout = None
            self.timeout_floor = timeout
        else:
            self.timeout = max(timeout, error)

    def for_error(self, reason: str, at_least: float = 0.0) -> tuple[Any, float, str, bool]:
        cooldown = self.error
        if cooldown is not None and at_least > cooldown:
            return at_least, 0.0, reason, False
        return cooldown, (at_least if cooldown is None else 0.0), reason, False

    def for_timeout(self, reason: str) -> tuple[Any, float, str, bool]:
        return self.timeout, self.timeout_floor, reason, True

    def __repr__(self) -> str:
        return f"cooldown={self.error!r}, timeout_cooldown={self.timeout!r}"


# RFC 9110 delay-seconds is 1*DIGIT; a fraction is tolerated, as some servers send one.
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)
# Longer header values are refused unread: a date or a number needs no more.
_RETRY_AFTER_MAX_LEN = 64


def retry_after_seconds(
    value: str | None, now: datetime | None = None, limit: float = DEFAULT_MAX_RETRY_AFTER
) -> float | None:
    """The delay a ``Retry-After`` header asks for, in seconds, at most ``limit``;
    None if unusable.

    Either delay-seconds (``"120"``) or an HTTP-date, counted from ``now`` (the
    current UTC time by default); a date in the past is 0.  Anything else is
    ignored rather than trusted, and a node asking for more than ``limit`` gets
    ``limit``: a third party may not take a node out for longer.
    """
    if value is None:
        return None
    value = value.strip()
    if len(value) > _RETRY_AFTER_MAX_LEN:
        # "9" * 400: a number that long is a request for "forever"; cap it.
        return float(limit) if _DELAY_SECONDS.fullmatch(value) else None
    if _DELAY_SECONDS.fullmatch(value):
        return min(float(value), limit)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=timezone.utc)
    now = datetime.now(timezone.utc) if now is None else now
    try:
        seconds = (when - now).total_seconds()
    except OverflowError:  # pragma: no cover - datetimes are bounded to years 1..9999
        return float(limit)
    return min(max(0.0, seconds), limit)


def failover_plan(
    pool: Any,
    attempts: int | None,
    judge_error: Callable[[Exception], Verdict],
    judge_result: Callable[[Any], Verdict],
    expires: float | None = None,
) -> Generator[Step, Any, Any]:
    """Yield ``(idx, endpoint)`` to try; be sent its result or thrown its exception.

    Each attempt holds a lease from ``pool.acquire()``, settled exactly once as
    soon as its verdict is known (see the module docstring): a judged failure
    settles it failed (or overloaded, or answered for ``PASS``) and, while the
    request may go on, yields another node; the driver then discards the result
    it sent.  Returns the accepted (or last) result, settling its lease a success
    when it was accepted (``answered()`` for the ``NEUTRAL`` verdict); re-raises
    an exception that is not the node's fault at once (releasing the lease:
    neither outcome), and the last one when the request
    may not go on.  Exceptions that are not ``Exception`` (``KeyboardInterrupt``,
    ``asyncio.CancelledError``) pass through unjudged, and closing the plan
    (``GeneratorExit``) releases the lease of the attempt in progress.

    With ``attempts=None`` the request goes on until ``DEFAULT_MAX_ATTEMPTS``
    nodes or every node of the pool have been tried, ``expires`` (a
    ``time.monotonic()`` value) has passed, or ``MAX_SLOW_FAILURES`` attempts have
    timed out: a fast failure (a refused or reset connection, an error status, a
    refusal for load) costs milliseconds and does not use up that bound, which
    exists to bound the latency of stalling nodes.  ``attempts=N`` means at most N
    attempts (and the same deadline).  No
    node is tried twice in one request while an untried one remains: the pool's
    pick is taken when it is untried (the usual case: a node that failed is
    cooling, and selection skips it), else that lease is released for one on the
    first untried node in pool order, cooling or not (``pool._acquire_index``).
    (A random offset for each retry, so that requests in flight when a node starts
    failing do not all move on to its next neighbour, was measured with ``python
    -m gonka_pool bench-failover``: attempts on bad nodes 50-55 with it, 51-55
    without, in 4-round runs; not kept.)
    """
    if recorder is not None:
        return cast("Generator[Step, Any, Any]", recorder.plan(pool, attempts, judge_error, judge_result, expires))
    return _failover_loop(pool, attempts, judge_error, judge_result, expires, None)


# gonka_pool.metrics while some PoolMetrics records a pool, else None: without one,
# a request pays this global's test and an attempt one `request is None` test.
recorder: Any = None


def _failover_loop(
    pool: Any,
    attempts: int | None,
    judge_error: Callable[[Exception], Verdict],
    judge_result: Callable[[Any], Verdict],
    expires: float | None,
    request: Any,
) -> Generator[Step, Any, Any]:
    """``failover_plan``'s loop; ``request`` hears each attempt's node and verdict
    (``gonka_pool.metrics``), or is None."""
    limit = attempts
    tried: set[GonkaEndpoint] = set()
    slow = 0
    while True:
        lease = _acquire_untried(pool, tried)
        try:
            endpoint = lease.endpoint
            tried.add(endpoint)
            if request is not None:
                request.attempt(endpoint)
            try:
                result = yield lease.index, endpoint
            except Exception as exc:
                verdict = judge_error(exc)
                if verdict is None:
                    raise
                _settle_failed(lease, verdict, request)
                slow += verdict[3]
                if not _may_go_on(pool, limit, tried, slow, expires):
                    raise
                continue
            verdict = judge_result(result)
            if verdict is None or verdict is NEUTRAL:
                if verdict is None:
                    lease.success()
                else:
                    lease.answered()
                if request is not None:
                    request.answered()
                return result
            _settle_failed(lease, verdict, request)
            slow += verdict[3]
            if not _may_go_on(pool, limit, tried, slow, expires):
                return result
        finally:
            # A no-op once settled.  Otherwise the attempt ended without a verdict
            # on the node: an exception that is not its fault, a judge that raised,
            # or the driver closing the plan (cancellation, KeyboardInterrupt, a
            # dropped generator): neither outcome, but never a leaked in-flight count.
            lease.release()


# Timeouts one request may spend with attempts=None: the seed's cap of 3 attempts
# existed to bound the latency of stalling nodes, and now bounds only that.
MAX_SLOW_FAILURES = 3
# Nodes one request may try with attempts=None, fast failures and all.  Unbounded,
# a request went on while failures were fast: over a source listing 1,000
# participants on one host that answered 400 "AuthKey has already been used" (no
# mark, by design), each request sent 1,000 signed POSTs of its prompt in 48 s
# (issue 21).  8 still carries a request past a run of failing nodes (with half of
# the nodes failing at random, all 8 fail for 1 request in 256), while a prompt
# reaches at most 8 nodes, and so at most 8 hosts.
DEFAULT_MAX_ATTEMPTS = 8
# Looks for an untried node when an update() moves the nodes between reading the
# membership and acquiring from it.
_UNTRIED_LOOKS = 3


def _acquire_untried(pool: Any, tried: set[GonkaEndpoint]) -> Any:
    """A lease on the pool's pick if this request has not tried it, else on the
    first untried node in pool order; the pick's lease when every node has been
    tried (only when an update() raced the checks of ``_may_go_on``)."""
    lease = pool.acquire()
    if lease.endpoint not in tried:
        return lease
    # The pick is a node this request tried: every candidate is cooling and tried
    # (all cooling: the earliest deadline, or in panic the cheapest, comes back),
    # or the node failed without a cooldown (PASS) and is still the cheapest.  An
    # untried node, even a cooling one, is this request's better chance.
    try:
        for _ in range(_UNTRIED_LOOKS):
            idx = next((i for i, node in enumerate(pool.endpoints) if node not in tried), None)
            if idx is None:
                break
            try:
                other = pool._acquire_index(idx)
            except IndexError:  # an update() shrank the membership meanwhile
                continue
            if other.endpoint not in tried:
                lease.release()
                return other
            other.release()  # an update() moved the nodes meanwhile: look again
    except BaseException:
        lease.release()
        raise
    return lease


def _may_go_on(pool: Any, limit: int | None, tried: set[GonkaEndpoint], slow: int, expires: float | None) -> bool:
    if limit is not None:
        if len(tried) >= limit:
            return False
    elif slow >= MAX_SLOW_FAILURES or len(tried) >= DEFAULT_MAX_ATTEMPTS:
        return False
    if _expired(expires):
        return False
    # Every node tried (len(pool) counts duplicate slots; the set does not).
    return len(tried) < len(pool) and any(node not in tried for node in pool.endpoints)


def _expired(expires: float | None) -> bool:
    return expires is not None and time.monotonic() >= expires


def expiry(deadline: float | None) -> float | None:
    """The ``time.monotonic()`` value at which a request given ``deadline`` seconds
    now must stop starting attempts; None for no deadline."""
    return None if deadline is None else time.monotonic() + deadline


def remaining(expires: float | None) -> float | None:
    """Seconds left before ``expires`` (a ``time.monotonic()`` value), or None."""
    return None if expires is None else max(0.0, expires - time.monotonic())


def _settle_failed(lease: Any, verdict: tuple[Any, float, str, bool], request: Any = None) -> None:
    """Settle ``lease`` on a judged failure: failed, overloaded or released; then
    tell ``request`` (if any) the verdict and whether it started a cooldown."""
    cooldown, at_least, reason, _ = verdict
    entered = False
    if cooldown is PASS:
        lease.answered()  # a refusal that is not the node's fault, but an answer
        _debug(lease.endpoint, reason, "failed (%s); failing over without a cooldown")
    elif cooldown is LOAD:
        lease.overloaded()
        _debug(lease.endpoint, reason, "refused for load (%s); failing over without a backoff")
    # The lease resolves its node against the membership in force now, as a mark
    # by endpoint does (an update() may have moved it since the pick).  The pool
    # logs the one WARNING when this starts a cooldown, with our reason.
    elif lease.failure(cooldown, reason=reason, retry_after=at_least or None):
        entered = True
    else:
        _debug(lease.endpoint, reason, "failed (%s) while already cooling; failing over")
    if request is not None:
        request.failed(verdict, entered)


def _debug(endpoint: GonkaEndpoint, reason: str, what: str) -> None:
    """The DEBUG record of a failure that started no cooldown: ``what`` takes the
    reason."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "endpoint %s (%s) " + what,
            endpoint.base_url,
            endpoint.address,
            reason,
            extra={"gonka_endpoint": endpoint, "gonka_reason": reason},
        )


def run(
    plan: Generator[Step, Any, T],
    send: Callable[[int, GonkaEndpoint], Any],
    discard: Callable[[Any], object] | None = None,
) -> T:
    """Drive ``plan`` with a blocking ``send(idx, endpoint)``.

    ``discard(result)`` releases a result the plan moved past (an HTTP response to
    close); its errors are ignored, as that attempt's lease is already settled.
    Whatever leaves this function, the plan is closed, which releases the lease of
    an attempt in progress.
    """
    try:
        step = next(plan)
        while True:
            try:
                result = send(*step)
            except Exception as exc:  # noqa: BLE001 - the plan judges it, and raises what it will not retry
                step = plan.throw(exc)
                continue
            try:
                step = plan.send(result)
            except StopIteration as done:
                return cast(T, done.value)  # the plan's result: what send returned
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
            except Exception as exc:  # noqa: BLE001 - as in run()
                step = plan.throw(exc)
                continue
            try:
                step = plan.send(result)
            except StopIteration as done:
                return cast(T, done.value)  # the plan's result: what send returned
            if discard is not None:
                try:
                    await discard(result)
                except Exception:  # noqa: BLE001,S110 - see run()
                    pass
    finally:
        plan.close()


# -- pool.call / pool.acall ---------------------------------------------------------

# What is the node's fault by default: it could not be reached, reset the
# connection or stalled.  OSError covers ConnectionError, TimeoutError (socket.timeout,
# asyncio.TimeoutError from 3.11) and the errors of requests (RequestException) and
# aiohttp's ClientOSError; the common clients' other transport errors are known by
# name (``_client_errors``).  A bug of the caller's (IndexError, KeyError, a bad
# request) is raised at once and marks nothing.
DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (OSError,)


class _CallerMistake(TypeError):
    """``call``/``acall`` was given the wrong kind of function: the caller's mistake,
    never retried (even under ``retry_on=(Exception,)``)."""


def _check_exceptions(name: str, kinds: object) -> tuple[type[BaseException], ...]:
    kinds = (kinds,) if isinstance(kinds, type) else kinds
    if not isinstance(kinds, tuple) or not all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in kinds
    ):
        raise TypeError(f"{name} must be an exception class or a tuple of them")
    return kinds


def _call_plan(
    pool: Any,
    attempts: object,
    cooldown: object,
    timeout_cooldown: object,
    retry_on: object,
    timeout_on: object,
    deadline: object,
) -> Generator[Step, Any, Any]:
    checked_attempts = check_attempts(attempts)
    cooldowns = Cooldowns(cooldown, timeout_cooldown)
    slow_kinds: tuple[type[BaseException], ...] = (TimeoutError, *_check_exceptions("timeout_on", timeout_on))
    kinds: tuple[type[BaseException], ...] = (*DEFAULT_RETRY_ON, *_check_exceptions("retry_on", retry_on), *slow_kinds)
    expires = expiry(check_deadline(deadline))

    def judge_error(exc: Exception) -> Verdict:
        if isinstance(exc, _CallerMistake):
            return None
        # A client's timeout stays a timeout under retry_on=httpx.TransportError too.
        fault = client_fault(exc)
        if fault == "timeout" or isinstance(exc, slow_kinds):
            # A stalled node costs a whole timeout per try.
            return cooldowns.for_timeout(type(exc).__name__)
        if fault == "error" or isinstance(exc, kinds):
            return cooldowns.for_error(type(exc).__name__)
        return None

    return failover_plan(pool, checked_attempts, judge_error, lambda result: None, expires)


def call(
    pool: Any,
    fn: Callable[[GonkaEndpoint], T],
    *,
    attempts: int | None = None,
    cooldown: object = None,
    timeout_cooldown: object = None,
    retry_on: object = (),
    timeout_on: object = (),
    deadline: object = None,
) -> T:
    """``pool.call``: see ``EndpointPool.call``."""
    if not callable(fn):
        raise TypeError(f"pool.call needs a callable, not {type(fn).__name__}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"pool.call needs a sync function, got the async {fn!r}; use await pool.acall(...)")
    plan = _call_plan(pool, attempts, cooldown, timeout_cooldown, retry_on, timeout_on, deadline)

    def send(idx: int, endpoint: GonkaEndpoint) -> Any:
        result = fn(endpoint)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: no "was never awaited" warning
            raise _CallerMistake(
                f"pool.call needs a sync function; {fn!r} returned an awaitable "
                f"({type(result).__name__}): use await pool.acall(...)"
            )
        return result

    return cast(T, run(plan, send))  # fn's result, from the untyped plan


async def acall(
    pool: Any,
    afn: Callable[[GonkaEndpoint], Awaitable[T]],
    *,
    attempts: int | None = None,
    cooldown: object = None,
    timeout_cooldown: object = None,
    retry_on: object = (),
    timeout_on: object = (),
    deadline: object = None,
) -> T:
    """``pool.acall``: see ``EndpointPool.acall``."""
    if not callable(afn):
        raise TypeError(f"pool.acall needs a callable, not {type(afn).__name__}")
    plan = _call_plan(pool, attempts, cooldown, timeout_cooldown, retry_on, timeout_on, deadline)

    async def send(idx: int, endpoint: GonkaEndpoint) -> Any:
        pending = afn(endpoint)
        if not inspect.isawaitable(pending):
            raise _CallerMistake(
                f"pool.acall needs a function that returns an awaitable (an async def), "
                f"got {type(pending).__name__} from {afn!r}; use pool.call for sync functions"
            )
        return await pending

    return await arun(plan, send)
