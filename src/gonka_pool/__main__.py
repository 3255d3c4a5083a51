"""``python -m gonka_pool demo``: the pool's behaviour in a few readable lines."""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import IMPLEMENTATION, EndpointPool, GonkaEndpoint


def _names(pool: EndpointPool, k: int) -> str:
    return " ".join(pool.next().base_url.removeprefix("https://") for _ in range(k))


def demo() -> None:
    pool = EndpointPool(GonkaEndpoint(f"https://node{i}.gonka.example", f"gonka1node{i}") for i in (1, 2, 3))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"gonka_pool demo: implementation={IMPLEMENTATION}, Python {sys.version.split()[0]}, "
        f"GIL {'enabled' if gil else 'disabled'}"
    )
    print(f"round robin:         {_names(pool, 6)}")

    cooldown = 0.3
    pool.mark_failed(1, cooldown)
    print(f"node2 failed, cooling down for {cooldown} s")
    print(f"  while cooling:     {_names(pool, 6)}")
    time.sleep(cooldown + 0.05)
    print(f"  after {cooldown} s:       {_names(pool, 6)}")

    pool.mark_failed(0, 60)
    pool.mark_failed(1, 10)
    pool.mark_failed(2, 30)
    print("all nodes cooling (node1 60 s, node2 10 s, node3 30 s):")
    print(f"  fallback, earliest to recover: {_names(pool, 3)}")
    for i in range(3):
        pool.mark_failed(i, 0)
    print(f"cleared with mark_failed(i, 0): {_names(pool, 3)}")

    from ._demo_http import demo_http

    failed = demo_http()
    from ._demo_gonka import demo_gonka

    failed += demo_gonka()
    if failed:
        raise SystemExit(f"demo: {failed} requests failed over HTTP")


def main(argv: list[str] | None = None) -> int:
    from . import _bench

    parser = argparse.ArgumentParser(
        prog="python -m gonka_pool", description="gonka_pool from the command line: a demo of the pool, and benchmarks."
    )
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    commands.add_parser(
        "demo",
        help="show round robin, a cooldown and the all-cooling fallback",
        description="Show round robin, a cooldown, the all-cooling fallback, and failover over HTTP to local nodes.",
    )
    # bench's own parser, not a pass-through: "bench --help" and a bad bench option then
    # come from argparse with bench's usage, and only one place defines the options.
    bench = _bench.configure(
        commands.add_parser(
            "bench", help="measure gonka_pool against hand-written pools, on this interpreter", **_bench.PARSER_OPTIONS
        )
    )
    from . import _bench_failover

    bench_failover = _bench_failover.configure(
        commands.add_parser(
            "bench-failover",
            help="requests lost to bad nodes: fixed attempts against attempts=None",
            **_bench_failover.PARSER_OPTIONS,
        )
    )
    from . import _bench_scaleout

    bench_scaleout = _bench_scaleout.configure(
        commands.add_parser(
            "bench-scaleout",
            help="bad-node attempts across worker processes: independent or shared=",
            **_bench_scaleout.PARSER_OPTIONS,
        )
    )
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench.execute(bench, args)
    if args.command == "bench-failover":
        return _bench_failover.execute(bench_failover, args)
    if args.command == "bench-scaleout":
        return _bench_scaleout.execute(bench_scaleout, args)
    demo()
    return 0


def _run() -> int:
    try:
        status = main()
        sys.stdout.flush()  # inside the try: a pipe's reader may be gone by now
        return status
    except BrokenPipeError:
        # The reader went away (`python -m gonka_pool demo | head`): stop quietly, as
        # the Python docs advise for SIGPIPE, pointing stdout at devnull so the
        # interpreter's final flush does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(_run())
