"""``python -m gonka_pool top --shared NAME`` (or ``--redis URL``): the nodes' health
as the workers of this host (or every process on a Redis) share it, as a table
redrawn in place on a terminal, or printed once otherwise (a pipe, a file, cron).

Reads only (``health_sources``): no pool is built, no record claimed, no expired
Redis entry deleted.  Neither store keeps a failure's reason; the table says so and
shows what they keep (the time since the last failure, in a segment).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, TextIO

from .argtypes import at_least, positive_seconds
from .health_sources import NodeHealth, SourceError, endpoints_from_text, read_redis, read_segment

HELP = "a live table of the node health shared through shared= or Redis"
PARSER_OPTIONS: dict[str, Any] = {
    "description": (
        "Show the node health that the workers of this host share (--shared NAME, the pools' shared= "
        "segment) or that RedisHealth keeps (--redis URL): state, cooldown left, consecutive and total "
        "failures, time since the last failure.  Redrawn in place on a terminal; printed once otherwise."
    ),
}
# Redraws the whole screen from its top-left corner: no curses, so any terminal and
# no terminal library.
_CLEAR = "\x1b[H\x1b[2J"
_REASON_NOTE = (
    "last reason: not stored in {store}; each cooldown's reason is in the pool's WARNING log record "
    "(logger 'gonka_pool', attribute gonka_reason) of the process that failed"
)


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--shared", metavar="NAME", help="the segment the pools use (EndpointPool(shared=NAME))")
    source.add_argument("--redis", metavar="URL", help="the Redis RedisHealth uses, e.g. redis://localhost:6379/0")
    parser.add_argument(
        "--uid",
        type=at_least(0),
        default=None,
        help="the user whose segment to read (segments are per user; default: yours)",
    )
    parser.add_argument("--channel", default="gonka_pool", help="RedisHealth's channel (default: gonka_pool)")
    parser.add_argument(
        "--endpoints",
        metavar="URL;ADDRESS,...",
        default=None,
        help="the nodes, as GONKA_ENDPOINTS lists them (the default): a segment stores a hash of each "
        "node, so only listed nodes are named; with --redis, listed nodes Redis does not hold show as available",
    )
    parser.add_argument("--interval", type=positive_seconds, default=1.0, help="seconds between redraws (default 1)")
    parser.add_argument("--count", type=at_least(1), default=None, help="stop after this many redraws")
    parser.add_argument("--once", action="store_true", help="print one snapshot even on a terminal")
    return parser


def execute(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    return top(args, sys.stdout)


def top(args: argparse.Namespace, out: TextIO) -> int:
    text = args.endpoints if args.endpoints is not None else os.environ.get("GONKA_ENDPOINTS", "")
    try:
        endpoints = endpoints_from_text(text)
    except ValueError as exc:
        print(f"top: --endpoints: {exc}", file=sys.stderr)
        return 2
    client = None
    if args.redis is not None:
        try:
            import redis
        except ImportError:
            print("top: --redis needs redis-py (pip install 'gonka-pool[redis]')", file=sys.stderr)
            return 2
        client = redis.Redis.from_url(args.redis, socket_timeout=5, socket_connect_timeout=5)
    live = out.isatty() and not args.once
    shown = 0
    try:
        while True:
            try:
                screen = _screen(args, client, endpoints)
            except SourceError as exc:
                print(f"top: {exc}", file=sys.stderr)
                return 1
            out.write((_CLEAR if live else "") + screen)
            out.flush()
            shown += 1
            if not live or (args.count is not None and shown >= args.count):
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if client is not None:
            client.close()


def _screen(args: argparse.Namespace, client: Any, endpoints: list[Any]) -> str:
    clock = time.strftime("%H:%M:%S")
    if client is None:
        rows, capacity = read_segment(args.shared, endpoints, args.uid)
        title = f"shared segment {args.shared!r}: {len(rows)} nodes (of {capacity} records)"
        note = _REASON_NOTE.format(store="the segment")
    else:
        rows = read_redis(client, args.channel, endpoints)
        title = f"Redis hash '{args.channel}:cooldowns': {len(rows)} nodes"
        note = _REASON_NOTE.format(store="Redis") + "; Redis keeps no total count and no failure time"
    cooling = sum(row.cooling for row in rows)
    lines = [f"{title}, {cooling} cooling, at {clock}", "", *_table(rows), "", note]
    return "\n".join(lines) + "\n"


def _table(rows: list[NodeHealth]) -> list[str]:
    header = ("NODE", "STATE", "COOLDOWN LEFT", "CONSECUTIVE", "TOTAL", "LAST FAILURE")
    # Cooling nodes first, the longest left on top; then by name.
    ordered = sorted(rows, key=lambda row: (not row.cooling, -row.remaining, row.node))
    cells = [header] + [
        (
            row.node,
            ("cooling" if row.remaining != math.inf else "until cleared") if row.cooling else "available",
            _seconds(row.remaining) if row.cooling else "-",
            str(row.consecutive),
            "-" if row.total is None else str(row.total),
            "-" if row.since_failure is None else f"{_seconds(row.since_failure)} ago",
        )
        for row in ordered
    ]
    if not rows:
        cells.append(("(no node recorded yet)", "", "", "", "", ""))
    widths = [max(len(cell[i]) for cell in cells) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]


def _seconds(value: float) -> str:
    if value == math.inf:
        return "inf"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
