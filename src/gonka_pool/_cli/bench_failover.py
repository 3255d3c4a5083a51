"""``python -m gonka_pool bench-failover``: requests lost to bad nodes, fixed cap against
attempts that follow the cost of failure, side by side in one run.

Four OpenAI-compatible nodes on 127.0.0.1 (``LocalNode``): A answers, B is a closed
port (refused at once), C answers 503 with ``Retry-After: 2``, D accepts and never
answers.  Threads share one openai client built by ``gonka_pool.openai.client`` and
send chat completions with a client timeout; each round runs every configuration
once, in turn, on a fresh pool over the same nodes (start="random", as users build
it).  Reported per configuration, over all rounds: requests answered, p50 / p99
latency, attempts per request, and attempts that reached bad nodes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import EndpointPool, GonkaEndpoint
from ..testing import LocalNode, free_port
from .argtypes import at_least, positive_seconds

__all__ = ["main"]

CONFIGS: tuple[tuple[str, int | None], ...] = (
    ("fixed cap: attempts=3", 3),
    ("attempts=None", None),
)


_positive_int = at_least(1)


def _client_timeout(text: str) -> float:
    seconds = positive_seconds(text)
    if seconds >= 60:
        raise argparse.ArgumentTypeError(f"must be under 60 seconds, got {text}")
    return seconds


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--requests",
        type=_positive_int,
        default=240,
        help="chat completions per configuration and round (default: 240)",
    )
    parser.add_argument("--threads", type=_positive_int, default=8, help="threads sharing one client (default: 8)")
    parser.add_argument(
        "--timeout",
        type=_client_timeout,
        default=1.0,
        help="the client timeout in seconds; node D stalls past it (default: 1.0)",
    )
    parser.add_argument(
        "--rounds", type=_positive_int, default=3, help="rounds; each runs every configuration once (default: 3)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    return parser


HELP = "requests lost to bad nodes: fixed attempts against attempts=None"
PARSER_OPTIONS: dict[str, Any] = {
    "description": "Requests lost to bad nodes: the fixed cap of 3 attempts against "
    "attempts=None (every node, at most 3 timeouts), one run, local nodes.",
}


def _run_config(
    nodes: dict[str, LocalNode | str], attempts: int | None, requests: int, threads: int, timeout: float
) -> dict[str, Any]:
    from ..openai import client as openai_client

    endpoints = {
        name: GonkaEndpoint(node if isinstance(node, str) else node.url, f"gonka1{name}")
        for name, node in nodes.items()
    }
    healthy = endpoints["A"]
    pool = EndpointPool(endpoints.values())
    local = threading.local()

    def count_attempt(request: Any, endpoint: GonkaEndpoint) -> None:
        local.attempts += 1
        if endpoint != healthy:
            local.bad += 1

    client = openai_client(pool, attempts=attempts, timeout=timeout, on_request=count_attempt)
    results: list[tuple[bool, float, int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    per_thread = [requests // threads + (1 if k < requests % threads else 0) for k in range(threads)]
    barrier = threading.Barrier(threads)

    def worker(count: int) -> None:
        mine = []
        barrier.wait()
        for _ in range(count):
            local.attempts = local.bad = 0
            started = time.perf_counter()
            try:
                client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}])
                ok = True
            except Exception as exc:  # noqa: BLE001 - a lost request is what is counted
                ok = False
                with lock:
                    errors.append(exc)
            mine.append((ok, time.perf_counter() - started, local.attempts, local.bad))
        with lock:
            results.extend(mine)

    workers = [threading.Thread(target=worker, args=(count,)) for count in per_thread]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    client.close()
    return {"results": results, "errors": errors}


def _warm_up(node: LocalNode | str) -> None:
    """One request before any threads: openai builds its response models lazily, and
    concurrent first uses of a fresh client can fail (see docs/api.md)."""
    from ..openai import client as openai_client

    url = node if isinstance(node, str) else node.url
    with openai_client(EndpointPool([GonkaEndpoint(url, "gonka1warmup")])) as client:
        client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}])


def _summary(results: list[tuple[bool, float, int, int]]) -> dict[str, float]:
    latencies = sorted(r[1] for r in results)
    answered = sum(r[0] for r in results)
    return {
        "requests": len(results),
        "answered": answered,
        "answered_pct": 100.0 * answered / len(results),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "attempts_per_request": sum(r[2] for r in results) / len(results),
        "bad_attempts": sum(r[3] for r in results),
    }


def execute(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Callable[[str], object] = print) -> int:
    try:
        import openai  # noqa: F401 - only checked for
    except ImportError:
        parser.error("bench-failover needs the openai SDK: pip install 'gonka-pool[openai]'")
    nodes: dict[str, LocalNode | str] = {
        "A": LocalNode("A"),
        "B": f"http://127.0.0.1:{free_port()}/v1",
        "C": LocalNode("C", "unavailable", retry_after=2),
        "D": LocalNode("D", "stall", stall_seconds=args.timeout + 5),
    }
    servers = [node for node in nodes.values() if isinstance(node, LocalNode)]
    for server in servers:
        server.start()
    _warm_up(nodes["A"])
    collected: dict[str, list[tuple[bool, float, int, int]]] = {name: [] for name, _ in CONFIGS}
    lost: dict[str, list[BaseException]] = {name: [] for name, _ in CONFIGS}
    try:
        for round_number in range(args.rounds):
            for name, attempts in CONFIGS:
                run = _run_config(nodes, attempts, args.requests, args.threads, args.timeout)
                collected[name].extend(run["results"])
                lost[name].extend(run["errors"])
            if sys.stderr.isatty():
                sys.stderr.write(f"\rround {round_number + 1}/{args.rounds}")
                sys.stderr.flush()
        if sys.stderr.isatty():
            sys.stderr.write("\n")
    finally:
        for server in servers:
            server.stop()
    summaries = {name: _summary(results) for name, results in collected.items()}
    out(
        f"bench-failover: nodes A healthy, B refused, C 503 (Retry-After: 2), D stalls; "
        f"{args.threads} threads, {args.requests} requests per configuration and round, "
        f"{args.rounds} rounds, client timeout {args.timeout:g} s, Python "
        f"{sys.version.split()[0]}"
    )
    out(
        f"  {'configuration':<24} {'answered':>12} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'attempts/req':>13} {'bad attempts':>13}"
    )
    for name, s in summaries.items():
        out(
            f"  {name:<24} {s['answered']:>5}/{s['requests']:<4} {s['answered_pct']:>5.1f}%"
            f"{s['p50_ms']:>7.1f} {s['p99_ms']:>8.1f} {s['attempts_per_request']:>13.3f} "
            f"{s['bad_attempts']:>13}"
        )
    for name, errors in lost.items():
        kinds = sorted({f"{type(e).__name__}: {e.__cause__!r}" for e in errors})
        if kinds:
            out(f"  lost by {name}: " + "; ".join(kinds))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"args": vars(args), "summaries": summaries}, file, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure(argparse.ArgumentParser(prog="python -m gonka_pool bench-failover", **PARSER_OPTIONS))
    return execute(parser, parser.parse_args(argv))
