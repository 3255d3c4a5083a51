"""What a pool reports: ``snapshot()``'s ``EndpointState``, and the one log record
of a node entering its cooldown (with the reason the failover loop hands over)."""

from __future__ import annotations

import logging
import math
from contextvars import ContextVar
from typing import NamedTuple

from ._endpoint import GonkaEndpoint

__all__ = ["EndpointState", "FailureReport", "failure_report", "log_cooldown"]

logger = logging.getLogger("gonka_pool")
# A library logs; the application decides where it goes (no lastResort stderr).
logger.addHandler(logging.NullHandler())


class EndpointState(NamedTuple):
    """One node's state in ``pool.snapshot()``, read without blocking selection."""

    endpoint: GonkaEndpoint
    weight: int
    available: bool  # selectable now
    cooldown_remaining: float  # seconds; 0.0 when available, inf when "until cleared"
    consecutive_failures: int  # cooldowns entered since the last mark_success
    total_failures: int  # every mark_failed with a non-zero cooldown
    in_flight: int = 0  # leases out now (pool.acquire(), the request path)
    latency: float | None = None  # peak-EWMA latency in seconds; None until the node's first answer
    limit: int = 1  # requests the node has shown it serves at once (learned; 1 at first)


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
failure_report: ContextVar[FailureReport | None] = ContextVar("gonka_pool_failure_report", default=None)


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
            endpoint.base_url,
            endpoint.address,
            "" if reason is None else f" failed ({reason}),",
            seconds,
            failures,
            "" if failures == 1 else "s",
            extra={
                "gonka_endpoint": endpoint,
                "gonka_reason": reason,
                "gonka_cooldown": math.inf if forever else cooldown_ns / 1e9,
                "gonka_failures": failures,
            },
        )
