"""``python -m gonka_pool bench-balance``: how the pool spreads load over unequal nodes,
a gray node and a correlated outage, against a join-the-shortest-queue oracle (issue 20).

Eight OpenAI-compatible nodes on 127.0.0.1 with 1, 1, 2, 2, 2, 4, 4 and 8 slots of
~200 ms (uniform 190-210 ms, seeded), each a FIFO queue that answers 429 "Transfer Agent
capacity reached" without ``Retry-After``, at once, when twice its slots are already
waiting (``--queue``), as Gonka nodes do.  Capacity is sum(slots) / 0.2 s = 120 req/s.

Every policy runs the same phases, one after another, with the same seeds:

- load (open loop): Poisson arrivals at ``--rate-fraction`` of capacity, each request on
  its own worker thread, through the openai SDK over ``gonka_pool.openai.client(pool)``
  with its defaults (one client shared by every thread); the latency runs from the
  scheduled arrival to the parsed response, so a request that waits for a worker counts
  that wait.  A warm-up that is not counted, then ``healthy`` (every node at 200 ms),
  then ``gray`` (one four-slot node answers 200 in 10x the time: a node that never errs);
- ``outage`` (closed loop, a fresh pool): 4 threads send through ``PoolTransport``
  (``gonka_pool.httpx2``, else ``gonka_pool.httpx``) with its defaults and ``deadline=``;
  every node stops listening (connections refused) for ``--outage`` seconds, then
  listens again on the same port; reported: the requests during the outage and the
  longest of them, and which nodes answered in the first second and the first
  ``--recovery`` seconds after.

Policies: ``round_robin`` and ``weighted_round_robin`` (weights = slots, as
``from_gonka`` gives them), ``peak_ewma`` (the default of ``balance=``),
``weighted_peak_ewma``, ``least_request``, and ``oracle``: a dispatcher that knows
every node's in-flight count, capacity and service time (told of the gray node) and
sends each request, with an openai client per node, to the node that answers it
soonest: the least ``service x ceil((in_flight + 1) / slots)``, then the least
``(in_flight + 1) / slots``, never to a full node.  A policy the installed core does not
know (``balance=`` is new) is reported as not available.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import IMPLEMENTATION, EndpointPool, GonkaEndpoint
from .argtypes import at_least, positive_seconds
from .balance_nodes import (
    GRAY_FACTOR,
    GRAY_NODE,
    JITTER,
    LOAD_PHASES,
    OUTAGE_THREADS,
    PHASES,
    POLICIES,
    QUEUE,
    SERVICE_SECONDS,
    SLOTS,
    _http_module,
    _Node,
    _node_port,
    _OracleTarget,
    _PoolTarget,
    _Target,
)

__all__ = ["main"]


def _pool(policy: str, endpoints: Sequence[GonkaEndpoint], slots: Sequence[int]) -> tuple[EndpointPool | None, str]:
    """The pool of ``policy``, or None and why not.  ``balance=`` is new: a core without
    it still serves round robin, which is what it always did."""
    weighted = policy.startswith("weighted_")
    balance = policy.removeprefix("weighted_")
    options: dict[str, Any] = {"weights": list(slots)} if weighted else {}
    try:
        return EndpointPool(endpoints, **{"balance": balance, **options}), ""
    except (TypeError, ValueError) as exc:
        if balance != "round_robin":
            return None, f"not available ({type(exc).__name__}: {exc})"
    try:
        return EndpointPool(endpoints, **options), "this core has no balance=: its round robin"
    except (TypeError, ValueError) as exc:
        return None, f"not available ({type(exc).__name__}: {exc})"


# --- the drivers -----------------------------------------------------------------------

# (scheduled, latency, node that answered or None, error name, done), times from the run's start
Record = tuple[float, float, str | None, str | None, float]


def _load(
    target: _Target, nodes: Sequence[_Node], arrivals: Sequence[float], gray_at: float | None, workers: int
) -> tuple[list[Record], float, float | None]:
    """Send at the scheduled offsets; the gray node slows at ``gray_at``.  Returns the
    records, the start (monotonic) and when the gray node slowed (offset)."""
    records: list[Record] = []

    def send(scheduled: float) -> None:
        try:
            answered: str | None = target.chat()
            error = None
        except Exception as exc:  # noqa: BLE001 - a lost request is what is counted
            answered, error = None, type(exc).__name__
        done = time.monotonic() - start
        records.append((scheduled, done - scheduled, answered, error, done))  # list.append is atomic

    slowed: float | None = None
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-balance") as executor:
        start = time.monotonic()
        for offset in arrivals:
            if gray_at is not None and slowed is None and offset >= gray_at:
                delay = start + gray_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                nodes[GRAY_NODE].service = SERVICE_SECONDS * GRAY_FACTOR
                slowed = time.monotonic() - start
            delay = start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            executor.submit(send, offset)
    nodes[GRAY_NODE].service = SERVICE_SECONDS
    return records, start, slowed


def _outage(
    target: _Target, nodes: Sequence[_Node], lead: float, outage: float, recovery: float, pause: float
) -> dict[str, Any]:
    records: list[tuple[float, float, str | None, str | None]] = []  # started, done, node, error
    stop = threading.Event()
    start = time.monotonic()

    def loop() -> None:
        while not stop.is_set():
            began = time.monotonic() - start
            try:
                answered: str | None = target.post()
                error = None
            except Exception as exc:  # noqa: BLE001 - a lost request is what is counted
                answered, error = None, type(exc).__name__
            records.append((began, time.monotonic() - start, answered, error))
            if answered is None:
                time.sleep(pause)  # a client backs off a little; and the CPUs are shared

    threads = [threading.Thread(target=loop, name=f"bench-balance outage {k}") for k in range(OUTAGE_THREADS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(lead)
        stoppers = [threading.Thread(target=node.stop) for node in nodes]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        down_at = time.monotonic() - start  # from here every node refuses
        time.sleep(outage)
        up_at = time.monotonic() - start  # counted from the first node back, a conservative start
        for node in nodes:
            node.start()
        time.sleep(recovery)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for node in nodes:
            node.start()
    during = [r for r in records if down_at <= r[0] < up_at]
    result: dict[str, Any] = {
        "outage_s": up_at - down_at,
        "during": {
            "requests": len(during),
            "answered": sum(r[2] is not None for r in during),
            "max_latency_ms": 1000 * max((r[1] - r[0] for r in during), default=0.0),
            "errors": dict(Counter(r[3] for r in during if r[3] is not None)),
        },
    }
    for label, window in (("first_1s", 1.0), (f"first_{recovery:g}s", recovery)):
        answers = Counter(r[2] for r in records if r[2] is not None and up_at <= r[1] < up_at + window)
        total = sum(answers.values())
        result[label] = {
            "answers": total,
            "nodes_answering": len(answers),
            "largest_share_pct": 100.0 * max(answers.values(), default=0) / total if total else 0.0,
            "shares_pct": [100.0 * answers[node.name] / total if total else 0.0 for node in nodes],
        }
    return result


# --- the figures -----------------------------------------------------------------------


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _phase_figures(
    records: Sequence[Record], nodes: Sequence[_Node], start: float, begin: float, end: float, last: bool
) -> dict[str, Any]:
    mine = [r for r in records if begin <= r[0] < end]
    answered = [r for r in mine if r[2] is not None]
    latencies = sorted(r[1] for r in answered)
    shares = Counter(r[2] for r in answered)
    refusal_end = math.inf if last else start + end
    return {
        "requests": len(mine),
        "answered": len(answered),
        "answered_pct": 100.0 * len(answered) / len(mine) if mine else 0.0,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else math.nan,
        "p99_ms": 1000 * _quantile(latencies, 0.99),
        "p999_ms": 1000 * _quantile(latencies, 0.999),
        "max_ms": 1000 * latencies[-1] if latencies else math.nan,
        "refusals": sum(start + begin <= t < refusal_end for node in nodes for t in node.refusals),
        "refusals_per_node": [sum(start + begin <= t < refusal_end for t in node.refusals) for node in nodes],
        "shares_pct": [100.0 * shares[node.name] / len(answered) if answered else 0.0 for node in nodes],
        "errors": dict(Counter(r[3] for r in mine if r[3] is not None)),
    }


def _run_policy(
    target: _Target, make_outage_target: Callable[[], _Target], nodes: Sequence[_Node], args: argparse.Namespace
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    load_phases = [phase for phase in args.phases if phase in LOAD_PHASES]
    if load_phases:
        for node in nodes:
            node.refusals.clear()
        target.chat()  # the SDK builds its models lazily: one request before going concurrent
        bounds = [args.warmup + k * args.duration for k in range(len(load_phases) + 1)]
        rate = args.rate_fraction * sum(node.slots for node in nodes) / SERVICE_SECONDS
        arrivals_rng = random.Random(args.seed)
        arrivals: list[float] = []
        offset = arrivals_rng.expovariate(rate)
        while offset < bounds[-1]:
            arrivals.append(offset)
            offset += arrivals_rng.expovariate(rate)
        gray_at = bounds[load_phases.index("gray")] if "gray" in load_phases else None
        records, start, slowed = _load(target, nodes, arrivals, gray_at, args.workers)
        for k, phase in enumerate(load_phases):
            figures[phase] = _phase_figures(records, nodes, start, bounds[k], bounds[k + 1], k == len(load_phases) - 1)
        if gray_at is not None:
            after = [r for r in records if gray_at + 1.0 <= r[0] < bounds[load_phases.index("gray") + 1]]
            answered = [r for r in after if r[2] is not None]
            slow = sum(r[2] == nodes[GRAY_NODE].name for r in answered)
            figures["gray"]["slowed_at_s"] = slowed
            figures["gray"]["slow_node_share_after_1s_pct"] = 100.0 * slow / len(answered) if answered else 0.0
    if "outage" in args.phases:
        outage_target = make_outage_target()
        try:
            figures["outage"] = _outage(
                outage_target, nodes, args.outage_lead, args.outage, args.recovery, args.outage_pause
            )
        finally:
            outage_target.close()
    return figures


def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    oracle = results.get("oracle", {}).get("phases")
    if not oracle:
        return {}
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    for policy, result in results.items():
        if policy == "oracle" or not result.get("available"):
            continue
        for phase in LOAD_PHASES:
            mine, best = result["phases"].get(phase), oracle.get(phase)
            if mine and best:
                ratios.setdefault(policy, {})[phase] = {
                    "p99": mine["p99_ms"] / best["p99_ms"],
                    "p999": mine["p999_ms"] / best["p999_ms"],
                }
    return ratios


def _shares(values: Sequence[float]) -> str:
    return "/".join(f"{v:.0f}" for v in values)


def _report(
    results: dict[str, dict[str, Any]],
    ratios: dict[str, dict[str, dict[str, float]]],
    args: argparse.Namespace,
    out: Callable[[str], object],
) -> None:
    capacity = sum(args.slots) / SERVICE_SECONDS
    out(
        f"bench-balance: {len(args.slots)} nodes with {','.join(map(str, args.slots))} slots of "
        f"{1000 * SERVICE_SECONDS * (1 - JITTER):.0f}-{1000 * SERVICE_SECONDS * (1 + JITTER):.0f} ms, "
        f"{args.queue}x slots waiting, then 429; Poisson {args.rate_fraction * capacity:.1f} req/s "
        f"({100 * args.rate_fraction:g}% of {capacity:g}), seed {args.seed}; core {IMPLEMENTATION}, "
        f"Python {sys.version.split()[0]}"
    )
    out(
        f"  load: openai SDK over gonka_pool.openai.client(pool), its defaults (max_retries=0); "
        f"warm-up {args.warmup:g} s, then {args.duration:g} s per phase; gray: node{GRAY_NODE} "
        f"({args.slots[GRAY_NODE]} slots) {GRAY_FACTOR:g}x slower; "
        f"shares in % of answers, node0..node{len(args.slots) - 1}"
    )
    header = (
        f"  {'policy':<21} {'phase':<8} {'requests':>8} {'answered':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99.9 ms':>8} {'429s':>5} {'p99/or':>6} {'p99.9/or':>8}  shares %"
    )
    if any(phase in LOAD_PHASES for phase in args.phases):
        out(header)
    for policy, result in results.items():
        if not result["available"]:
            out(f"  {policy:<21} {result['note']}")
            continue
        for phase in LOAD_PHASES:
            f = result["phases"].get(phase)
            if f is None:
                continue
            ratio = ratios.get(policy, {}).get(phase)
            p99_ratio = f"{ratio['p99']:>6.2f}" if ratio else f"{'':>6}"
            p999_ratio = f"{ratio['p999']:>8.2f}" if ratio else f"{'':>8}"
            out(
                f"  {policy:<21} {phase:<8} {f['requests']:>8} {f['answered_pct']:>8.1f}% {f['p50_ms']:>7.0f} "
                f"{f['p99_ms']:>7.0f} {f['p999_ms']:>8.0f} {f['refusals']:>5} {p99_ratio} {p999_ratio}  "
                f"{_shares(f['shares_pct'])}"
            )
            if phase == "gray":
                slow = f["slow_node_share_after_1s_pct"]
                out(f"  {'':<21} {'':<8} slow node's share after its first second: {slow:.1f}%")
            if f["errors"]:
                out(f"  {'':<21} {'':<8} lost: {', '.join(f'{k} x{v}' for k, v in sorted(f['errors'].items()))}")
        if result.get("note"):
            out(f"  {'':<21} ({result['note']})")
    if "outage" in args.phases:
        transport = "gonka_pool.httpx2" if _http_module()[0].__name__ == "httpx2" else "gonka_pool.httpx"
        out(
            f"  outage: {OUTAGE_THREADS} threads, closed loop, {transport}.PoolTransport(pool, "
            f"deadline={args.deadline:g}), a fresh pool; every node refuses connections for {args.outage:g} s "
            f"(a failed request waits {1000 * args.outage_pause:g} ms before the next)"
        )
        later = f"first_{args.recovery:g}s"
        out(
            f"  {'policy':<21} {'during: requests':>16} {'max ms':>7}   {'1st s: nodes':>12} {'largest':>7}   "
            f"{f'{args.recovery:g} s: nodes':>12} {'largest':>7}  shares % ({args.recovery:g} s)"
        )
        for policy, result in results.items():
            o = result.get("phases", {}).get("outage")
            if not result["available"] or o is None:
                continue
            first, rest = o["first_1s"], o[later]
            out(
                f"  {policy:<21} {o['during']['requests']:>16} {o['during']['max_latency_ms']:>7.0f}   "
                f"{first['nodes_answering']:>12} {first['largest_share_pct']:>6.0f}%   "
                f"{rest['nodes_answering']:>12} {rest['largest_share_pct']:>6.0f}%  {_shares(rest['shares_pct'])}"
            )


# --- the command -----------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, at least 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = positive_seconds(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be under 1 (an overloaded queue never settles), got {text}")
    return value


def _choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        chosen = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in chosen if item not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(allowed)}, got {text!r}")
        return [item for item in allowed if item in chosen]  # in the canonical order, once each

    return parse


def _slots(text: str) -> list[int]:
    try:
        slots = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if len(slots) <= GRAY_NODE or min(slots) < 1:
        raise argparse.ArgumentTypeError(f"expected at least {GRAY_NODE + 1} nodes of 1 slot or more, got {text!r}")
    return slots


_positive_int = at_least(1)


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add = parser.add_argument
    add("--policies", type=_choices(POLICIES), default=list(POLICIES), help=f"default: {','.join(POLICIES)}")
    add("--phases", type=_choices(PHASES), default=list(PHASES), help=f"default: {','.join(PHASES)}")
    add("--duration", type=positive_seconds, default=20.0, help="seconds of each load phase (default: 20)")
    add("--warmup", type=_seconds, default=3.0, help="seconds of load before the first phase, not counted (default: 3)")
    add("--rate-fraction", type=_fraction, default=0.7, help="arrival rate, of total capacity (default: 0.7)")
    add("--slots", type=_slots, default=list(SLOTS), help="slots of each node (default: 1,1,2,2,2,4,4,8)")
    add("--queue", type=_positive_int, default=QUEUE, help="waiting places per slot, then 429 (default: 2)")
    add("--workers", type=_positive_int, default=128, help="threads sending the load (default: 128)")
    add("--outage", type=positive_seconds, default=20.0, help="seconds every node refuses (default: 20)")
    add("--outage-lead", type=_seconds, default=2.0, help="seconds of traffic before the outage (default: 2)")
    add("--recovery", type=positive_seconds, default=3.0, help="seconds measured after the outage (default: 3)")
    add("--outage-pause", type=_seconds, default=0.05, help="a failed request's wait before the next (default: 0.05)")
    add("--deadline", type=positive_seconds, default=5.0, help="PoolTransport deadline= in the outage (default: 5)")
    add("--seed", type=int, default=20, help="seed of the arrivals and service times (default: 20)")
    add("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    return parser


HELP = "load over unequal nodes, a gray node and an outage: each policy against an oracle"
PARSER_OPTIONS: dict[str, Any] = {
    "description": "Load balancing over unequal local nodes (slots 1..8, 429 when full): healthy, "
    "one gray node, a correlated outage; each policy against a join-the-shortest-queue oracle.",
}


def _targets(
    policy: str, nodes: Sequence[_Node], endpoints: Sequence[GonkaEndpoint], args: argparse.Namespace
) -> tuple[_Target, Callable[[], _Target], str] | str:
    """The policy's sender for the load, a maker of fresh ones for the outage, and a
    note; or why the policy is not available."""
    if policy == "oracle":
        return _OracleTarget(nodes), lambda: _OracleTarget(nodes), ""
    pool, note = _pool(policy, endpoints, args.slots)
    if pool is None:
        return note

    def fresh() -> _Target:
        again, _ = _pool(policy, endpoints, args.slots)
        assert again is not None
        return _PoolTarget(policy, again, deadline=args.deadline)

    return _PoolTarget(policy, pool), fresh, note


def execute(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Callable[[str], object] = print) -> int:
    try:
        import openai  # noqa: F401 - only checked for
    except ImportError:
        parser.error("bench-balance needs the openai SDK: pip install 'gonka-pool[openai]'")
    if args.rate_fraction * sum(args.slots) / SERVICE_SECONDS * args.duration < 1 and any(
        phase in LOAD_PHASES for phase in args.phases
    ):
        parser.error("--duration is too short for a single arrival")
    chooser = random.SystemRandom()
    nodes = [
        _Node(i, slots, _node_port(chooser), args.seed * 1000 + i, args.queue) for i, slots in enumerate(args.slots)
    ]
    endpoints = [GonkaEndpoint(node.url, f"gonka1{node.name}") for node in nodes]
    results: dict[str, dict[str, Any]] = {}
    for node in nodes:
        node.start()
    try:
        for policy in args.policies:
            made = _targets(policy, nodes, endpoints, args)
            if isinstance(made, str):
                results[policy] = {"available": False, "note": made}
                continue
            target, make_outage_target, note = made
            if sys.stderr.isatty():
                sys.stderr.write(f"bench-balance: {policy}...\n")
            try:
                results[policy] = {"available": True, "note": note, "phases": {}}
                results[policy]["phases"] = _run_policy(target, make_outage_target, nodes, args)
            finally:
                target.close()
    finally:
        for node in nodes:
            node.stop()
    ratios = _ratios(results)
    _report(results, ratios, args, out)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(
                {
                    "args": vars(args),
                    "implementation": IMPLEMENTATION,
                    "python": sys.version.split()[0],
                    "capacity_rps": sum(args.slots) / SERVICE_SECONDS,
                    "gray_node": GRAY_NODE,
                    "policies": results,
                    "ratios_to_oracle": ratios,
                },
                file,
                indent=2,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure(argparse.ArgumentParser(prog="python -m gonka_pool bench-balance", **PARSER_OPTIONS))
    return execute(parser, parser.parse_args(argv))
