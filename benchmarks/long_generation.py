"""How long one long non-streamed generation keeps its node from looking as fast as
it is, with the peak-EWMA clip (``_balance.PEAK_CLIP``: a sample counts at most 4x
the estimate) and without it (Finagle's rule: a slower sample replaces the estimate).

A simulation on the pool's test clock, so it is exact and instant: 8 equal nodes
answering in 200 ms (each takes any number at once), Poisson arrivals at 40 a
second (seeded), picks by
``acquire()``; at t = 10 s one request to node 0 is a non-streamed generation that
takes ``--long`` seconds (its answer is the node's latency sample when it arrives).
Printed: node 0's share of the picks in each 5 s window after that answer, and the
time from that answer until node 0 has had its fair share (1/8) over 5 s again.
The clip-free run uses the twin with PEAK_CLIP raised (the rules are the same
functions in both cores; the C core's clip is compiled in).

    PYTHONPATH=src python benchmarks/long_generation.py --long 30
"""

from __future__ import annotations

import argparse
import heapq
import random

from gonka_pool import GonkaEndpoint, _balance, _pool_py

MS = 1_000_000
STEP_NS = 25 * MS
SERVICE_NS = 200 * MS
T0 = 10**12


def simulate(long_s: float, horizon_s: float, nodes: int, core=None, seed: int = 1) -> tuple[float, list[float]]:
    """(seconds until node 0 is back to its share, node 0's share per 5 s window)."""
    endpoints = [GonkaEndpoint(f"https://n{i}.example", f"a{i}") for i in range(nodes)]
    pool = (core or _pool_py).EndpointPool(endpoints, start=0)
    now = T0
    pool._set_clock(now)
    done: list[tuple[int, int, object]] = []  # (time, sequence, lease)
    sequence = 0
    long_sent = False
    long_answered = None
    picks: list[tuple[int, int]] = []  # (time, node)
    arrivals = random.Random(seed)
    while now < T0 + int(horizon_s * 1e9):
        now += int(arrivals.expovariate(1.0) * STEP_NS) + 1
        while done and done[0][0] <= now:
            when, _, lease = heapq.heappop(done)
            pool._set_clock(when)
            lease.success()
            if lease is long_sent:
                long_answered = when
        pool._set_clock(now)
        lease = pool.acquire()
        picks.append((now, lease.index))
        latency = SERVICE_NS
        if not long_sent and lease.index == 0 and now >= T0 + 10 * 10**9:
            latency = int(long_s * 1e9)
            long_sent = lease
        sequence += 1
        heapq.heappush(done, (now + latency, sequence, lease))
    assert long_answered is not None, "raise --horizon: the long answer never came"
    shares = []
    back = None
    window = 5 * 10**9
    start = long_answered
    while start + window <= now:
        in_window = [node for t, node in picks if start <= t < start + window]
        share = in_window.count(0) / len(in_window)
        shares.append(share)
        start += window
    # The first 5 s window (sliding by one pick) where node 0 had 90% of its fair share again.
    for t0, _ in picks:
        if t0 < long_answered:
            continue
        in_window = [node for t, node in picks if t0 <= t < t0 + window]
        if t0 + window > now:
            break
        if in_window.count(0) >= len(in_window) / nodes * 0.9:
            back = (t0 - long_answered) / 1e9
            break
    return (float("inf") if back is None else back), shares


def _back(seconds: float, horizon: float) -> str:
    if seconds == float("inf"):
        return f"not back to its share within {horizon:.0f} s"
    return f"back to its share after {seconds:5.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=float, default=30.0, help="the long generation, seconds (default 30)")
    parser.add_argument("--horizon", type=float, default=120.0, help="simulated seconds (default 120)")
    parser.add_argument("--nodes", type=int, default=8)
    args = parser.parse_args()
    try:
        from gonka_pool import _pool as core
    except ImportError:
        core = None
    runs = [("C core, clip 4x", core), ("twin, clip 4x", _pool_py)] if core else [("twin, clip 4x", _pool_py)]
    for name, module in runs:
        back, shares = simulate(args.long, args.horizon, args.nodes, module)
        print(
            f"{name:28s} {_back(back, args.horizon)}; node 0's share per 5 s: "
            + " ".join(f"{share:.0%}" for share in shares[:8])
        )
    clip = _balance.PEAK_CLIP
    _balance.PEAK_CLIP = 10**9
    try:
        back, shares = simulate(args.long, args.horizon, args.nodes, _pool_py)
    finally:
        _balance.PEAK_CLIP = clip
    print(
        f"{'twin, no clip (Finagle)':28s} {_back(back, args.horizon)}; node 0's share per 5 s: "
        + " ".join(f"{share:.0%}" for share in shares[:8])
    )


if __name__ == "__main__":
    main()
