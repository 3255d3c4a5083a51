"""Does releasing the GIL around selection pay?  (The decisions recorded in docs/performance.md.)

Measures, interleaved round by round on the running interpreter, the per-call cost of
``pool.next()`` (GIL held), ``pool._next_releasing_gil()`` (``with nogil`` around the
same selection) and a floor call, and prints medians as ratios to ``next()``; then,
for batches of k selections in C (``_select_loop(k)``), what releasing the GIL around
the loop adds, which sets ``next_many``'s threshold.

    python benchmarks/gil_release.py [--rounds 15] [--calls 200000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit

import gonka_pool
from gonka_pool import EndpointPool, GonkaEndpoint


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()

    pool = EndpointPool(GonkaEndpoint(f"https://n{i}.example", f"a{i}") for i in range(8))
    floor_obj = 12345
    cases = {
        "next() (GIL held)": pool.next,
        "next() with nogil": pool._next_releasing_gil,
        "floor: int.bit_length()": floor_obj.bit_length,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():  # interleaved: drift hits every case alike
            t = timeit.Timer(fn).timeit(args.calls)
            samples[name].append(t / args.calls * 1e9)
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"Python {sys.version.split()[0]}, GIL {'enabled' if gil else 'disabled'}, "
        f"implementation {gonka_pool.IMPLEMENTATION}; {args.rounds} interleaved rounds "
        f"x {args.calls} calls, medians"
    )
    base = statistics.median(samples["next() (GIL held)"])
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"  {name:26s} {med:7.1f} ns/call   {med / base:5.2f}x next()")

    print("Batches of k selections in C: cost of releasing the GIL around the loop")
    for k in (64, 256, 1024, 4096, 16384):
        held, released = [], []
        calls = max(20, args.calls // k)
        for _ in range(args.rounds):
            held.append(timeit.Timer(lambda: pool._select_loop(k, False)).timeit(calls))  # noqa: B023 - timed now
            released.append(timeit.Timer(lambda: pool._select_loop(k, True)).timeit(calls))  # noqa: B023 - timed now
        h, r = statistics.median(held), statistics.median(released)
        print(
            f"  k={k:6d}  GIL held {h / calls / k * 1e9:5.2f} ns/pick   released "
            f"{r / calls / k * 1e9:5.2f} ns/pick   +{(r / h - 1) * 100:5.1f}%"
        )


if __name__ == "__main__":
    main()
