"""What ``gonka_pool.metrics`` costs the request path: ``next()``, ``pool.call`` of a
function that returns at once, and a request through the httpx2 transport to a
local node (``gonka_pool.testing.LocalNode``), each timed with no ``PoolMetrics``
("off"), with one counting the pool under a registered Prometheus collector
("prom"), and with an OpenTelemetry exporter attached too ("otel": an SDK meter
provider with an in-memory reader), in interleaved rounds; the median of each
round's ratio to "off"; "+collect" adds the collection that follows each otel round
(it records the histogram measurements the requests kept) spread over the round's
calls, which shows where that cost went.  Issue 22's goals: a transport request at most 1.05x with
the OpenTelemetry exporter, ``next()`` 1.00x within noise.

    PYTHONPATH=src python benchmarks/metrics_cost.py --rounds 21
    PYTHONPATH=src GONKA_POOL_NO_EXTENSIONS=1 python benchmarks/metrics_cost.py   # the twin

Needs httpx2, opentelemetry-sdk and prometheus-client.  ``pool.call`` of a no-op
is the worst case, every microsecond of recording shown against next to nothing;
its difference is what a real request pays in absolute terms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import httpx2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from gonka_pool import IMPLEMENTATION, EndpointPool, GonkaEndpoint
from gonka_pool.httpx2 import PoolTransport
from gonka_pool.metrics import OpenTelemetryMetrics, PoolMetrics, PrometheusCollector
from gonka_pool.testing import LocalNode

NEXT_CALLS = 200_000
CALL_CALLS = 10_000
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def per_call(fn, number: int) -> float:
    """Seconds per call of ``fn``, ``number`` calls."""
    start = time.perf_counter()
    fn(number)
    return (time.perf_counter() - start) / number


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--requests", type=int, default=300, help="transport requests per round and setting")
    args = parser.parse_args()

    nodes = [LocalNode(f"node{i}").start() for i in range(2)]
    pool = EndpointPool([GonkaEndpoint(node.url, f"addr{i}") for i, node in enumerate(nodes)])
    client = httpx2.Client(transport=PoolTransport(pool), base_url="http://gonka")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    registry.register(PrometheusCollector())

    # fmt: off
    def next_loop(number: int) -> None:
        nxt = pool.next
        for _ in range(number // 10):
            nxt(); nxt(); nxt(); nxt(); nxt(); nxt(); nxt(); nxt(); nxt(); nxt()  # noqa: E702
    # fmt: on

    def call_loop(number: int) -> None:
        call, fn = pool.call, _no_op
        for _ in range(number):
            call(fn)

    def request_loop(number: int) -> None:
        post = client.post
        for _ in range(number):
            post("/chat/completions", json=BODY).close()

    tests = {
        "next()": (next_loop, NEXT_CALLS),
        "pool.call(no-op)": (call_loop, CALL_CALLS),
        "transport request": (request_loop, args.requests),
    }
    request_loop(50)  # warm: connections, imports, the node's threads
    settings = ("off", "prom", "otel")
    times: dict[tuple[str, str], list[float]] = {(name, s): [] for name in tests for s in settings}
    collected: dict[str, list[float]] = {name: [] for name in tests}
    for round_number in range(args.rounds):
        order = settings if round_number % 2 == 0 else settings[::-1]
        for name, (loop, number) in tests.items():
            for setting in order:
                metrics = PoolMetrics(pool, name="bench") if setting != "off" else None
                otel = OpenTelemetryMetrics(meter_provider=provider) if setting == "otel" else None
                try:
                    times[name, setting].append(per_call(loop, number))
                    if otel is not None:
                        # The collection that records what the round's requests kept.
                        start = time.perf_counter()
                        reader.get_metrics_data()
                        collected[name].append(times[name, setting][-1] + (time.perf_counter() - start) / number)
                finally:
                    if otel is not None:
                        otel.close()
                    if metrics is not None:
                        metrics.close()
    # What was recorded really reaches both exporters.
    assert reader.get_metrics_data() is not None
    assert b"gonka_pool_node_requests_total" in generate_latest(registry)
    client.close()
    for node in nodes:
        node.stop()

    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"Python {sys.version.split()[0]}, GIL {'on' if gil else 'off'}, core {IMPLEMENTATION}, {args.rounds} rounds")
    print(f"{'':20} {'off':>12} {'prom':>12} {'otel':>12} {'prom/off':>9} {'otel/off':>9} {'+collect/off':>13}")
    for name in tests:
        off, prom, otel_times = (times[name, setting] for setting in settings)
        ratios = [
            statistics.median(b / a for a, b in zip(off, on, strict=True)) for on in (prom, otel_times, collected[name])
        ]
        shown = "".join(f" {_show(statistics.median(t)):>12}" for t in (off, prom, otel_times))
        print(f"{name:20}{shown} {ratios[0]:>8.3f}x {ratios[1]:>8.3f}x {ratios[2]:>12.3f}x")
    print("(medians of the rounds; each ratio the median of the rounds' ratios to off; +collect: otel with the")
    print(" time of one collection per round spread over the round's calls, which records what the requests kept)")
    return 0


def _no_op(endpoint: GonkaEndpoint) -> None:
    return None


def _show(seconds: float) -> str:
    return f"{seconds * 1e9:.1f} ns" if seconds < 1e-6 else f"{seconds * 1e6:.2f} us"


if __name__ == "__main__":
    sys.exit(main())
