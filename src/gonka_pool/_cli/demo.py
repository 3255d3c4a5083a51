"""``python -m gonka_pool demo``: the pool's behaviour in a few readable lines,
then failover over HTTP to local nodes (``demo_http``) and against a local
Gonka network (``demo_gonka``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .. import IMPLEMENTATION, EndpointPool, GonkaEndpoint

HELP = "show round robin, a cooldown and the all-cooling fallback"
PARSER_OPTIONS: dict[str, Any] = {
    "description": "Show round robin, a cooldown, the all-cooling fallback, and failover over HTTP to local nodes.",
}


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

    from .demo_http import demo_http

    failed = demo_http()
    from .demo_gonka import demo_gonka

    failed += demo_gonka()
    if failed:
        raise SystemExit(f"demo: {failed} requests failed over HTTP")


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo takes no options."""
    return parser


def execute(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    demo()
    return 0
