"""What ``shared=`` costs a pool: ``next()`` and marks on a shared pool against the same
calls on an unshared one, in one process, interleaved rounds, medians.

Two cases for ``next()``: no node cooling (the path nearly every call takes: one
load of the cooling count, from the segment instead of the pool's own block) and
one node of 8 cooling (the clock path, each deadline read through the node's record
number).  The issue's goals: shared ``next()`` at most 1.1x unshared; a mark at most
2x ``next()``.

    python setup.py -q build_ext --inplace   # or pip install . (then the installed core is timed)
    python benchmarks/shared_cost.py --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import timeit
import uuid
from importlib.machinery import EXTENSION_SUFFIXES

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
# This checkout's core when it is built in place; else the installed package's (a
# source tree without the built core, first on the path, would shadow it).
if any(
    name.startswith("_pool.") and name.endswith(tuple(EXTENSION_SUFFIXES)) for name in os.listdir(SRC + "/gonka_pool")
):
    sys.path.insert(0, SRC)
else:
    sys.path.append(SRC)

from gonka_pool import GonkaEndpoint  # noqa: E402 - after the path is chosen

try:
    from gonka_pool import _pool
except ImportError:
    sys.exit(
        "shared_cost.py times the C core, which is neither built in this checkout nor installed: "
        "run `python setup.py -q build_ext --inplace` (or `pip install .`) first"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    name = f"bench-{uuid.uuid4().hex[:12]}"
    endpoints = [GonkaEndpoint(f"https://n{i}.example", f"a{i}") for i in range(8)]
    pools = {"unshared": _pool.EndpointPool(endpoints), "shared": _pool.EndpointPool(endpoints, shared=name)}
    cooling = {
        "unshared": _pool.EndpointPool(endpoints),
        "shared": _pool.EndpointPool(endpoints[::-1], shared=name + "-c"),
    }
    for pool in cooling.values():
        pool.mark_failed(endpoints[3], 3600.0)
    # Statements on bound methods, as mark_cost.py times them: no Python frame of ours.
    cases = {}
    for kind in pools:
        cases[f"next() {kind}"] = ("nxt()", {"nxt": pools[kind].next})
        cases[f"next() 1 of 8 cooling, {kind}"] = ("nxt()", {"nxt": cooling[kind].next})
        cases[f"mark_failed(i, 30.0) {kind}"] = ("mark(1, 30.0)", {"mark": pools[kind].mark_failed})
    samples: dict[str, list[float]] = {case: [] for case in cases}
    try:
        for _ in range(args.rounds):
            for case, (stmt, names) in cases.items():
                best = min(timeit.repeat(stmt, globals=names, number=args.calls, repeat=3))
                samples[case].append(best / args.calls * 1e9)
    finally:
        _pool.EndpointPool.unlink_shared(name)
        _pool.EndpointPool.unlink_shared(name + "-c")
    medians = {case: statistics.median(values) for case, values in samples.items()}
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"Python {sys.version.split()[0]}, GIL {'enabled' if gil else 'disabled'}; "
        f"{args.rounds} interleaved rounds, medians, one thread"
    )
    for case, ns in medians.items():
        print(f"  {case:38s} {ns:6.1f} ns")
    print(f"  shared / unshared next():           {medians['next() shared'] / medians['next() unshared']:.2f}x")
    print(
        f"  shared / unshared, 1 of 8 cooling:  "
        f"{medians['next() 1 of 8 cooling, shared'] / medians['next() 1 of 8 cooling, unshared']:.2f}x"
    )
    print(
        f"  shared mark_failed / shared next(): "
        f"{medians['mark_failed(i, 30.0) shared'] / medians['next() shared']:.2f}x"
    )


if __name__ == "__main__":
    main()
