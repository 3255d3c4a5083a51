"""``python -m gonka_pool bench``: gonka_pool against the pools a user would write.

One run, on the running interpreter, measures side by side:

* ``gonka_pool (c)``: ``pool.next()`` on the C core;
* ``gonka_pool (python)``: the same API on the pure-Python twin;
* ``lock pool``: the pool a user writes by hand, a ``threading.Lock`` around the
  cursor and a list of deadlines;
* ``itertools.count pool``: ``next(counter) % n`` plus the deadline check;
* ``ft_utils AtomicInt64 pool``: the same on Meta's ft_utils, when installed;
* ``floor``: a bound C method call on a shared object: ``lst.__len__()`` (the
  issue's reference; it allocates a method-wrapper per call) and the stricter
  ``s.isascii()`` (a METH_NOARGS method returning an immortal bool, like ``next()``
  minus the selection and the endpoint's reference count);

for 1, 2, ... up to 2x the core count of threads; and on one thread, weighted pools
of 1,000 and 10,000 nodes (weights drawn from 1..10**6) beside unweighted ones of
the same size: ``next()``, building one, and the weighted share error.  Threads
start on a barrier; rounds are interleaved across implementations and thread
counts, and medians are reported.  Every figure is also given as a ratio to gonka_pool's single-thread
``next()``.  Timings on a shared machine drift from run to run; ratios measured in
one run do not.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from itertools import count
from typing import Any

from .. import IMPLEMENTATION, EndpointPool, GonkaEndpoint
from .._clock import CLOCK
from .._pool_py import EndpointPool as _TwinPool
from .argtypes import at_least, default_max_threads, positive_seconds, thread_counts
from .bench_report import plot, report

UNROLL = 10  # calls per loop iteration, so the loop itself weighs little

# Weighted pools at network scale (issue 15): next() and building, each beside the
# unweighted pool of the same size, with weights drawn from 1..10**6 (the stand-in
# for a Gonka network's proof-of-compute weights), and the share error of 10**6 picks.
WEIGHTED_SIZES = (1000, 10000)
WEIGHT_MAX = 10**6
BUILDS_PER_ROUND = 3  # each build timed this often per round; the round keeps the median
SHARE_PICKS = 10**6  # picks over which the weighted share error is counted


def bench_endpoints(n: int) -> list[GonkaEndpoint]:
    return [GonkaEndpoint(f"https://node{i}.bench", f"gonka1node{i}") for i in range(n)]


def network_weights(n: int) -> list[int]:
    """n weights drawn from 1..10**6, the same in every run (seeded by n)."""
    draw = random.Random(n)
    return [draw.randint(1, WEIGHT_MAX) for _ in range(n)]


class LockPool:
    """The pool a careful user writes by hand: a lock around cursor and deadlines."""

    def __init__(self, endpoints: list[GonkaEndpoint]) -> None:
        self.endpoints = list(endpoints)
        self.failed_until = [0.0] * len(self.endpoints)
        self.cursor = 0
        self.lock = threading.Lock()

    def next(self) -> GonkaEndpoint:
        with self.lock:
            n = len(self.endpoints)
            now = time.monotonic()
            for _ in range(n):
                idx = self.cursor % n
                self.cursor += 1
                if self.failed_until[idx] <= now:
                    return self.endpoints[idx]
            best = min(range(n), key=self.failed_until.__getitem__)
            return self.endpoints[best]

    def mark_failed(self, idx: int, cooldown: float) -> None:
        with self.lock:
            self.failed_until[idx] = time.monotonic() + cooldown if cooldown else 0.0


class CountPool:
    """``itertools.count`` as the cursor (atomic under the GIL only) and a deadline list."""

    def __init__(self, endpoints: list[GonkaEndpoint]) -> None:
        self.endpoints = list(endpoints)
        self.failed_until = [0.0] * len(self.endpoints)
        self.counter = count()

    def next(self) -> GonkaEndpoint:
        n = len(self.endpoints)
        now = time.monotonic()
        for _ in range(n):
            idx = next(self.counter) % n
            if self.failed_until[idx] <= now:
                return self.endpoints[idx]
        return self.endpoints[min(range(n), key=self.failed_until.__getitem__)]


def _ft_utils_pool() -> type | None:
    try:
        from ft_utils.concurrency import AtomicInt64
    except ImportError:
        return None

    class AtomicInt64Pool:
        """ft_utils' lock-free 64-bit counter as the cursor, and a deadline list."""

        def __init__(self, endpoints: list[GonkaEndpoint]) -> None:
            self.endpoints = list(endpoints)
            self.failed_until = [0.0] * len(self.endpoints)
            self.cursor = AtomicInt64(0)

        def next(self) -> GonkaEndpoint:
            n = len(self.endpoints)
            now = time.monotonic()
            for _ in range(n):
                idx: int = self.cursor.incr() % n
                if self.failed_until[idx] <= now:
                    return self.endpoints[idx]
            return self.endpoints[min(range(n), key=self.failed_until.__getitem__)]

    return AtomicInt64Pool


def implementations(n_nodes: int) -> dict[str, tuple[Any, str]]:
    """name -> (shared object, the call expression on ``obj`` that the threads run)."""
    endpoints = [GonkaEndpoint(f"https://node{i}.bench", f"gonka1node{i}") for i in range(n_nodes)]
    impls: dict[str, tuple[Any, str]] = {}
    if IMPLEMENTATION == "c":
        impls["gonka_pool (c)"] = (EndpointPool(endpoints), "obj.next()")
        # On 3.13t obj.next() increments the shared pool's reference count (an atomic
        # add on one line every thread writes); a bound method per thread does not.
        impls["gonka_pool (c), next_ = obj.next per thread"] = (EndpointPool(endpoints), "next_ = obj.next; next_()")
    impls["gonka_pool (python)"] = (_TwinPool(endpoints), "obj.next()")
    impls["lock pool"] = (LockPool(endpoints), "obj.next()")
    impls["itertools.count pool"] = (CountPool(endpoints), "obj.next()")
    ft_pool = _ft_utils_pool()
    if ft_pool is not None:
        impls["ft_utils AtomicInt64 pool"] = (ft_pool(endpoints), "obj.next()")
    impls["floor: lst.__len__()"] = (list(range(n_nodes)), "obj.__len__()")
    impls["floor: len_ = lst.__len__ per thread"] = (list(range(n_nodes)), "len_ = obj.__len__; len_()")
    impls["floor: str.isascii()"] = ("".join(["node"] * n_nodes), "obj.isascii()")
    return impls


def single_thread_cases(n_nodes: int) -> dict[str, tuple[Any, str, int]]:
    """Per-call costs of the API on one thread: name -> (obj, expression, picks per call)."""
    endpoints = [GonkaEndpoint(f"https://node{i}.bench", f"gonka1node{i}") for i in range(n_nodes)]
    pool = EndpointPool(endpoints)
    marked = EndpointPool(endpoints)
    cooling = EndpointPool([GonkaEndpoint(f"https://node{i}.bench", "a") for i in range(1000)])
    for i in range(1000):
        cooling.mark_failed(i, 3600)
    weighted = EndpointPool(endpoints, weights=range(1, n_nodes + 1))
    cases: dict[str, tuple[Any, str, int]] = {
        "next()": (pool, "obj.next()", 1),
        "next(), weighted 1..n": (weighted, "obj.next()", 1),
        "next_indexed()": (pool, "obj.next_indexed()", 1),
        "mark_failed(i, 30.0)": (marked, "obj.mark_failed(1, 30.0)", 1),
        "mark_failed(i, 0) (clear)": (marked, "obj.mark_failed(1, 0)", 1),
        "mark_failed(i) (policy)": (marked, "obj.mark_failed(1)", 1),
        "next(), 1000 nodes all cooling": (cooling, "obj.next()", 1),
        "floor: lst.__len__()": (list(range(n_nodes)), "obj.__len__()", 1),
        "floor: str.isascii()": ("".join(["node"] * n_nodes), "obj.isascii()", 1),
    }
    if hasattr(pool, "next_many"):
        for k in (16, 256):
            cases[f"next_many({k}), per pick"] = (pool, f"obj.next_many({k})", k)
    for size in WEIGHTED_SIZES:
        many = bench_endpoints(size)
        cases[f"next(), {size} nodes"] = (EndpointPool(many), "obj.next()", 1)
        cases[f"next(), {size} nodes, weights 1..10^6"] = (
            EndpointPool(many, weights=network_weights(size)),
            "obj.next()",
            1,
        )
    lock_pool = LockPool(endpoints)
    cases["lock pool next()"] = (lock_pool, "obj.next()", 1)
    cases["lock pool mark_failed(i, 30.0)"] = (lock_pool, "obj.mark_failed(1, 30.0)", 1)
    return cases


def build_cases() -> dict[str, tuple[list[GonkaEndpoint], list[int] | None, str]]:
    """name -> (endpoints, weights, name of the unweighted build it is compared to)."""
    cases: dict[str, tuple[list[GonkaEndpoint], list[int] | None, str]] = {}
    for size in WEIGHTED_SIZES:
        endpoints = bench_endpoints(size)
        plain = f"EndpointPool({size} nodes)"
        cases[plain] = (endpoints, None, plain)
        cases[f"EndpointPool({size} nodes, weights 1..10^6)"] = (endpoints, network_weights(size), plain)
    return cases


def time_build(endpoints: list[GonkaEndpoint], weights: list[int] | None) -> float:
    """Seconds to build one pool, the garbage collector paused as timeit pauses it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        pool = EndpointPool(endpoints, weights=weights)
        elapsed = time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()
    del pool
    return elapsed


def weighted_share(size: int = WEIGHTED_SIZES[0], picks: int = SHARE_PICKS) -> dict[str, Any]:
    """How far ``picks`` selections of a weighted pool of ``size`` nodes (weights
    1..10**6) land from each node's exact share: the sum over nodes of |picks -
    expected picks| as a fraction of all picks, and whether every node whose exact
    share gives it at least one of those picks got one."""
    weights = network_weights(size)
    pool = EndpointPool(bench_endpoints(size), weights=weights, start=0)
    counts = pool._select_loop(picks, True)
    total = sum(weights)
    error = sum(abs(c - picks * w / total) for c, w in zip(counts, weights, strict=True))
    owed = [c for c, w in zip(counts, weights, strict=True) if picks * w >= total]
    return {
        "nodes": size,
        "picks": picks,
        "error": error / picks,
        "every_node_picked": all(c >= 1 for c in owed),
        "least_picks": min(counts),
    }


def make_runner(expression: str) -> Callable[[Any, int], None]:
    """A loop running ``expression`` UNROLL times per iteration, compiled once.
    ``"setup; call"`` runs ``setup`` once per thread, then repeats ``call``."""
    setup, _, call = expression.rpartition("; ")
    body = "\n".join(f"        {call}" for _ in range(UNROLL))
    source = f"def run(obj, reps):\n    {setup or 'pass'}\n    for _ in range(reps):\n{body}\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<bench {expression}>", "exec"), namespace)  # noqa: S102
    run: Callable[[Any, int], None] = namespace["run"]
    return run


def measure(obj: Any, runner: Callable[[Any, int], None], threads: int, reps: int) -> float:
    """Aggregate calls/second of ``threads`` threads each making reps*UNROLL calls."""
    barrier = threading.Barrier(threads + 1)
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def body() -> None:
        barrier.wait()
        start = time.perf_counter()
        runner(obj, reps)
        end = time.perf_counter()
        with lock:
            spans.append((start, end))

    workers = [threading.Thread(target=body) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    for w in workers:
        w.join()
    elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
    return threads * reps * UNROLL / elapsed


def calibrate(obj: Any, runner: Callable[[Any, int], None], target_s: float) -> int:
    reps = 100
    while True:
        start = time.perf_counter()
        runner(obj, reps)
        elapsed = time.perf_counter() - start
        if elapsed >= target_s / 4 or reps > 10**8:
            return max(1, int(reps * target_s / elapsed))
        reps *= 4


def core_loop_rate(threads: int, k: int, n_nodes: int) -> float:
    """Selections/second of the C core alone: a nogil loop of k selections per thread."""
    pool = EndpointPool(GonkaEndpoint(f"https://node{i}.bench", "a") for i in range(n_nodes))
    return measure(pool, lambda obj, reps: obj._select_loop(k), threads, 1) * k / UNROLL


def interpreter() -> dict[str, Any]:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "free_threaded_build": bool(__import__("sysconfig").get_config_var("Py_GIL_DISABLED")),
        "gil_enabled": gil,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "gonka_pool": IMPLEMENTATION,
        "clock": "{} (tick {} ns)".format(*CLOCK),
    }


class Progress:
    """Where a run stands, written to ``stream`` (None: nowhere).

    On a terminal, one line rewritten in place with \\r at every measurement.  Elsewhere
    (a pipe, a file, a CI log) those \\r updates would pile up as hundreds of fragments
    on one line, so it writes one plain line per round instead: a long run still shows
    it is alive, in at most --rounds lines.
    """

    def __init__(self, stream: Any, total: int, rounds: int) -> None:
        self.stream = stream
        self.total = total
        self.rounds = rounds
        self.done = 0
        try:
            self.live = stream is not None and stream.isatty()
        except (AttributeError, ValueError):  # a stand-in without isatty, or a closed stream
            self.live = False

    def step(self, label: str) -> None:
        self.done += 1
        if self.live:
            print(f"\r  [{self.done:4d}/{self.total}] {label[:60]:60s}", end="", file=self.stream, flush=True)

    def end_round(self, round_: int) -> None:
        if self.stream is not None and not self.live:
            print(
                f"  round {round_}/{self.rounds} done ({self.done}/{self.total} measurements)",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.live:
            print(file=self.stream, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = interpreter()
    if args.threads:
        thread_counts = args.threads
    else:
        thread_counts = list(range(1, (args.max_threads or default_max_threads()) + 1))
    impls = implementations(args.nodes)
    runners = {name: make_runner(expr) for name, (_, expr) in impls.items()}
    reps = {name: calibrate(obj, runners[name], args.seconds) for name, (obj, _) in impls.items()}

    singles = single_thread_cases(args.nodes)
    single_runners = {name: make_runner(expr) for name, (_, expr, _) in singles.items()}
    single_reps = {name: calibrate(obj, single_runners[name], args.seconds) for name, (obj, _, _) in singles.items()}

    builds = build_cases()
    built: dict[str, list[float]] = {name: [] for name in builds}

    threaded: dict[str, dict[int, list[float]]] = {n: {t: [] for t in thread_counts} for n in impls}
    single: dict[str, list[float]] = {name: [] for name in singles}
    core: dict[int, list[float]] = {t: [] for t in thread_counts}
    total = args.rounds * (len(thread_counts) * (len(impls) + (IMPLEMENTATION == "c")) + len(singles) + len(builds))
    progress = Progress(None if args.quiet else sys.stderr, total, args.rounds)

    for round_ in range(args.rounds):
        # Every single-thread case of a round on one thread, back to back: which core
        # a new thread lands on moves its timings up to 2x on a shared machine, and
        # the ratios to next() must not depend on that draw.
        def singles_on_one_thread() -> None:
            for name, (obj, _, per_call) in singles.items():
                start = time.perf_counter()
                single_runners[name](obj, single_reps[name])
                elapsed = time.perf_counter() - start
                single[name].append(elapsed * 1e9 / (single_reps[name] * UNROLL * per_call))
                progress.step(f"round {round_ + 1}: {name}")  # noqa: B023 - joined within the round

        def builds_on_one_thread() -> None:
            times: dict[str, list[float]] = {name: [] for name in builds}
            for _ in range(BUILDS_PER_ROUND):
                for name, (endpoints, weights, _) in builds.items():
                    times[name].append(time_build(endpoints, weights))
            for name in builds:
                built[name].append(statistics.median(times[name]))
                progress.step(f"round {round_ + 1}: {name}")  # noqa: B023 - joined within the round

        for work in (singles_on_one_thread, builds_on_one_thread):
            worker = threading.Thread(target=work)
            worker.start()
            worker.join()
        for threads in thread_counts:
            for name, (obj, _) in impls.items():
                threaded[name][threads].append(measure(obj, runners[name], threads, reps[name]))
                progress.step(f"round {round_ + 1}: {name}, {threads} threads")
            if IMPLEMENTATION == "c":
                core[threads].append(core_loop_rate(threads, args.core_k, args.nodes))
                progress.step(f"round {round_ + 1}: C core loop, {threads} threads")
        progress.end_round(round_ + 1)
    progress.close()

    result = {
        "interpreter": info,
        "nodes": args.nodes,
        "rounds": args.rounds,
        "threads": thread_counts,
        "single_thread_ns": {k: statistics.median(v) for k, v in single.items()},
        # Median over rounds of each round's ratio to that round's next().
        "single_thread_ratio": {
            k: statistics.median(a / b for a, b in zip(v, single["next()"], strict=True)) for k, v in single.items()
        },
        # Median over rounds of each round's weighted / unweighted next() at a size.
        "weighted_next_ratio": {
            f"next(), {size} nodes": statistics.median(
                a / b
                for a, b in zip(
                    single[f"next(), {size} nodes, weights 1..10^6"], single[f"next(), {size} nodes"], strict=True
                )
            )
            for size in WEIGHTED_SIZES
        },
        "build_ms": {k: statistics.median(v) * 1e3 for k, v in built.items()},
        # Median over rounds of each round's ratio to that round's unweighted build.
        "build_ratio": {
            k: statistics.median(a / b for a, b in zip(v, built[builds[k][2]], strict=True)) for k, v in built.items()
        },
        "weighted_share": weighted_share(),
        "throughput": {n: {t: statistics.median(v) for t, v in d.items()} for n, d in threaded.items()},
        "core_loop": {t: statistics.median(v) for t, v in core.items()} if IMPLEMENTATION == "c" else {},
        "raw": {"single_thread_ns": single, "build_s": built, "throughput": threaded, "core_loop": core},
    }
    return result


DESCRIPTION = """\
Measures gonka_pool against the pools a user would write, on the running
interpreter: next() on the C core and on the pure-Python twin, a pool with a
threading.Lock around its cursor, an itertools.count pool, an ft_utils
AtomicInt64 pool (when installed), and the floors lst.__len__() and s.isascii()
(a bare C method call on a shared object).  Each runs on 1 thread and on more,
started on a barrier; rounds are interleaved and medians reported, every figure
also as a ratio to gonka_pool's single-thread next().  Weighted pools of 1,000
and 10,000 nodes (weights 1..10**6) are measured beside unweighted ones: next(),
building one, and the share error of 10**6 picks.
"""

# Shared with __main__, whose "bench" subcommand is this same parser.
HELP = "measure gonka_pool against hand-written pools, on this interpreter"
PARSER_OPTIONS: dict[str, Any] = {
    "description": DESCRIPTION,
    "formatter_class": argparse.RawDescriptionHelpFormatter,
}


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add bench's options to ``parser``: the standalone one or __main__'s subcommand."""
    # Each help names its default by hand: ArgumentDefaultsHelpFormatter would print
    # "default: None" where None stands for "2x the core count" or "not written".
    parser.add_argument(
        "--rounds",
        type=at_least(1),
        default=9,
        help="interleaved rounds; medians are over these (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=positive_seconds,
        default=0.05,
        help="target time of one measurement, in seconds (default: %(default)s)",
    )
    # The single-thread cases call mark_failed(1, ...), so a pool needs a node 1.
    parser.add_argument(
        "--nodes", type=at_least(2), default=8, help="endpoints in each pool, at least 2 (default: %(default)s)"
    )
    threads = parser.add_mutually_exclusive_group()
    threads.add_argument(
        "--max-threads",
        type=at_least(1),
        default=None,
        metavar="N",
        help=f"measure 1, 2, ... N threads (default: twice the core count, {default_max_threads()} here)",
    )
    threads.add_argument(
        "--threads",
        type=thread_counts,
        default=None,
        metavar="1,2,4,...",
        help="the thread counts to measure, which must include 1 (default: 1 to --max-threads)",
    )
    parser.add_argument(
        "--core-k",
        type=at_least(1),
        default=2_000_000,
        metavar="K",
        help="selections per thread in the C core's own loop (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the raw data as JSON to FILE (default: not written)")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw throughput against threads to FILE.png; needs matplotlib (default: not drawn)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on stderr (default: progress as a line rewritten in "
        "place on a terminal, one line per round otherwise)",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    return configure(argparse.ArgumentParser(prog="python -m gonka_pool bench", **PARSER_OPTIONS))


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What no type= function sees: the installed packages and the output folders.
    Checked before measuring, so that a run does not end in an error it could have
    reported at once."""
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib, which is not installed (pip install matplotlib, or leave out --plot)")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                parser.error(f"{option}: no such folder: {folder}")


def execute(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    check(parser, args)
    result = run(args)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        plot(result, args.plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return execute(parser, parser.parse_args(argv))
