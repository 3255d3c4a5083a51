"""gonka_pool.metrics: what the failover loop counts per node and per request, and
what the two exporters (a prometheus_client collector, OpenTelemetry instruments)
show of it and of the pool's own state, against local HTTP nodes, on both cores.

Each test reads its own ``PoolMetrics`` through exporters given it alone, so tests
running at once (test-parallel) never read each other's pools.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from gonka_pool import GonkaEndpoint, _failover
from gonka_pool.metrics import ATTEMPT_BUCKETS, LATENCY_BUCKETS, OpenTelemetryMetrics, PoolMetrics, PrometheusCollector
from gonka_pool.testing import free_port

httpx2 = pytest.importorskip("httpx2")
prometheus_client = pytest.importorskip("prometheus_client")
pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

from gonka_pool.httpx2 import AsyncPoolTransport, PoolTransport  # noqa: E402

pytestmark = pytest.mark.thread_unsafe(
    reason="each test counts its own requests on a pool that a parallel run's threads would share"
)

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def watched(pool_impl, make_local_node):
    """(pool of an answering node and a 503 node, starting at the 503 one, its
    PoolMetrics, a registry with its collector)."""
    bad = make_local_node("bad", "unavailable", retry_after="")
    good = make_local_node("good")
    pool = pool_impl.EndpointPool([GonkaEndpoint(bad.url, "bad"), GonkaEndpoint(good.url, "good")], start=0)
    metrics = PoolMetrics(pool, name="chat")
    registry = prometheus_client.CollectorRegistry()
    registry.register(PrometheusCollector(metrics))
    yield pool, metrics, registry
    metrics.close()


def node_labels(pool, i, **extra):
    node = pool.endpoints[i]
    return {"pool": "chat", "node": node.base_url, "address": node.address, **extra}


def value(registry, name, labels):
    return registry.get_sample_value(name, labels)


def post(pool, n=1, **options):
    with httpx2.Client(transport=PoolTransport(pool, **options), base_url="http://gonka") as client:
        return [client.post("/chat/completions", json=BODY).status_code for _ in range(n)]


def test_a_transport_request_counts_each_attempt_its_answer_and_the_failure_by_reason(watched):
    pool, _, registry = watched
    assert post(pool) == [200]  # the 503 node first, then the answer
    assert value(registry, "gonka_pool_node_requests_total", node_labels(pool, 0)) == 1
    assert value(registry, "gonka_pool_node_requests_total", node_labels(pool, 1)) == 1
    assert value(registry, "gonka_pool_node_answers_total", node_labels(pool, 0)) == 0
    assert value(registry, "gonka_pool_node_answers_total", node_labels(pool, 1)) == 1
    failed = node_labels(pool, 0, reason="HTTP 503", kind="error")
    assert value(registry, "gonka_pool_node_failures_total", failed) == 1
    assert value(registry, "gonka_pool_node_cooldowns_total", node_labels(pool, 0)) == 1
    assert value(registry, "gonka_pool_node_cooldowns_total", node_labels(pool, 1)) == 0


def test_a_failure_on_a_node_already_cooling_counts_as_a_failure_but_starts_no_cooldown(watched):
    pool, _, registry = watched
    pool.mark_failed(0, 30)  # every node cooling: the pick falls back to node 0, then node 1
    pool.mark_failed(1, 60)
    assert post(pool) == [200]
    assert value(registry, "gonka_pool_node_failures_total", node_labels(pool, 0, reason="HTTP 503", kind="error")) == 1
    assert value(registry, "gonka_pool_node_cooldowns_total", node_labels(pool, 0)) == 0


def test_attempt_latency_is_a_histogram_per_node_and_outcome(watched):
    pool, _, registry = watched
    post(pool, 3)
    answers = node_labels(pool, 1, outcome="answer")
    assert value(registry, "gonka_pool_node_attempt_seconds_count", answers) == 3
    assert 0 < value(registry, "gonka_pool_node_attempt_seconds_sum", answers) < 10
    inf = value(registry, "gonka_pool_node_attempt_seconds_bucket", {**answers, "le": "+Inf"})
    assert inf == 3
    assert value(registry, "gonka_pool_node_attempt_seconds_bucket", {**answers, "le": repr(LATENCY_BUCKETS[-1])}) == 3
    failures = node_labels(pool, 0, outcome="failure")
    assert value(registry, "gonka_pool_node_attempt_seconds_count", failures) == 1


def test_attempts_per_request_is_a_histogram_of_each_request_once_by_how_it_ended(watched):
    pool, _, registry = watched
    post(pool, 3)  # the first fails over once; the 503 node then cools
    answered = {"pool": "chat", "outcome": "answered"}
    assert value(registry, "gonka_pool_request_attempts_count", answered) == 3
    assert value(registry, "gonka_pool_request_attempts_sum", answered) == 4
    assert value(registry, "gonka_pool_request_attempts_bucket", {**answered, "le": "1.0"}) == 2
    assert value(registry, "gonka_pool_request_attempts_bucket", {**answered, "le": "2.0"}) == 3
    assert (
        value(registry, "gonka_pool_request_attempts_bucket", {**answered, "le": repr(float(ATTEMPT_BUCKETS[-1]))}) == 3
    )


def test_a_request_whose_every_node_failed_ends_failed(pool_impl, make_local_node):
    bad = make_local_node("bad", "unavailable", retry_after="")
    refusing = GonkaEndpoint(f"http://127.0.0.1:{free_port()}", "x")
    pool = pool_impl.EndpointPool([refusing, GonkaEndpoint(bad.url, "bad")], start=0)
    with PoolMetrics(pool, name="chat") as metrics:
        registry = prometheus_client.CollectorRegistry()
        registry.register(PrometheusCollector(metrics))
        assert post(pool) == [503]
        failed = {"pool": "chat", "outcome": "failed"}
        assert value(registry, "gonka_pool_request_attempts_count", failed) == 1
        assert value(registry, "gonka_pool_request_attempts_sum", failed) == 2
        refused = node_labels(pool, 0, reason="ConnectError", kind="error")
        assert value(registry, "gonka_pool_node_failures_total", refused) == 1


def test_a_429_without_retry_after_is_a_load_failure_that_starts_no_cooldown(pool_impl, make_local_node):
    busy = make_local_node("busy", "rate-limited", retry_after="")
    good = make_local_node("good")
    pool = pool_impl.EndpointPool([GonkaEndpoint(busy.url, "busy"), GonkaEndpoint(good.url, "good")], start=0)
    with PoolMetrics(pool, name="chat") as metrics:
        registry = prometheus_client.CollectorRegistry()
        registry.register(PrometheusCollector(metrics))
        assert post(pool) == [200]
        labels = node_labels(pool, 0)
        assert value(registry, "gonka_pool_node_failures_total", {**labels, "reason": "HTTP 429", "kind": "load"}) == 1
        assert value(registry, "gonka_pool_node_cooldowns_total", labels) == 0


def test_pool_call_counts_timeouts_by_kind_and_an_error_not_the_nodes_as_abandoned(pool_impl):
    pool = pool_impl.make(2)
    with PoolMetrics(pool, name="chat") as metrics:
        registry = prometheus_client.CollectorRegistry()
        registry.register(PrometheusCollector(metrics))
        outcomes = iter([TimeoutError("stalled"), "answer"])

        def fn(endpoint):
            outcome = next(outcomes)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        assert pool.call(fn) == "answer"
        stalled = node_labels(pool, 0, reason="TimeoutError", kind="timeout")
        assert value(registry, "gonka_pool_node_failures_total", stalled) == 1
        with pytest.raises(KeyError):
            pool.call(lambda endpoint: {}["caller's bug"])
        abandoned = {"pool": "chat", "outcome": "abandoned"}
        assert value(registry, "gonka_pool_request_attempts_count", abandoned) == 1
        # Sent, neither answer nor failure: requests - answers - failures.
        requests = sum(value(registry, "gonka_pool_node_requests_total", node_labels(pool, i)) for i in range(2))
        answers = sum(value(registry, "gonka_pool_node_answers_total", node_labels(pool, i)) for i in range(2))
        assert (requests, answers) == (3, 1)


def test_the_async_transport_is_counted_too(watched):
    pool, _, registry = watched

    async def main():
        async with httpx2.AsyncClient(transport=AsyncPoolTransport(pool), base_url="http://gonka") as client:
            return [(await client.post("/chat/completions", json=BODY)).status_code for _ in range(2)]

    assert asyncio.run(main()) == [200, 200]
    assert value(registry, "gonka_pool_node_answers_total", node_labels(pool, 1)) == 2
    assert value(registry, "gonka_pool_request_attempts_count", {"pool": "chat", "outcome": "answered"}) == 2


def test_the_gauges_read_the_pools_own_state_at_collection(watched):
    pool, _, registry = watched
    pool.mark_failed(0, 30)
    lease = pool.acquire()  # node 1, the one available
    try:
        assert value(registry, "gonka_pool_node_available", node_labels(pool, 0)) == 0
        assert value(registry, "gonka_pool_node_available", node_labels(pool, 1)) == 1
        assert (
            25 < value(registry, "gonka_pool_node_cooldown_remaining_seconds", node_labels(pool, 0)) <= 30.1
        )  # + a tick
        assert value(registry, "gonka_pool_node_consecutive_failures", node_labels(pool, 0)) == 1
        assert value(registry, "gonka_pool_node_in_flight", node_labels(pool, 1)) == 1
        assert value(registry, "gonka_pool_node_latency_ewma_seconds", node_labels(pool, 1)) is None
    finally:
        lease.success()
    assert value(registry, "gonka_pool_node_in_flight", node_labels(pool, 1)) == 0
    assert value(registry, "gonka_pool_node_latency_ewma_seconds", node_labels(pool, 1)) > 0
    pool.mark_failed(0, float("inf"))
    assert value(registry, "gonka_pool_node_cooldown_remaining_seconds", node_labels(pool, 0)) == float("inf")


def otel_points(reader):
    """{(instrument name, frozenset of attributes): data point} of one collection."""
    points = {}
    data = reader.get_metrics_data()  # None when nothing was recorded or observed
    for resource in [] if data is None else data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    points[metric.name, frozenset(point.attributes.items())] = point
    return points


def test_opentelemetry_exports_the_same_counts_gauges_and_both_histograms(watched):
    pool, metrics, _ = watched
    reader = InMemoryMetricReader()
    otel = OpenTelemetryMetrics(metrics, meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        post(pool, 2)
        points = otel_points(reader)
    finally:
        otel.close()
    bad, good = (frozenset(node_labels(pool, i).items()) for i in range(2))
    assert points["gonka_pool.node.requests", good].value == 2
    assert points["gonka_pool.node.answers", good].value == 2
    assert points["gonka_pool.node.failures", bad | {("reason", "HTTP 503"), ("kind", "error")}].value == 1
    assert points["gonka_pool.node.cooldowns", bad].value == 1
    assert points["gonka_pool.node.available", bad].value == 0
    assert points["gonka_pool.node.in_flight", good].value == 0
    latency = points["gonka_pool.node.attempt.duration", good | {("outcome", "answer")}]
    assert latency.count == 2
    assert list(latency.explicit_bounds) == list(LATENCY_BUCKETS)
    attempts = points["gonka_pool.request.attempts", frozenset({("pool", "chat"), ("outcome", "answered")})]
    assert (attempts.count, attempts.sum) == (2, 3)


def test_a_closed_opentelemetry_exporter_records_and_observes_nothing(watched):
    pool, metrics, _ = watched
    reader = InMemoryMetricReader()
    otel = OpenTelemetryMetrics(metrics, meter_provider=MeterProvider(metric_readers=[reader]))
    otel.close()
    post(pool)
    assert otel_points(reader) == {}


def test_an_exporter_given_pool_metrics_shows_only_those(pool_impl):
    mine, other = pool_impl.make(1), pool_impl.make(1)
    with PoolMetrics(mine, name="mine") as metrics, PoolMetrics(other, name="other"):
        registry = prometheus_client.CollectorRegistry()
        registry.register(PrometheusCollector(metrics))
        text = prometheus_client.generate_latest(registry).decode()
    assert 'pool="mine"' in text
    assert 'pool="other"' not in text


def test_a_pool_not_watched_is_not_counted_while_another_is(pool_impl):
    watched_pool, other = pool_impl.make(1), pool_impl.make(1)
    with PoolMetrics(watched_pool, name="chat") as metrics:
        other.call(lambda endpoint: None)
        watched_pool.call(lambda endpoint: None)
        nodes, requests, _ = metrics._read()
    assert [node for node, _ in nodes] == [watched_pool.endpoints[0]]
    assert requests["answered"].count == 1


def test_a_closed_pool_metrics_counts_nothing_more_and_keeps_what_it_counted(pool_impl):
    pool = pool_impl.make(1)
    metrics = PoolMetrics(pool, name="chat")
    pool.call(lambda endpoint: None)
    metrics.close()
    pool.call(lambda endpoint: None)
    assert metrics.closed
    assert metrics._read()[1]["answered"].count == 1
    metrics.close()  # again: a no-op


def test_one_pool_metrics_per_pool(pool_impl):
    pool = pool_impl.make(1)
    with PoolMetrics(pool), pytest.raises(ValueError, match="one PoolMetrics per pool"):
        PoolMetrics(pool)
    PoolMetrics(pool).close()  # the first one closed: a new one may count


def test_with_no_pool_metrics_the_failover_loop_has_no_recorder(pool_impl):
    # Reads the process-wide recorder, which other tests' PoolMetrics set (pytestmark).
    assert _failover.recorder is None
    with PoolMetrics(pool_impl.make(1)):
        assert _failover.recorder is not None
    assert _failover.recorder is None


@pytest.mark.parametrize(
    ("args", "error"),
    [((object(),), TypeError), ((None,), TypeError)],
)
def test_pool_metrics_refuses_what_is_not_a_pool(args, error):
    with pytest.raises(error, match="EndpointPool"):
        PoolMetrics(*args)


def test_pool_metrics_refuses_an_empty_name(pool_impl):
    with pytest.raises(ValueError, match="name"):
        PoolMetrics(pool_impl.make(1), name="")


def test_the_exporters_refuse_what_is_not_pool_metrics(pool_impl):
    with pytest.raises(TypeError, match="PoolMetrics"):
        PrometheusCollector(pool_impl.make(1))
    with pytest.raises(TypeError, match="PoolMetrics"):
        OpenTelemetryMetrics(pool_impl.make(1), meter_provider=MeterProvider())


def test_importing_gonka_pool_metrics_imports_neither_exporter_library():
    code = (
        "import sys, gonka_pool.metrics; "
        "assert not [m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))], sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_an_exporter_made_after_another_closed_on_the_same_provider_still_reports(watched):
    pool, metrics, _ = watched
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    OpenTelemetryMetrics(metrics, meter_provider=provider).close()
    # The SDK hands the first exporter's instruments back for the same names.
    otel = OpenTelemetryMetrics(metrics, meter_provider=provider)
    try:
        post(pool)
        points = otel_points(reader)
    finally:
        otel.close()
    good = frozenset(node_labels(pool, 1).items())
    assert points["gonka_pool.node.answers", good].value == 1
    assert points["gonka_pool.node.attempt.duration", good | {("outcome", "answer")}].count == 1


def test_two_exporters_on_one_provider_report_a_pool_once(watched):
    pool, metrics, _ = watched
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    first = OpenTelemetryMetrics(metrics, meter_provider=provider)
    second = OpenTelemetryMetrics(metrics, meter_provider=provider)
    try:
        post(pool)
        points = otel_points(reader)
    finally:
        first.close()
        second.close()
    good = frozenset(node_labels(pool, 1).items())
    assert points["gonka_pool.node.attempt.duration", good | {("outcome", "answer")}].count == 1
    assert points["gonka_pool.node.answers", good].value == 1


def test_a_request_keeps_its_histogram_measurements_until_the_next_collection_records_them(watched, monkeypatch):
    # The SDK's synchronous record is most of what OpenTelemetry costs a request
    # (benchmarks/metrics_cost.py): a request only keeps its measurements, and the
    # collection that follows records every one of them before it reads.
    pool, metrics, _ = watched
    reader = InMemoryMetricReader()
    otel = OpenTelemetryMetrics(metrics, meter_provider=MeterProvider(metric_readers=[reader]))
    recorded = []
    try:
        latency = otel._instruments.latency
        record = latency.record
        monkeypatch.setattr(latency, "record", lambda *args: recorded.append(args) or record(*args))
        post(pool, 3)
        assert recorded == []
        points = otel_points(reader)
        assert len(recorded) == 4  # a failure, then three answers
        good = frozenset(node_labels(pool, 1).items())
        assert points["gonka_pool.node.attempt.duration", good | {("outcome", "answer")}].count == 3
        key = ("gonka_pool.request.attempts", frozenset({("pool", "chat"), ("outcome", "answered")}))
        assert (points[key].count, points[key].sum) == (3, 4)
        assert otel_points(reader)[key].count == 3  # recorded once, not again at the next collection
        assert len(recorded) == 4
    finally:
        otel.close()


def test_closing_an_opentelemetry_exporter_records_what_it_kept(watched):
    pool, metrics, _ = watched
    reader = InMemoryMetricReader()
    otel = OpenTelemetryMetrics(metrics, meter_provider=MeterProvider(metric_readers=[reader]))
    post(pool, 2)
    otel.close()
    post(pool)  # after close: not recorded
    points = otel_points(reader)
    good = frozenset(node_labels(pool, 1).items())
    assert points["gonka_pool.node.attempt.duration", good | {("outcome", "answer")}].count == 2


def test_with_no_collection_the_kept_measurements_stay_bounded_and_none_is_lost(watched, monkeypatch):
    from gonka_pool import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "_PENDING_LIMIT", 3)
    pool, metrics, _ = watched
    reader = InMemoryMetricReader()
    otel = OpenTelemetryMetrics(metrics, meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        post(pool, 10)
        assert len(otel._instruments._pending) <= 4
        points = otel_points(reader)
    finally:
        otel.close()
    attempts = points["gonka_pool.request.attempts", frozenset({("pool", "chat"), ("outcome", "answered")})]
    assert (attempts.count, attempts.sum) == (10, 11)


def test_an_attempt_inside_a_sampled_span_is_the_exemplar_of_its_latency(watched):
    # Recorded at collection, with the context the request ended in: the exemplar
    # still points at the trace that made the request.
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace import TracerProvider

    pool, metrics, _ = watched
    reader = InMemoryMetricReader()
    otel = OpenTelemetryMetrics(metrics, meter_provider=MeterProvider(metric_readers=[reader]))
    tracer = TracerProvider().get_tracer("test")
    try:
        post(pool)  # the 503 node cools: the next request answers at once
        otel_points(reader)
        with tracer.start_as_current_span("request") as span:
            post(pool)
        points = otel_points(reader)
    finally:
        otel.close()
    good = frozenset(node_labels(pool, 1).items())
    exemplars = points["gonka_pool.node.attempt.duration", good | {("outcome", "answer")}].exemplars
    assert span.get_span_context().trace_id in {exemplar.trace_id for exemplar in exemplars}
