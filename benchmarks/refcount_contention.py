"""What the returned endpoint's reference count costs two threads (free-threaded).

Two threads calling ``pool.next()`` on one shared pool also write the reference
count of every endpoint they return; on 3.13t a non-owner thread's increment is an
atomic add on a line the other thread writes too.  This compares, interleaved round
by round, the 2-thread/1-thread scaling of ``pool.next()``:

* with per-stripe copies (the default on free-threaded builds for small pools);
* without them (every thread returns the same objects);
* returning immortal objects (small ints; the lower bound on that cost);
* and the floors ``lst.__len__()`` / ``s.isascii()`` on a shared object.

    PYTHON_GIL=0 .venv-ft/bin/python benchmarks/refcount_contention.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from gonka_pool import EndpointPool, GonkaEndpoint, _pool

UNROLL = 10


def runner(expression: str):
    namespace: dict = {}
    body = "".join(f"        {expression}\n" for _ in range(UNROLL))
    exec(f"def run(obj, reps):\n    for _ in range(reps):\n{body}", namespace)  # noqa: S102
    return namespace["run"]


def rate(obj, run, threads: int, reps: int) -> float:
    barrier = threading.Barrier(threads)
    spans = []

    def body():
        barrier.wait()
        start = time.perf_counter()
        run(obj, reps)
        spans.append((start, time.perf_counter()))

    workers = [threading.Thread(target=body) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return threads * reps * UNROLL / (max(e for _, e in spans) - min(s for s, _ in spans))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--reps", type=int, default=100_000)
    args = parser.parse_args()
    endpoints = [GonkaEndpoint(f"https://node{i}.example", f"a{i}") for i in range(8)]
    _pool._set_stripe_copies(True)
    with_copies = EndpointPool(endpoints)
    _pool._set_stripe_copies(False)
    shared = EndpointPool(endpoints)
    immortal = EndpointPool(endpoints)
    immortal._replace(tuple(range(8)))  # small ints are immortal
    _pool._set_stripe_copies(True)
    cases = {
        "next(), per-stripe copies": (with_copies, "obj.next()"),
        "next(), shared endpoints": (shared, "obj.next()"),
        "next(), immortal objects": (immortal, "obj.next()"),
        "floor: lst.__len__()": (list(range(8)), "obj.__len__()"),
        "floor: s.isascii()": ("node" * 8, "obj.isascii()"),
    }
    runners = {name: runner(expr) for name, (_, expr) in cases.items()}
    samples = {name: {1: [], 2: []} for name in cases}
    for _ in range(args.rounds):
        for name, (obj, _) in cases.items():
            for threads in (1, 2):
                samples[name][threads].append(rate(obj, runners[name], threads, args.reps))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"Python {sys.version.split()[0]}, GIL {'enabled' if gil else 'disabled'}, "
        f"per-stripe copies built: {_pool.FREE_THREADED}; {args.rounds} interleaved rounds, medians"
    )
    for name in cases:
        one, two = (statistics.median(samples[name][t]) for t in (1, 2))
        print(f"  {name:28s} 1T {one / 1e6:6.1f} M/s  2T {two / 1e6:6.1f} M/s  2T/1T {two / one:4.2f}")
    print("(2 threads on a 2-core machine: scaling is bounded by the cores)")


if __name__ == "__main__":
    main()
