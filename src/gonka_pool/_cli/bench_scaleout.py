"""``python -m gonka_pool bench-scaleout``: what sharing health across worker processes
buys, independent pools against ``shared=`` and against Redis (``RedisHealth`` through a
``redis-server`` it starts on 127.0.0.1, where redis-server and redis-py are
installed), side by side in one run; and ``shared=`` once more with the pool built
before ``fork()``, as ``gunicorn --preload`` builds it (``preload``).

Four nodes on 127.0.0.1: A and B answer, D is a closed port (refused at once), S
accepts and never answers.  W worker processes (fresh interpreters, as gunicorn or
uvicorn workers are) each build a pool over the four and send requests through
``PoolTransport`` (attempts=None, a fixed cooldown for every failure, a client
timeout) at a steady pace, spread evenly over one interval (independent clients
are not in lockstep).  In ``preload`` one process builds the pool and forks the W
workers, which inherit it.  Reported per mode:
attempts that reached D and S per cooldown window (independent pools: about W
each; shared: about 1, plus requests already on their way when the first failure was
seen), requests delayed by S's timeout, and requests lost.  Then ``next()``'s cost
on a shared pool against an unshared one, single thread, same process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import timeit
import uuid
from collections.abc import Callable
from typing import Any

from .. import IMPLEMENTATION, EndpointPool, GonkaEndpoint
from ..testing import LocalNode, LocalRedis, free_port
from .argtypes import at_least, positive_seconds

__all__ = ["main"]

MODES = ("independent", "shared", "redis", "preload")
_positive_int = at_least(1)

# One worker: its pool and transport, requests paced from a common start instant,
# and per attempt the node and the time, printed as JSON at the end.
WORKER = r"""
import json, os, sys, time
config = json.loads(sys.argv[1])
from gonka_pool import EndpointPool, GonkaEndpoint
try:
    import httpx2 as http
    from gonka_pool.httpx2 import PoolTransport
except ImportError:
    import httpx as http
    from gonka_pool.httpx import PoolTransport
names = {}
endpoints = []
for name, url in config["nodes"].items():
    endpoint = GonkaEndpoint(url, "gonka1" + name.lower())
    names[endpoint] = name
    endpoints.append(endpoint)
options = {"shared": config["segment"]} if config["mode"] in ("shared", "preload") else {}
pool = EndpointPool(endpoints, **options)
def serve(k):
    health = None
    if config["mode"] == "redis":
        import redis
        from gonka_pool.redis import RedisHealth
        client = redis.Redis(host="127.0.0.1", port=config["redis_port"], socket_timeout=1)
        health = RedisHealth(pool, client, channel=config["segment"])
        ready_by = time.time() + 10
        while not health.stats()["connected"] and time.time() < ready_by:
            time.sleep(0.01)
    attempts = []
    def on_request(request, endpoint):
        attempts.append((time.time() - config["start_at"], names[endpoint]))
    transport = PoolTransport(pool, cooldown=config["cooldown"], timeout_cooldown=config["cooldown"],
                              on_request=on_request)
    requests = []
    with http.Client(transport=transport, timeout=config["timeout"], trust_env=False) as client:
        body = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
        # Workers spread over one interval, as independent clients are, not in lockstep.
        next_at = config["start_at"] + config["interval"] * k / config["workers"]
        time.sleep(max(0.0, next_at - time.time()))
        end = config["start_at"] + config["seconds"]
        while time.time() < end:
            started = time.time()
            try:
                ok = client.post("http://gonka/chat/completions", json=body).status_code == 200
            except http.HTTPError:
                ok = False
            requests.append((ok, time.time() - started))
            next_at += config["interval"]
            time.sleep(max(0.0, next_at - time.time()))
    if health is not None:
        health.close()
    return json.dumps({"attempts": attempts, "requests": requests})
if config["mode"] != "preload":
    print(serve(int(sys.argv[2])))
    sys.exit()
# gunicorn --preload: the pool above is the master's; each worker is a fork of it,
# reporting through a pipe of its own (a pipe write over 4 KiB may interleave).
readers = []
for k in range(config["workers"]):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "w") as out:
                out.write(serve(k))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    readers.append((pid, read_end))
failed = 0
for pid, read_end in readers:
    with os.fdopen(read_end) as lines:
        print(lines.read())
    failed |= os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0
sys.exit(failed)
"""


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--workers", type=_positive_int, default=4, help="worker processes (default: 4)")
    parser.add_argument(
        "--seconds",
        type=positive_seconds,
        default=4.0,
        help="how long the workers send requests, per mode (default: 4)",
    )
    parser.add_argument(
        "--cooldown", type=positive_seconds, default=1.0, help="seconds a failed node is skipped (default: 1)"
    )
    parser.add_argument(
        "--timeout", type=positive_seconds, default=0.2, help="the client timeout; S stalls past it (default: 0.2)"
    )
    parser.add_argument(
        "--interval", type=positive_seconds, default=0.02, help="seconds between one worker's requests (default: 0.02)"
    )
    parser.add_argument(
        "--next-calls",
        type=_positive_int,
        default=200_000,
        help="next() calls per timing of its cost (default: 200000)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    return parser


HELP = "bad-node attempts across worker processes: independent or shared="
PARSER_OPTIONS: dict[str, Any] = {
    "description": "Attempts that reach bad nodes across worker processes: independent "
    "pools against shared= health, one run, local nodes.",
}


def _redis_server() -> LocalRedis | None:
    """A redis-server of the benchmark's own, when both it and redis-py are installed."""
    if shutil.which("redis-server") is None or importlib.util.find_spec("redis") is None:
        return None
    server = LocalRedis()
    server.start()
    return server


def _run_mode(mode: str, nodes: dict[str, str], args: argparse.Namespace, redis_port: int = 0) -> dict[str, Any]:
    segment = f"bench-scaleout-{uuid.uuid4().hex[:12]}"
    config = {
        "mode": mode,
        "nodes": nodes,
        "segment": segment,
        "redis_port": redis_port,
        "cooldown": args.cooldown,
        "timeout": args.timeout,
        "seconds": args.seconds,
        "interval": args.interval,
        "workers": args.workers,
        "start_at": time.time() + 2.0,
    }  # time for every interpreter to start
    env = dict(os.environ)
    # The folder that holds this gonka_pool (three levels up: _cli/, gonka_pool/).
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # preload: one process, the master, which forks the workers and prints their lines.
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(config), str(k)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(1 if mode == "preload" else args.workers)
    ]
    try:
        outputs: list[dict[str, Any]] = []
        for worker in workers:
            out, err = worker.communicate(timeout=args.seconds + 60)
            if worker.returncode != 0:
                raise RuntimeError(f"a {mode} worker failed: {err.strip()[-2000:]}")
            outputs.extend(json.loads(line) for line in out.splitlines() if line.strip())
    finally:
        for worker in workers:
            worker.kill()
        if mode in ("shared", "preload"):
            EndpointPool.unlink_shared(segment)
    windows = max(1.0, args.seconds / args.cooldown)
    attempts = [a for o in outputs for a in o["attempts"]]
    requests = [r for o in outputs for r in o["requests"]]
    return {
        "requests": len(requests),
        "lost": sum(1 for ok, _ in requests if not ok),
        "dead_per_window": sum(1 for _, node in attempts if node == "D") / windows,
        "stall_per_window": sum(1 for _, node in attempts if node == "S") / windows,
        "delayed": sum(1 for _, elapsed in requests if elapsed >= args.timeout),
    }


def _next_cost(calls: int = 200_000, rounds: int = 5) -> dict[str, float]:
    """``next()`` on a shared pool against an unshared one, interleaved rounds, medians."""
    segment = f"bench-scaleout-next-{uuid.uuid4().hex[:12]}"
    endpoints = [GonkaEndpoint(f"https://n{i}.example", f"gonka1n{i}") for i in range(8)]
    pools = {"unshared": EndpointPool(endpoints), "shared": EndpointPool(endpoints, shared=segment)}
    samples: dict[str, list[float]] = {name: [] for name in pools}
    try:
        for _ in range(rounds):
            for name, pool in pools.items():
                best = min(timeit.repeat("nxt()", globals={"nxt": pool.next}, number=calls, repeat=3))
                samples[name].append(best / calls * 1e9)
    finally:
        EndpointPool.unlink_shared(segment)
    return {name: sorted(values)[len(values) // 2] for name, values in samples.items()}


def execute(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Callable[[str], object] = print) -> int:
    if IMPLEMENTATION != "c":
        parser.error("bench-scaleout compares shared= health, which needs the C core")
    try:
        import httpx2  # noqa: F401 - only checked for
    except ImportError:
        try:
            import httpx  # noqa: F401
        except ImportError:
            parser.error("bench-scaleout needs httpx2 or httpx: pip install 'gonka-pool[httpx2]'")
    servers = {"A": LocalNode("A"), "B": LocalNode("B"), "S": LocalNode("S", "stall", stall_seconds=args.timeout + 5)}
    for server in servers.values():
        server.start()
    nodes = {
        "A": servers["A"].url,
        "B": servers["B"].url,
        "D": f"http://127.0.0.1:{free_port()}/v1",
        "S": servers["S"].url,
    }
    redis = _redis_server()
    try:
        results = {
            mode: _run_mode(mode, nodes, args, redis.port if redis else 0)
            for mode in MODES
            if mode != "redis" or redis is not None
        }
    finally:
        for server in servers.values():
            server.stop()
        if redis is not None:
            redis.kill()
    cost = _next_cost(args.next_calls)
    out(
        f"bench-scaleout: {args.workers} worker processes, nodes A, B healthy, D refused, "
        f"S stalls; {args.seconds:g} s per mode, one request per {args.interval:g} s per "
        f"worker, cooldown {args.cooldown:g} s, client timeout {args.timeout:g} s, Python "
        f"{sys.version.split()[0]}"
    )
    out(
        f"  {'mode':<12} {'requests':>9} {'lost':>5} {'D attempts/window':>18} "
        f"{'S attempts/window':>18} {'delayed by S':>13}"
    )
    for mode, r in results.items():
        out(
            f"  {mode:<12} {r['requests']:>9} {r['lost']:>5} {r['dead_per_window']:>18.2f} "
            f"{r['stall_per_window']:>18.2f} {r['delayed']:>13}"
        )
    if "redis" not in results:
        out("  redis        not run: needs redis-server and redis-py (pip install '.[redis]')")
    out(
        f"  next(): shared {cost['shared']:.1f} ns, unshared {cost['unshared']:.1f} ns, "
        f"{cost['shared'] / cost['unshared']:.2f}x (one thread, medians of 5 rounds)"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"args": vars(args), "results": results, "next_ns": cost}, file, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure(argparse.ArgumentParser(prog="python -m gonka_pool bench-scaleout", **PARSER_OPTIONS))
    return execute(parser, parser.parse_args(argv))
