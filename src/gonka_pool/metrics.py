"""Metrics of a pool's nodes for Prometheus and OpenTelemetry.

``PoolMetrics(pool, name="chat")`` starts counting what the failover loop does
with ``pool`` (``pool.call``/``acall``, the httpx and httpx2 transports, the openai
and Gonka clients): per node, the attempts sent, the answers, the failures by
reason and kind, the cooldowns they started and each attempt's latency; per
request, the attempts it took.  What the pool itself tracks (in flight, cooling,
cooldown left, consecutive failures, the peak-EWMA latency) is read from
``pool.snapshot()`` when an exporter collects, so it costs the requests nothing.
Two exporters read every ``PoolMetrics`` of the process:

- ``PrometheusCollector()``, a ``prometheus_client`` collector:
  ``prometheus_client.REGISTRY.register(PrometheusCollector())``;
- ``OpenTelemetryMetrics(meter_provider=None)``: observable counters and gauges
  read at collection, and two histograms whose measurements each request keeps and
  the next collection records, through the OpenTelemetry metrics API (the global
  meter provider by default).

Names, labels and their meaning are listed in docs/metrics.md.

What it costs: with no ``PoolMetrics`` alive, a request pays one test of a global
and each attempt one ``is None`` test (``failover_plan``); ``next()`` and
``acquire()`` are untouched.  A recorded request buffers its attempts (a clock
read at each end) and folds them into the counts under one lock when it ends
(``benchmarks/metrics_cost.py`` measures both).  With ``OpenTelemetryMetrics``
attached, a request appends its histogram measurements to a queue; the SDK's
record, several microseconds each, runs when the SDK collects.
"""

from __future__ import annotations

import bisect
import collections
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import _failover, _prometheus
from ._endpoint import GonkaEndpoint, redact

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11+

__all__ = ["ATTEMPT_BUCKETS", "LATENCY_BUCKETS", "OpenTelemetryMetrics", "PoolMetrics", "PrometheusCollector"]

log = logging.getLogger("gonka_pool.metrics")

# Seconds.  From a node answering headers in milliseconds to a whole non-streamed
# generation of minutes: the transports settle an attempt when its headers arrive.
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Requests whose histogram measurements OpenTelemetryMetrics keeps for the next
# collection (a few hundred bytes each); past it, each request records one kept.
_PENDING_LIMIT = 16384
# Attempts per request: 1 is the healthy case; attempts=None stops at every node
# tried or three timeouts.
ATTEMPT_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 5, 6, 8, 12, 16, 32)

# An attempt's outcome, and a request's.
ANSWER, FAILURE = "answer", "failure"
ANSWERED, FAILED, ABANDONED = "answered", "failed", "abandoned"


class _Histogram:
    """Bucket counts (not cumulative; the last is +Inf), sum and count."""

    __slots__ = ("bounds", "buckets", "total", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs, as Prometheus writes them."""
        pairs, running = [], 0
        for bound, count in zip([*map(_le, self.bounds), "+Inf"], self.buckets, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


def _le(bound: float) -> str:
    return repr(float(bound))


class _Node:
    """One node's counts."""

    __slots__ = ("requests", "answers", "failures", "cooldowns", "latency")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.requests = 0
        self.answers = 0
        self.failures: dict[tuple[str, str], int] = {}  # (reason, kind) -> count
        self.cooldowns = 0
        self.latency = {ANSWER: _Histogram(bounds), FAILURE: _Histogram(bounds)}


def _kind(verdict: tuple[Any, float, str, bool]) -> str:
    """What the failover loop did about a failure: a cooldown for an ``error`` or a
    ``timeout``, a short rest for ``load``, nothing for ``pass``."""
    cooldown, _, _, slow = verdict
    if cooldown is _failover.PASS:
        return "pass"
    if cooldown is _failover.LOAD:
        return "load"
    return "timeout" if slow else "error"


class _Request:
    """What one request's attempts were, kept by the thread (or task) driving it
    and folded into the counts once, when it ends: one lock per request."""

    __slots__ = ("metrics", "node", "started", "records")

    def __init__(self, metrics: PoolMetrics) -> None:
        self.metrics = metrics
        self.node: GonkaEndpoint | None = None  # the attempt without a verdict yet
        self.started = 0.0
        # (node, ANSWER / FAILURE / None for no verdict, reason, kind, entered, seconds)
        self.records: list[tuple[GonkaEndpoint, str | None, str, str, bool, float]] = []

    def attempt(self, node: GonkaEndpoint) -> None:
        self.node = node
        self.started = time.perf_counter()

    def answered(self) -> None:
        if self.node is not None:
            self.records.append((self.node, ANSWER, "", "", False, time.perf_counter() - self.started))
            self.node = None

    def failed(self, verdict: tuple[Any, float, str, bool], entered: bool) -> None:
        if self.node is not None:
            seconds = time.perf_counter() - self.started
            self.records.append((self.node, FAILURE, verdict[2], _kind(verdict), entered, seconds))
            self.node = None

    def done(self) -> None:
        if self.node is not None:
            # It ended without a verdict on its node: the caller's error, a
            # cancellation, a driver that stopped.  Sent, neither answer nor failure.
            self.records.append((self.node, None, "", "", False, 0.0))
            self.node = None
        if self.records:
            self.metrics._fold(self.records)


class PoolMetrics:
    """Counts what the failover loop does with ``pool`` until ``close()``; the
    exporters (``PrometheusCollector``, ``OpenTelemetryMetrics``) label them with
    ``name``.  One per pool.  A node's counts stay while this lives, after an
    ``update()`` drops it too (counters never go back)."""

    def __init__(self, pool: Any, *, name: str = "default") -> None:
        for method in ("acquire", "snapshot"):
            if not callable(getattr(pool, method, None)):
                raise TypeError(f"pool must be an EndpointPool, not {type(pool).__name__}")
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty str (the pool label)")
        self.pool = pool
        self.name = name
        self._lock = threading.Lock()
        self._nodes: dict[GonkaEndpoint, _Node] = {}
        self._requests = {outcome: _Histogram(ATTEMPT_BUCKETS) for outcome in (ANSWERED, FAILED, ABANDONED)}
        self._closed = False
        _watch(self)

    def close(self) -> None:
        """Stop counting (the counts so far stay readable); a no-op when closed."""
        if not self._closed:
            self._closed = True
            _unwatch(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PoolMetrics({self.pool!r}, name={self.name!r}{', closed' if self._closed else ''})"

    def _plan(
        self,
        pool: Any,
        attempts: int | None,
        judge_error: Callable[[Exception], _failover.Verdict],
        judge_result: Callable[[Any], _failover.Verdict],
        expires: float | None,
    ) -> Generator[_failover.Step, Any, Any]:
        request = _Request(self)
        try:
            return (yield from _failover._failover_loop(pool, attempts, judge_error, judge_result, expires, request))
        finally:
            try:
                request.done()
            except Exception:  # counting must never fail a request
                log.debug("gonka_pool.metrics: a request's counts were lost", exc_info=True)

    def _fold(self, records: list[tuple[GonkaEndpoint, str | None, str, str, bool, float]]) -> None:
        last = records[-1][1]
        outcome = ANSWERED if last == ANSWER else FAILED if last == FAILURE else ABANDONED
        with self._lock:
            nodes = self._nodes
            for node, result, reason, kind, entered, seconds in records:
                counts = nodes.get(node)
                if counts is None:
                    counts = nodes[node] = _Node(LATENCY_BUCKETS)
                counts.requests += 1
                if result is None:
                    continue
                if result == ANSWER:
                    counts.answers += 1
                else:
                    key = (reason, kind)
                    counts.failures[key] = counts.failures.get(key, 0) + 1
                    counts.cooldowns += entered
                counts.latency[result].observe(seconds)
            self._requests[outcome].observe(len(records))
        for sink in _otel_sinks:
            sink._record(self, records, outcome)

    def _read(self) -> tuple[list[tuple[GonkaEndpoint, _Node]], dict[str, _Histogram], tuple[Any, ...]]:
        """Copies of the counts and the pool's snapshot, for an exporter."""
        snapshot = self.pool.snapshot()
        with self._lock:
            nodes = []
            for node, counts in self._nodes.items():
                copy = _Node(LATENCY_BUCKETS)
                copy.requests, copy.answers, copy.cooldowns = counts.requests, counts.answers, counts.cooldowns
                copy.failures = dict(counts.failures)
                for outcome, histogram in counts.latency.items():
                    copy.latency[outcome] = _copy(histogram)
                nodes.append((node, copy))
            requests = {outcome: _copy(histogram) for outcome, histogram in self._requests.items()}
        return nodes, requests, snapshot


def _copy(histogram: _Histogram) -> _Histogram:
    copy = _Histogram(histogram.bounds)
    copy.buckets, copy.total, copy.count = list(histogram.buckets), histogram.total, histogram.count
    return copy


# -- which pools are watched: what _failover.recorder dispatches on ---------------------

# id(pool) -> its PoolMetrics; replaced whole under _watch_lock, so the request path
# reads it without a lock.  A PoolMetrics holds its pool, so the id is not reused
# while the entry lives.
_watched: dict[int, PoolMetrics] = {}
_watch_lock = threading.Lock()
_otel_sinks: tuple[_Instruments, ...] = ()  # the meters with a live exporter


class _Recorder:
    """What ``_failover.recorder`` points to while some pool is watched."""

    def plan(
        self,
        pool: Any,
        attempts: int | None,
        judge_error: Callable[[Exception], _failover.Verdict],
        judge_result: Callable[[Any], _failover.Verdict],
        expires: float | None,
    ) -> Generator[_failover.Step, Any, Any]:
        metrics = _watched.get(id(pool))
        if metrics is None:
            return _failover._failover_loop(pool, attempts, judge_error, judge_result, expires, None)
        return metrics._plan(pool, attempts, judge_error, judge_result, expires)


_RECORDER = _Recorder()


def _watch(metrics: PoolMetrics) -> None:
    global _watched
    with _watch_lock:
        other = _watched.get(id(metrics.pool))
        if other is not None:
            raise ValueError(f"{metrics.pool!r} is already counted by {other!r}: one PoolMetrics per pool")
        _watched = {**_watched, id(metrics.pool): metrics}
        _failover.recorder = _RECORDER


def _unwatch(metrics: PoolMetrics) -> None:
    global _watched
    with _watch_lock:
        if _watched.get(id(metrics.pool)) is metrics:
            _watched = {key: value for key, value in _watched.items() if value is not metrics}
        if not _watched:
            _failover.recorder = None


def _sources(chosen: tuple[PoolMetrics, ...]) -> Iterable[PoolMetrics]:
    """The ``PoolMetrics`` an exporter reads: those it was given, else every one
    counting now."""
    return chosen if chosen else list(_watched.values())


def _check_sources(metrics: tuple[object, ...]) -> tuple[PoolMetrics, ...]:
    for item in metrics:
        if not isinstance(item, PoolMetrics):
            raise TypeError(f"expected PoolMetrics, not {type(item).__name__}")
    return metrics  # type: ignore[return-value]


def _node_labels(metrics: PoolMetrics, node: GonkaEndpoint) -> dict[str, str]:
    return {"pool": metrics.name, "node": redact(node.base_url), "address": node.address}


# -- Prometheus -------------------------------------------------------------------------


class PrometheusCollector:
    """A ``prometheus_client`` collector of ``metrics`` (every ``PoolMetrics`` of
    the process when none are given): ``REGISTRY.register(PrometheusCollector())``.
    Needs ``prometheus-client`` (the ``prometheus`` extra)."""

    def __init__(self, *metrics: PoolMetrics) -> None:
        import prometheus_client.core  # noqa: F401 - fail here, not at the first scrape

        self._chosen = _check_sources(metrics)

    def describe(self) -> list[Any]:
        # Names only: the registry checks them for duplicates at register().
        return list(_prometheus.families().values())

    def collect(self) -> Iterator[Any]:
        families = _prometheus.families()
        for metrics in _sources(self._chosen):
            _prometheus.add(families, metrics.name, *metrics._read())
        yield from families.values()


# -- OpenTelemetry ------------------------------------------------------------------------


class OpenTelemetryMetrics:
    """``metrics`` (every ``PoolMetrics`` of the process when none are given) as
    OpenTelemetry instruments of the meter ``gonka_pool`` of ``meter_provider``
    (the global one by default).  Counters and gauges are observable, read when the
    SDK collects.  The two histograms' measurements are kept by each request (with
    the context it ended in, for exemplars) and recorded by the collection that
    follows, before the SDK reads the histograms.  ``close()`` records what is kept
    and stops both (the API cannot remove an instrument).  Needs
    ``opentelemetry-api`` (the ``otel`` extra) and an SDK to export anything."""

    def __init__(self, *metrics: PoolMetrics, meter_provider: Any = None) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import metrics as otel

        self._chosen = _check_sources(metrics)
        provider = otel.get_meter_provider() if meter_provider is None else meter_provider
        meter = provider.get_meter("gonka_pool")
        global _otel_sinks
        with _watch_lock:
            instruments = _meters.get(id(meter))
            if instruments is None:
                instruments = _meters[id(meter)] = _Instruments(meter, otel.Observation, otel_context.get_current)
            instruments.exporters = (*instruments.exporters, self)
            if instruments not in _otel_sinks:
                _otel_sinks = (*_otel_sinks, instruments)
        self._instruments = instruments

    def close(self) -> None:
        """Stop recording and observing for this exporter; a no-op when closed."""
        global _otel_sinks
        instruments = self._instruments
        instruments._flush()  # what was kept while it was open reaches the next collection
        with _watch_lock:
            instruments.exporters = tuple(other for other in instruments.exporters if other is not self)
            if not instruments.exporters:
                _otel_sinks = tuple(other for other in _otel_sinks if other is not instruments)

    def __repr__(self) -> str:
        return f"OpenTelemetryMetrics({', '.join(map(repr, self._chosen)) or 'every PoolMetrics'})"


class _Instruments:
    """One meter's instruments and the exporters alive on it.  Created once per
    meter: an SDK asked again for an instrument of the same name returns the first
    one, with the first one's callbacks, so a second exporter on one meter shares
    these rather than creating its own."""

    def __init__(self, meter: Any, observation: Any, context: Callable[[], Any]) -> None:
        self.exporters: tuple[OpenTelemetryMetrics, ...] = ()
        self._observation = observation
        self._context = context
        # Requests' histogram measurements not yet recorded in the SDK: (metrics,
        # records, outcome, context).  deque's append and popleft are atomic.
        self._pending: collections.deque[
            tuple[PoolMetrics, list[tuple[GonkaEndpoint, str | None, str, str, bool, float]], str, Any]
        ] = collections.deque()
        # Attribute dicts, one per (pool, node[, outcome]), so that recording builds none.
        self._attributes: dict[tuple[int, GonkaEndpoint, str], dict[str, str]] = {}
        create = {
            "counter": meter.create_observable_counter,
            "gauge": meter.create_observable_gauge,
            "updown": meter.create_observable_up_down_counter,
        }
        self.observable = [
            create[kind](name, callbacks=[self._callback(name)], unit=unit, description=text)
            for name, unit, text, kind in _OBSERVABLE
        ]
        self.latency = _histogram(
            meter,
            "gonka_pool.node.attempt.duration",
            "s",
            "Attempt latency: from the pick to the verdict (a response's headers)",
            LATENCY_BUCKETS,
        )
        self.attempts = _histogram(
            meter, "gonka_pool.request.attempts", "{attempt}", "Attempts per request, by how it ended", ATTEMPT_BUCKETS
        )

    def _sources(self) -> list[PoolMetrics]:
        """What the live exporters read, each ``PoolMetrics`` once."""
        chosen: dict[int, PoolMetrics] = {}
        for exporter in self.exporters:
            if not exporter._chosen:
                return list(_watched.values())
            chosen.update((id(metrics), metrics) for metrics in exporter._chosen)
        return list(chosen.values())

    def _covers(self, metrics: PoolMetrics) -> bool:
        return any(not e._chosen or any(metrics is m for m in e._chosen) for e in self.exporters)

    def _labels(self, metrics: PoolMetrics, node: GonkaEndpoint, outcome: str = "") -> dict[str, str]:
        key = (id(metrics), node, outcome)
        labels = self._attributes.get(key)
        if labels is None:
            if len(self._attributes) > 65536:  # bounded: memberships change over time
                self._attributes = {}
            labels = _node_labels(metrics, node)
            if outcome:
                labels["outcome"] = outcome
            self._attributes[key] = labels
        return labels

    def _record(
        self, metrics: PoolMetrics, records: list[tuple[GonkaEndpoint, str | None, str, str, bool, float]], outcome: str
    ) -> None:
        """Keep a request's histogram measurements for the next collection: an
        append (and a context read, for the exemplars), not the SDK's records."""
        if not self._covers(metrics):
            return
        pending = self._pending
        pending.append((metrics, records, outcome, self._context()))
        if len(pending) > _PENDING_LIMIT:
            # Nobody collects often enough (or at all): each request past the limit
            # records one kept request too, so the backlog never grows, and no
            # request ever pays for more than two.
            self._flush(1)

    def _flush(self, limit: int | None = None) -> None:
        """Record the kept measurements (``limit`` requests' at most) in the SDK's
        histograms, with the context each request ended in."""
        pending, latency, attempts, labels = self._pending, self.latency.record, self.attempts.record, self._labels
        count = len(pending) if limit is None else limit
        for _ in range(count):
            try:
                metrics, records, outcome, context = pending.popleft()
            except IndexError:  # another thread flushed them
                return
            try:
                for node, result, _, _, _, seconds in records:
                    if result is not None:
                        latency(seconds, labels(metrics, node, result), context)
                attempts(len(records), {"pool": metrics.name, "outcome": outcome}, context)
            except Exception:  # an exporter's failure must not lose the others' measurements
                log.debug("gonka_pool.metrics: a request's histogram measurements were lost", exc_info=True)

    def _callback(self, name: str) -> Callable[[Any], Iterable[Any]]:
        def observe(options: Any) -> Iterable[Any]:
            # The SDK runs every callback before it collects the synchronous
            # instruments, so what is recorded here is in this collection.
            self._flush()
            return list(self._observe(name))

        return observe

    def _observe(self, name: str) -> Iterator[Any]:
        observation = self._observation
        field = _COUNTED.get(name)
        for metrics in self._sources():
            nodes, _, snapshot = metrics._read()
            if field == "failures":
                for node, counts in nodes:
                    labels = self._labels(metrics, node)
                    for (reason, kind), count in sorted(counts.failures.items()):
                        yield observation(count, {**labels, "reason": reason, "kind": kind})
            elif field is not None:
                for node, counts in nodes:
                    yield observation(getattr(counts, field), self._labels(metrics, node))
            else:
                read = _READ_FROM_STATE[name]
                for state in snapshot:
                    value = read(state)
                    if value is not None:
                        yield observation(value, self._labels(metrics, state.endpoint))


# id(meter) -> its instruments, kept for the process's life, as the SDK keeps them.
_meters: dict[int, _Instruments] = {}

# The observable instruments: name, unit, description, kind.
_OBSERVABLE = [
    ("gonka_pool.node.requests", "{attempt}", "Attempts sent to the node (counted as they end)", "counter"),
    ("gonka_pool.node.answers", "{attempt}", "Attempts whose response was the request's answer", "counter"),
    ("gonka_pool.node.failures", "{attempt}", "Attempts judged the node's fault, by reason and kind", "counter"),
    ("gonka_pool.node.cooldowns", "{cooldown}", "Cooldowns the failover loop's failures started", "counter"),
    ("gonka_pool.node.available", "1", "1 when the node is selectable, 0 while it cools", "gauge"),
    ("gonka_pool.node.cooldown.remaining", "s", "Seconds of cooldown left (inf until cleared)", "gauge"),
    ("gonka_pool.node.in_flight", "{request}", "Requests to the node in flight (leases out)", "updown"),
    ("gonka_pool.node.consecutive_failures", "{failure}", "Cooldowns entered since its last success", "gauge"),
    ("gonka_pool.node.latency.ewma", "s", "The pool's peak-EWMA latency of the node", "gauge"),
]


# The observable instruments counted here (-> the _Node field), and those read from
# pool.snapshot()'s EndpointState.
_COUNTED = {
    "gonka_pool.node.requests": "requests",
    "gonka_pool.node.answers": "answers",
    "gonka_pool.node.failures": "failures",
    "gonka_pool.node.cooldowns": "cooldowns",
}
_READ_FROM_STATE: dict[str, Callable[[Any], float | None]] = {
    "gonka_pool.node.available": lambda state: 1.0 if state.available else 0.0,
    "gonka_pool.node.cooldown.remaining": lambda state: float(state.cooldown_remaining),
    "gonka_pool.node.in_flight": lambda state: float(state.in_flight),
    "gonka_pool.node.consecutive_failures": lambda state: float(state.consecutive_failures),
    "gonka_pool.node.latency.ewma": lambda state: None if state.latency is None else float(state.latency),
}


def _histogram(meter: Any, name: str, unit: str, text: str, bounds: tuple[float, ...]) -> Any:
    try:  # the bucket advice arrived in opentelemetry-api 1.23
        return meter.create_histogram(
            name, unit=unit, description=text, explicit_bucket_boundaries_advisory=[float(b) for b in bounds]
        )
    except TypeError:  # pragma: no cover - older opentelemetry-api
        return meter.create_histogram(name, unit=unit, description=text)
