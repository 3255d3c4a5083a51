"""``gonka_pool.metrics.PrometheusCollector``'s metric families: what each one is
called and how a ``PoolMetrics``'s counts and its pool's snapshot fill them."""

from __future__ import annotations

from typing import Any

from ._endpoint import redact

_PROMETHEUS_NODE = ("pool", "node", "address")


def families() -> dict[str, Any]:
    """A fresh family of each metric, empty."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    def counter(name: str, text: str, *extra: str) -> Any:
        return CounterMetricFamily(name, text, labels=(*_PROMETHEUS_NODE, *extra))

    def gauge(name: str, text: str) -> Any:
        return GaugeMetricFamily(name, text, labels=_PROMETHEUS_NODE)

    return {
        "requests": counter("gonka_pool_node_requests", "Attempts sent to the node (counted as they end)"),
        "answers": counter("gonka_pool_node_answers", "Attempts whose response was the request's answer"),
        "failures": counter(
            "gonka_pool_node_failures", "Attempts judged the node's fault, by reason and kind", "reason", "kind"
        ),
        "cooldowns": counter("gonka_pool_node_cooldowns", "Cooldowns the failover loop's failures started"),
        "latency": HistogramMetricFamily(
            "gonka_pool_node_attempt_seconds",
            "Attempt latency: from the pick to the verdict (a response's headers)",
            labels=(*_PROMETHEUS_NODE, "outcome"),
        ),
        "attempts": HistogramMetricFamily(
            "gonka_pool_request_attempts", "Attempts per request, by how it ended", labels=("pool", "outcome")
        ),
        "available": gauge("gonka_pool_node_available", "1 when the node is selectable, 0 while it cools"),
        "remaining": gauge(
            "gonka_pool_node_cooldown_remaining_seconds",
            "Seconds of cooldown left (0 available, +Inf until cleared)",
        ),
        "in_flight": gauge("gonka_pool_node_in_flight", "Requests to the node in flight (leases out)"),
        "consecutive": gauge("gonka_pool_node_consecutive_failures", "Cooldowns entered since its last success"),
        "ewma": gauge("gonka_pool_node_latency_ewma_seconds", "The pool's peak-EWMA latency of the node"),
    }


def add(families: dict[str, Any], name: str, nodes: Any, requests: Any, snapshot: Any) -> None:
    """Add one ``PoolMetrics``'s counts (``PoolMetrics._read()``), labelled
    ``pool=name``, to ``families``."""
    for node, counts in nodes:
        labels = [name, redact(node.base_url), node.address]
        families["requests"].add_metric(labels, counts.requests)
        families["answers"].add_metric(labels, counts.answers)
        for (reason, kind), count in sorted(counts.failures.items()):
            families["failures"].add_metric([*labels, reason, kind], count)
        families["cooldowns"].add_metric(labels, counts.cooldowns)
        for outcome, histogram in counts.latency.items():
            if histogram.count:
                families["latency"].add_metric([*labels, outcome], histogram.cumulative(), sum_value=histogram.total)
    for outcome, histogram in requests.items():
        if histogram.count:
            families["attempts"].add_metric([name, outcome], histogram.cumulative(), histogram.total)
    for state in snapshot:
        node = state.endpoint
        labels = [name, redact(node.base_url), node.address]
        families["available"].add_metric(labels, 1.0 if state.available else 0.0)
        families["remaining"].add_metric(labels, state.cooldown_remaining)
        families["in_flight"].add_metric(labels, state.in_flight)
        families["consecutive"].add_metric(labels, state.consecutive_failures)
        if state.latency is not None:
            families["ewma"].add_metric(labels, state.latency)
