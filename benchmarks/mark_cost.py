"""What a mark costs against ``next()``, today against an older build, in one run.

Each round times, in a fresh interpreter per build (two builds of ``gonka_pool``
cannot share one process), ``pool.next()``, ``mark_failed(i, 30.0)``,
``mark_failed(i)`` (the backoff policy), ``mark_failed(i, 0)``, ``mark_failed(ep)``
(an endpoint target) and ``mark_failed(i, timedelta(seconds=30))`` on a pool of 8;
rounds alternate the builds, and medians over rounds are printed with each mark as
a ratio to the same build's ``next()``.

    git worktree add --detach /tmp/base 91981ad
    (cd /tmp/base && python setup.py -q build_ext --inplace)
    python setup.py -q build_ext --inplace
    python benchmarks/mark_cost.py --baseline-src /tmp/base/src --rounds 5
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROUND = r"""
import sys, timeit
from datetime import timedelta
sys.path.insert(0, sys.argv[1])
from gonka_pool import _pool, GonkaEndpoint
pool = _pool.EndpointPool([GonkaEndpoint(f"https://n{i}.example", f"a{i}") for i in range(8)])
nxt, mark = pool.next, pool.mark_failed
ep, td = pool.endpoints[2], timedelta(seconds=30)
calls = int(sys.argv[2])
cases = {"next()": "nxt()", "mark_failed(i, 30.0)": "mark(1, 30.0)",
         "mark_failed(i)": "mark(1)", "mark_failed(i, 0)": "mark(1, 0)",
         "mark_failed(ep)": "mark(ep)", "mark_failed(i, timedelta)": "mark(1, td)"}
print({name: min(timeit.repeat(stmt, globals=globals(), number=calls, repeat=3)) / calls * 1e9
       for name, stmt in cases.items()})
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-src", required=True, help="the src/ folder of an older checkout, built in place")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    builds = {"baseline": os.path.abspath(args.baseline_src), "this tree": os.path.join(os.path.dirname(HERE), "src")}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, src in builds.items():
            out = subprocess.run(
                [sys.executable, "-c", ROUND, src, str(args.calls)], capture_output=True, text=True, check=True
            ).stdout
            samples[name].append(ast.literal_eval(out))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"Python {sys.version.split()[0]}, GIL {'enabled' if gil else 'disabled'}; "
        f"{args.rounds} interleaved rounds, medians; ratio to the same build's next()"
    )
    for name, rounds in samples.items():
        medians = {case: statistics.median(r[case] for r in rounds) for case in rounds[0]}
        base = medians["next()"]
        print(f"  {name}: " + ", ".join(f"{case} {ns:.1f} ns ({ns / base:.2f}x)" for case, ns in medians.items()))


if __name__ == "__main__":
    main()
