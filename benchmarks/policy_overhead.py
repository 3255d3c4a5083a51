"""What weights and the policy machinery cost ``next()`` (issue: within 10%).

Compares, interleaved round by round in one process, ``pool.next()`` on:

* the core before the policies existed (commit 18e6dc9: no membership pointer, no
  schedule, no failure counters), loaded from ``--baseline PATH`` (its ``_pool``
  shared object, built by ``make bench-policy``);
* today's core, equal weights (the plain path);
* today's core, weighted (one extra table read per pick);

and prints medians as ratios to the baseline.

    make bench-policy
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import timeit

from gonka_pool import EndpointPool, GonkaEndpoint


def load_baseline(path: str):
    spec = importlib.util.spec_from_file_location("_pool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="the pre-policy _pool shared object")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()

    endpoints = [GonkaEndpoint(f"https://n{i}.example", f"a{i}") for i in range(8)]
    old = load_baseline(args.baseline).EndpointPoolCore(tuple(endpoints))  # its name then
    cases = {
        "before the policies": old,
        "now, equal weights": EndpointPool(endpoints),
        "now, weights 1..8": EndpointPool(endpoints, weights=range(1, 9)),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, pool in cases.items():
            samples[name].append(timeit.timeit("pool.next()", globals={"pool": pool}, number=args.calls))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"Python {sys.version.split()[0]}, GIL {'enabled' if gil else 'disabled'}; "
        f"{args.rounds} interleaved rounds x {args.calls} calls of pool.next(), medians"
    )
    base = statistics.median(samples["before the policies"])
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"  {name:22s} {med / args.calls * 1e9:6.1f} ns   {med / base:5.2f}x")


if __name__ == "__main__":
    main()
