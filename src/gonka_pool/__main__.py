"""``python -m gonka_pool demo``: the pool's behaviour in a few readable lines."""

from __future__ import annotations

import argparse
import sys
import time

from . import IMPLEMENTATION, EndpointPool, GonkaEndpoint


def _names(pool: EndpointPool, k: int) -> str:
    return " ".join(pool.next().base_url.removeprefix("https://") for _ in range(k))


def demo() -> None:
    pool = EndpointPool(
        GonkaEndpoint(f"https://node{i}.gonka.example", f"gonka1node{i}") for i in (1, 2, 3)
    )
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"gonka_pool demo: implementation={IMPLEMENTATION}, Python {sys.version.split()[0]}, "
          f"GIL {'enabled' if gil else 'disabled'}")
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

    if demo_http():
        raise SystemExit("demo: some requests failed over HTTP")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gonka_pool")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="show round robin, a cooldown and the all-cooling fallback")
    commands.add_parser("bench", help="benchmark against hand-written pools (--help for options)",
                        add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from ._bench import main as bench_main

        return bench_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
