"""Why calls on one shared object stop scaling on free-threaded CPython, and what
a caller can do about it.

On 3.13t every ``obj.method()`` in a thread first increments ``obj``'s reference
count; from any thread but the one that created ``obj`` that is an atomic add on
one cache line that every calling thread writes.  The C work behind
``pool.next()`` scales (``python -m gonka_pool bench``'s nogil core loop), but the
Python call on a shared pool bounces that line between cores.  This measures, for
1..N threads started on a barrier, rounds interleaved, medians of the aggregate
calls/s as a ratio to one thread of ``pool.next()``:

* ``shared pool: obj.next()``: one pool, every thread calls it;
* ``shared pool: next_ = obj.next, next_()``: the same pool, but each thread takes
  the bound method once (an object of its own) and calls that, so the pool's
  reference count is not touched per call;
* ``pool per thread``: each thread builds its own pool (the upper bound);
* the floors ``lst.__len__()`` shared and per thread.

    PYTHON_GIL=0 .venv-ft/bin/python benchmarks/shared_object_scaling.py --threads 1,2,4,8,16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from gonka_pool import EndpointPool, GonkaEndpoint
from gonka_pool._cli.bench import make_runner, measure

ENDPOINTS = [GonkaEndpoint(f"https://node{i}.example", f"a{i}") for i in range(8)]

# name -> (the object every thread gets, "setup once per thread; the repeated call")
CASES = {
    "shared pool: obj.next()": ("pool", "obj.next()"),
    "shared pool: next_ = obj.next; next_()": ("pool", "next_ = obj.next; next_()"),
    "pool per thread (built in it): obj.next()": ("factory", "obj = obj(); obj.next()"),
    "shared list: obj.__len__()": ("list", "obj.__len__()"),
    "list per thread: obj.__len__()": ("list", "obj = list(obj); obj.__len__()"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    default = ",".join(str(t) for t in (1, 2, 4, 8, 16) if t <= 2 * (os.cpu_count() or 1))
    parser.add_argument("--threads", default=default)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=20_000)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    shared = {"pool": EndpointPool(ENDPOINTS), "factory": lambda: EndpointPool(ENDPOINTS), "list": list(range(8))}
    runs = {name: make_runner(expression) for name, (_, expression) in CASES.items()}
    results: dict[str, dict[int, list[float]]] = {name: {t: [] for t in counts} for name in CASES}
    for _ in range(args.rounds):
        for t in counts:
            for name, (kind, _) in CASES.items():
                results[name][t].append(measure(shared[kind], runs[name], t, args.reps))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"Python {sys.version.split()[0]}, GIL {'on' if gil else 'off'}, {os.cpu_count()} cores, "
        f"{args.rounds} interleaved rounds, medians; aggregate calls/s as a ratio to one thread "
        "of shared pool obj.next()"
    )
    ref = statistics.median(results["shared pool: obj.next()"][1])
    print(f"  {'':44s}" + "".join(f"{t:>7d}T" for t in counts))
    for name, by_t in results.items():
        print(f"  {name:44s}" + "".join(f"{statistics.median(by_t[t]) / ref:7.2f}x" for t in counts))


if __name__ == "__main__":
    main()
