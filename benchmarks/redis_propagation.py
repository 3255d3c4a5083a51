"""How long a mark takes to reach another process's ``next()`` through Redis.

Starts ``redis-server`` on a free port of 127.0.0.1 (no persistence), and a second
process (multiprocessing spawn) whose pool shares its health with this one's through
``gonka_pool.redis.RedisHealth``.  For each of ``--marks`` rounds the child marks a
node (a fresh one each time, 30 s) and sends the ``time.monotonic()`` at which
``mark_failed`` returned; this process polls ``pool.next()`` every 0.1 ms until it
no longer returns that node and records the difference (one clock: both processes read the
same CLOCK_MONOTONIC).  Prints the median, 90th and 99th percentile and the maximum.

    python benchmarks/redis_propagation.py --marks 200
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import time


def endpoints(n: int):
    """One node per mark and one more: each mark enters a cooldown, on a healthy node."""
    from gonka_pool import GonkaEndpoint

    return [GonkaEndpoint(f"https://node{i}.example", f"addr{i}") for i in range(n)]


def child(port: int, n: int, commands, replies) -> None:
    import redis

    from gonka_pool import EndpointPool
    from gonka_pool.redis import RedisHealth

    pool = EndpointPool(endpoints(n), start=0)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    with RedisHealth(pool, client, channel="bench") as health:
        while not health.stats()["connected"]:
            time.sleep(0.001)
        replies.put("ready")
        for index in iter(commands.get, None):
            pool.mark_failed(index, 30)
            replies.put(time.monotonic())
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--marks", type=int, default=200)
    args = parser.parse_args()

    import redis

    from gonka_pool import IMPLEMENTATION, EndpointPool
    from gonka_pool.redis import RedisHealth
    from gonka_pool.testing import LocalRedis

    if shutil.which("redis-server") is None:
        sys.exit("needs redis-server (Debian: apt-get install redis-server)")
    server = LocalRedis()
    server.start()
    port = server.port
    context = multiprocessing.get_context("spawn")
    commands, replies = context.Queue(), context.Queue()
    process = None
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        n = args.marks + 1
        process = context.Process(target=child, args=(port, n, commands, replies))
        process.start()
        pool = EndpointPool(endpoints(n), start=0)
        delays = []
        # Every node but one gets marked: trust this Redis with all of them (by
        # default remote events cool at most half).
        with RedisHealth(pool, client, channel="bench", max_remote_cooling=1.0):
            assert replies.get(timeout=60) == "ready"
            for index in range(args.marks):
                node = pool.endpoints[index]
                commands.put(index)
                marked_at = replies.get(timeout=10)
                limit = time.monotonic() + 5
                # One full round of next(): the node is seen cooling once it is skipped.
                # The 0.1 ms sleeps stand for a request's I/O: a thread spinning on
                # next() with the GIL would hold off the listener thread for the
                # switch interval (5 ms), which no real request loop does.
                while node in pool.next_many(n):
                    if time.monotonic() > limit:
                        sys.exit(f"mark {index} not seen within 5 s")
                    time.sleep(0.0001)
                delays.append(time.monotonic() - marked_at)
            commands.put(None)
        process.join(30)
    finally:
        if process is not None and process.is_alive():
            process.kill()
        client.close()
        server.kill()
    delays.sort()
    ms = [d * 1e3 for d in delays]

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(p * len(ms)))]

    print(
        f"Python {sys.version.split()[0]}, core {IMPLEMENTATION!r}, {len(ms)} marks, "
        f"two processes through redis-server on loopback: median "
        f"{statistics.median(ms):.2f} ms, p90 {pct(0.9):.2f} ms, p99 {pct(0.99):.2f} ms, "
        f"max {ms[-1]:.2f} ms"
    )


if __name__ == "__main__":
    main()
