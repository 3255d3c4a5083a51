"""How much slower the twin (``_pool_py``) is than the C core, call by call: its
usual factor, and where ``acquire()`` + ``success()`` falls in it (issue 20: "the twin
within its usual factor").  Both cores in one process, 8 unweighted nodes, none
cooling unless said; interleaved rounds, the median of each round's twin / C ratio.

    python setup.py -q build_ext --inplace
    PYTHONPATH=src python benchmarks/twin_factor.py --rounds 11
"""

from __future__ import annotations

import argparse
import statistics
import timeit

from gonka_pool import GonkaEndpoint
from gonka_pool._pool import EndpointPool as CPool
from gonka_pool._pool_py import EndpointPool as TwinPool

NODES = [GonkaEndpoint(f"https://n{i}.example", f"a{i}") for i in range(8)]


def calls(pool_type) -> dict:
    """Each measured call as a function of no argument, on pools of ``pool_type``."""
    pool = pool_type(NODES)
    cooling = pool_type(NODES)
    for i in range(7):
        cooling.mark_failed(i, 3600.0)
    by_policy = {
        balance: pool_type(NODES, balance=balance) for balance in ("peak_ewma", "least_request", "round_robin")
    }
    node = NODES[3]
    out = {
        "next()": pool.next,
        "next_indexed()": pool.next_indexed,
        "next() with 7 of 8 cooling": cooling.next,
        "mark_failed(i, 30.0)": lambda: pool.mark_failed(5, 30.0),
        "mark_failed(endpoint, 0)": lambda: pool.mark_failed(node, 0),
        "mark_success(i)": lambda: pool.mark_success(5),
        "snapshot()": pool.snapshot,
    }
    for balance, leased in by_policy.items():
        acquire = leased.acquire
        out[f"acquire()+success(), {balance}"] = lambda acquire=acquire: acquire().success()
    out["acquire()+release(), peak_ewma"] = lambda acquire=by_policy["peak_ewma"].acquire: acquire().release()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seconds", type=float, default=0.02, help="of each timing (default: 0.02)")
    args = parser.parse_args()
    c_calls, twin_calls = calls(CPool), calls(TwinPool)
    ratios: dict[str, list[float]] = {name: [] for name in c_calls}
    times: dict[str, list[float]] = {name: [] for name in c_calls}
    for _ in range(args.rounds):
        for name in c_calls:
            per = []
            for fn in (c_calls[name], twin_calls[name]):
                timer = timeit.Timer(fn)
                number, _ = timer.autorange()
                number = max(1, int(number * args.seconds / 0.2))
                per.append(min(timer.repeat(repeat=3, number=number)) / number)
            times[name].append(per[0])
            ratios[name].append(per[1] / per[0])
    width = max(map(len, ratios))
    print(f"{'call':{width}s}  C core   twin / C")
    for name, values in ratios.items():
        print(f"{name:{width}s}  {statistics.median(times[name]) * 1e9:6.0f} ns  {statistics.median(values):5.1f}x")


if __name__ == "__main__":
    main()
