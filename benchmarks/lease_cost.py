"""What a lease costs against ``next()``: ``acquire()`` + ``lease.success()`` (and
``+ release()``) on a pool of 8 unweighted nodes, none cooling, for each ``balance``
policy, in one process: interleaved rounds, the median of each round's ratio.
Issue 20's goal: at most 4x ``next()`` on the C core, one thread.

    python setup.py -q build_ext --inplace
    PYTHONPATH=src python benchmarks/lease_cost.py --rounds 41
    PYTHONPATH=src GONKA_POOL_NO_EXTENSIONS=1 python benchmarks/lease_cost.py   # the twin

With ``--threads 2`` (free-threaded builds) each round also times the same loop in
two threads sharing the pool, started on a barrier, and prints the throughput of
two threads against one (a ratio bounded by the machine's cores: say how many);
then the same with each thread on a pool of its own, the bound that sharing one
pool's load counters costs against.  Every ``acquire()`` and settle writes its
node's in-flight count, and a load-aware pick reads every node's: a thread reads,
at each pick, the line the other thread wrote at its last one (``coherence.c``
measures what that costs on the machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import timeit

from gonka_pool import IMPLEMENTATION, EndpointPool, GonkaEndpoint

CALLS = 10  # calls per loop body, unrolled


def loops(pool):
    nxt, acq = pool.next, pool.acquire

    # fmt: off
    def next_loop():
        nxt(); nxt(); nxt(); nxt(); nxt(); nxt(); nxt(); nxt(); nxt(); nxt()  # noqa: E702

    def lease_loop():
        acq().success(); acq().success(); acq().success(); acq().success(); acq().success()  # noqa: E702
        acq().success(); acq().success(); acq().success(); acq().success(); acq().success()  # noqa: E702
    # fmt: on

    return {"next()": next_loop, "acquire()+success()": lease_loop}


def threaded(pool, name: str, threads: int, number: int, make_pool=None) -> float:
    """Calls per second of ``threads`` threads each running the loop ``name`` on
    ``pool`` ``number`` times, each with bound methods of its own (a function or
    bound method shared by threads is a reference count they all write); with
    ``make_pool``, each thread on a pool of its own instead."""
    barrier = threading.Barrier(threads + 1)

    def run():
        fn = loops(pool if make_pool is None else make_pool())[name]
        barrier.wait()
        for _ in range(number):
            fn()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    return threads * number * CALLS / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--number", type=int, default=10_000, help="loop bodies per timing")
    parser.add_argument("--threads", type=int, default=0, help="also time N threads sharing the pool")
    args = parser.parse_args()
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"{IMPLEMENTATION} core, Python {sys.version.split()[0]}, GIL {'on' if gil else 'off'}, 8 nodes")
    for balance in ("peak_ewma", "least_request", "round_robin"):

        def make_pool(balance=balance):
            return EndpointPool([GonkaEndpoint(f"https://n{i}.example", f"a{i}") for i in range(8)], balance=balance)

        pool = make_pool()
        fns = loops(pool)
        times: dict[str, list[float]] = {name: [] for name in fns}
        ratios: list[float] = []
        scaling: dict[str, list[float]] = {}
        apart: list[float] = []
        for _ in range(args.rounds):
            for name, fn in fns.items():
                times[name].append(timeit.timeit(fn, number=args.number) / (args.number * CALLS) * 1e9)
            ratios.append(times["acquire()+success()"][-1] / times["next()"][-1])
            if args.threads:
                for name in fns:
                    one = threaded(pool, name, 1, args.number)
                    scaling.setdefault(name, []).append(threaded(pool, name, args.threads, args.number) / one)
                    if name == "acquire()+success()":
                        apart.append(threaded(pool, name, args.threads, args.number, make_pool) / one)
        line = ", ".join(f"{name} {statistics.median(values):.1f} ns" for name, values in times.items())
        print(f"balance={balance:14s} {line}, ratio {statistics.median(ratios):.2f}x", end="")
        for name, values in scaling.items():
            print(f", {name} {args.threads} threads / 1: {statistics.median(values):.2f}x", end="")
        if apart:
            print(f" (a pool per thread: {statistics.median(apart):.2f}x)", end="")
        print()


if __name__ == "__main__":
    main()
