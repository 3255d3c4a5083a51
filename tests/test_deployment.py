"""docs/deployment.md's recipes run as written: each test reads a recipe's files and
command from the document (the fenced blocks after ``<!-- recipe: NAME FILE -->``),
starts the real server (uvicorn with FastAPI, gunicorn) on 127.0.0.1 against local
nodes, makes requests one after another and checks what the text promises: a node
that failed in one worker is skipped by the others, one Redis subscriber per
machine, the Gonka client sharing its health, the pool's warnings in the server's
output.  Only the segment's name (``"myapp"``), the address and the port are
changed, so that runs do not meet.  Every wait is bounded; the servers are stopped
with SIGTERM, then killed with their process group.

Also here, the other deployment findings of issue 22: the message a user gets for a
segment another user left at their name.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import gonka_pool
from gonka_pool.testing import LocalGonkaNetwork, LocalNode, LocalRedis, free_port

DOC = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"
PACKAGE_ROOT = Path(gonka_pool.__file__).resolve().parent.parent
RECIPE = re.compile(r"^<!-- recipe: (\S+) (\S+) -->\n```\w*\n(.*?)^```$", re.MULTILINE | re.DOTALL)
START_TIMEOUT = 90  # 4 workers importing FastAPI and openai on a loaded 2-core machine
STOP_TIMEOUT = 30

pytestmark = [
    pytest.mark.thread_unsafe(reason="starts servers with worker processes"),
    pytest.mark.skipif(sys.platform == "win32", reason="the recipes are for POSIX servers"),
]
needs_c_core = pytest.mark.skipif(gonka_pool.IMPLEMENTATION != "c", reason="shared= needs the C core")


def recipes() -> dict[tuple[str, str], str]:
    return {(name, file): text for name, file, text in RECIPE.findall(DOC.read_text())}


def recipe(name: str, file: str) -> str:
    return recipes()[(name, file)]


def renamed(text: str, old: str, new: str) -> str:
    """``text`` with the one occurrence of ``old`` replaced (a recipe's segment name)."""
    assert text.count(old) == 1, (old, text)
    return text.replace(old, new)


def command_lines(name: str) -> list[list[str]]:
    """The recipe's commands, each as argv, comments dropped."""
    return [shlex.split(line, comments=True) for line in recipe(name, "command").splitlines() if line.strip()]


def on_loopback(argv: list[str], port: int) -> list[str]:
    """``argv`` as the docs write it, run by this interpreter, bound to 127.0.0.1:port."""
    assert argv[0] in ("uvicorn", "gunicorn"), argv
    argv = [sys.executable, "-m", *argv]
    for option, value in (("--host", "127.0.0.1"), ("--port", str(port)), ("--bind", f"127.0.0.1:{port}")):
        if option in argv:
            argv[argv.index(option) + 1] = value
    return argv


def segment_name() -> str:
    return f"test-deploy-{uuid.uuid4().hex[:12]}"


class Server:
    """A server started from a recipe's command, in its own process group, its
    output (stdout and stderr) in a file."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], port: int) -> None:
        self.port = port
        self.log = cwd / f"server-{port}.log"
        env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(cwd), str(PACKAGE_ROOT)])}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ask(self, text: str = "hi", timeout: float = 30) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/ask",
            data=json.dumps({"text": text}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    def wait_serving(self) -> dict:
        """The first answer, once a worker serves."""
        give_up = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process.poll() is None, self.output[-3000:]
            try:
                return self.ask(timeout=10)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > give_up:
                    raise AssertionError(f"no answer within {START_TIMEOUT} s:\n{self.output[-3000:]}") from None
                time.sleep(0.1)

    def wait_output(self, text: str, count: int = 1, timeout: float = START_TIMEOUT) -> None:
        give_up = time.monotonic() + timeout
        while self.output.count(text) < count:
            assert time.monotonic() < give_up, f"{count} x {text!r} not in the output:\n{self.output[-3000:]}"
            assert self.process.poll() is None, self.output[-3000:]
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # any worker left behind
            except ProcessLookupError:
                pass
            if self.process.poll() is None:
                self.process.wait(STOP_TIMEOUT)


def ask_around(server: Server, requests: int = 24, workers: int = 4) -> set[int]:
    """Ask ``requests`` times, one after another, each on a new connection, and
    return the workers that answered.  Which worker accepts a connection is the
    kernel's choice (on a loaded machine one may take them all), so each worker
    that answered is stopped (SIGSTOP) until ``workers`` have: the next connection
    waits in the shared listening socket for one that is not.  All are continued
    well within the supervisors' liveness checks (uvicorn pings every half second
    and gives a worker 5 s; gunicorn's timeout is 30 s)."""
    seen: set[int] = set()
    stopped: list[int] = []
    try:
        for _ in range(requests):
            reply = server.ask(timeout=4 if stopped else 30)
            assert reply["answer"].startswith("hello from "), reply
            seen.add(reply["worker"])
            if len(seen) < workers:
                os.kill(reply["worker"], signal.SIGSTOP)
                stopped.append(reply["worker"])
            elif stopped:
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
                stopped.clear()
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    return seen


@pytest.fixture
def nodes():
    """Three upstream nodes; the second answers 503 with Retry-After: 120."""
    started = [LocalNode(f"node{i}").start() for i in range(3)]
    started[1].behaviour = "unavailable"
    yield started
    for node in started:
        node.stop()


def endpoints_env(nodes: list[LocalNode]) -> str:
    return ",".join(f"{node.url};gonka1node{i}" for i, node in enumerate(nodes))


def serve(tmp_path: Path, files: dict[str, str], argv: list[str], env: dict[str, str]) -> Server:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        (tmp_path / file).write_text(text)
    port = free_port()
    return Server(on_loopback(argv, port), tmp_path, env, port)


def test_every_recipe_the_tests_read_is_in_the_document():
    assert set(recipes()) == {
        ("uvicorn-shared", "app.py"),
        ("uvicorn-shared", "command"),
        ("gunicorn-shared", "app.py"),
        ("gunicorn-shared", "command"),
        ("redis-subscriber", "app.py"),
        ("redis-subscriber", "command"),
        ("gonka-client", "pool"),
        ("logging", "log.json"),
        ("logging", "command"),
    }


# -- uvicorn --workers 4 with FastAPI, and its logging --------------------------------


@needs_c_core
def test_uvicorn_workers_skip_a_node_that_failed_in_another_worker(tmp_path, nodes):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("openai")
    segment = segment_name()
    app = renamed(recipe("uvicorn-shared", "app.py"), '"myapp"', repr(segment))
    [argv] = command_lines("uvicorn-shared")
    assert argv[argv.index("--workers") + 1] == "4"
    server = serve(tmp_path, {"app.py": app}, argv, {"GONKA_ENDPOINTS": endpoints_env(nodes)})
    try:
        server.wait_serving()
        workers = ask_around(server)
    finally:
        server.stop()
        gonka_pool.EndpointPool.unlink_shared(segment)
    # The dead node cost one request in all: the other workers read its cooldown
    # from the segment (without shared=, each of the 4 would try it once).
    assert nodes[1].statuses == {503: 1}, (nodes[1].statuses, server.output[-2000:])
    assert len(workers) >= 4, workers
    # And uvicorn's default logging shows none of it (hence the logging recipe).
    assert "entered cooldown" not in server.output


@needs_c_core
def test_the_logging_recipe_shows_the_pools_cooldown_warning_in_uvicorns_output(tmp_path, nodes):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("openai")
    segment = segment_name()
    app = renamed(recipe("uvicorn-shared", "app.py"), '"myapp"', repr(segment))
    [argv] = command_lines("logging")
    files = {"app.py": app, "log.json": recipe("logging", "log.json")}
    server = serve(tmp_path, files, argv, {"GONKA_ENDPOINTS": endpoints_env(nodes)})
    try:
        server.wait_serving()
        for _ in range(12):
            server.ask()
        server.wait_output("entered cooldown", timeout=10)
    finally:
        server.stop()
        gonka_pool.EndpointPool.unlink_shared(segment)
    [line] = [line for line in server.output.splitlines() if "entered cooldown" in line]
    assert line.startswith("WARNING:") and "gonka_pool: endpoint " + nodes[1].url in line, line
    assert "failed (HTTP 503)" in line, line
    assert "Application startup complete." in server.output  # uvicorn's own lines stay


# -- gunicorn, with and without --preload ---------------------------------------------


@needs_c_core
@pytest.mark.parametrize("preload", [False, True], ids=["without-preload", "with-preload"])
def test_gunicorn_workers_skip_a_node_that_failed_in_another_worker(tmp_path, nodes, preload):
    pytest.importorskip("gunicorn")
    pytest.importorskip("openai")
    segment = segment_name()
    app = renamed(recipe("gunicorn-shared", "app.py"), '"myapp"', repr(segment))
    [argv] = [line for line in command_lines("gunicorn-shared") if ("--preload" in line) == preload]
    server = serve(tmp_path, {"app.py": app}, argv, {"GONKA_ENDPOINTS": endpoints_env(nodes)})
    try:
        server.wait_serving()
        workers = ask_around(server)
    finally:
        server.stop()
        gonka_pool.EndpointPool.unlink_shared(segment)
    assert nodes[1].statuses == {503: 1}, (nodes[1].statuses, server.output[-2000:])
    assert len(workers) >= 4, workers


# -- Redis: one subscriber per machine, and the Gonka client ---------------------------


def local_redis() -> LocalRedis:
    pytest.importorskip("redis")
    if not LocalRedis().binary or not os.path.exists(LocalRedis().binary):
        if os.environ.get("GONKA_POOL_REQUIRE_REDIS"):
            pytest.fail("redis-server is not installed (make test installs it)")
        pytest.skip("no redis-server binary")
    server = LocalRedis()
    server.start()
    return server


def subscribers(redis_url: str, channel: str) -> int:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        return dict(client.pubsub_numsub(channel))[channel.encode()]


@needs_c_core
def test_two_machines_of_four_workers_share_health_through_one_subscriber_each(tmp_path, nodes):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("openai")
    store = local_redis()
    segments = {host: segment_name() for host in ("a", "b")}
    [argv] = command_lines("redis-subscriber")
    servers: dict[str, Server] = {}
    try:
        for host, segment in segments.items():
            app = renamed(recipe("redis-subscriber", "app.py"), '"myapp")', f"{segment!r})")
            env = {"GONKA_ENDPOINTS": endpoints_env(nodes), "REDIS_URL": store.url}
            servers[host] = serve(tmp_path / host, {"app.py": app}, argv, env)
        for server in servers.values():
            server.wait_output("Application startup complete.", count=4)
        # Eight workers, one subscriber per machine: the first to take the lock.
        assert subscribers(store.url, "myapp") == 2
        a, b = servers["a"], servers["b"]
        for _ in range(40):
            a.ask()
            if nodes[1].statuses:
                break
        assert nodes[1].statuses == {503: 1}
        # Machine b's subscriber writes the cooldown into b's segment...
        from gonka_pool import EndpointPool, GonkaEndpoint

        view = EndpointPool([GonkaEndpoint.parse(e) for e in endpoints_env(nodes).split(",")], shared=segments["b"])
        give_up = time.monotonic() + 10
        while view.snapshot()[1].available:
            assert time.monotonic() < give_up, "machine b never learned of the cooldown"
            time.sleep(0.02)
        # ...which all of b's workers read: none of them tries the node.
        assert len(ask_around(b, requests=16)) >= 4
        assert nodes[1].statuses == {503: 1}
    finally:
        for server in servers.values():
            server.stop()
        store.kill()
        for segment in segments.values():
            gonka_pool.EndpointPool.unlink_shared(segment)


@needs_c_core
def test_the_gonka_client_shares_a_refusal_through_the_segment_and_redis(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("openai")
    pytest.importorskip("ecdsa")
    import redis

    from gonka_pool.gonka import Signer

    store = local_redis()
    key = "0x" + "42" * 32
    network = LocalGonkaNetwork()
    network.register(Signer(key))
    for i in range(3):
        network.add_node(f"node{i}", f"gonka1node{i}")
    network.start()
    segment = segment_name()
    app = recipe("redis-subscriber", "app.py")
    built = 'pool = EndpointPool.from_env(shared="myapp")\nllm = async_client(pool, deadline=60.0)\n'
    app = renamed(app, built, renamed(recipe("gonka-client", "pool"), '"myapp"', repr(segment)) + "\n")
    [argv] = command_lines("redis-subscriber")
    env = {
        "GONKA_PRIVATE_KEY": key,
        "GONKA_SOURCE_URL": network.source_url,
        "GONKA_ALLOW_PRIVATE": "1",  # the local network is on 127.0.0.1
        "REDIS_URL": store.url,
    }
    env.update({name: "" for name in ("GONKA_ENDPOINTS", "GONKA_ADDRESS")})
    server = serve(tmp_path, {"app.py": app}, argv, env)
    try:
        server.wait_serving()
        server.wait_output("Application startup complete.", count=4)
        assert subscribers(store.url, "myapp") == 1
        refusing = network.nodes[1]
        network.allowlist = [node.address for node in network.nodes if node is not refusing]
        for node in network.nodes:
            node.reset()  # what the first answers (before the allowlist changed) counted
        workers = ask_around(server)
        with redis.Redis.from_url(store.url) as client:
            cooling = client.hkeys("myapp:cooldowns")
    finally:
        server.stop()
        network.stop()
        store.kill()
        gonka_pool.EndpointPool.unlink_shared(segment)
    # Signed, discovered, and the refusal cost one request across the 4 workers.
    assert refusing.statuses == {403: 1}, (refusing.statuses, server.output[-2000:])
    assert sum(node.served for node in network.nodes) >= 24
    assert len(workers) >= 4, workers
    assert [field.decode() for field in cooling] == [f"{refusing.url};{refusing.address}"]


@needs_c_core
def test_gonka_openai_takes_shared_through_pool_options(tmp_path):
    pytest.importorskip("openai")
    pytest.importorskip("ecdsa")
    from gonka_pool.gonka import GonkaOpenAI

    segment = segment_name()
    try:
        client = GonkaOpenAI(
            gonka_private_key="0x" + "42" * 32,
            endpoints=["https://node1.example/v1;gonka1node1"],
            pool_options={"shared": segment},
        )
        assert client.gonka_pool.shared == segment
    finally:
        gonka_pool.EndpointPool.unlink_shared(segment)


# -- a segment another user left at this user's name ----------------------------------


@needs_c_core
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to run a child as uid 65534")
def test_a_segment_root_left_at_a_users_name_is_refused_with_the_fix():
    # root creating the file at another user's name (a tool run with sudo, a copy):
    # that user cannot open it, and must be told what to do, not given a bare EACCES.
    from gonka_pool import GonkaEndpoint
    from gonka_pool._pool import EndpointPool

    nobody = 65534
    name = segment_name()
    path = f"/dev/shm/gonka_pool.{nobody}.{name}"
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    read, write = os.pipe()
    try:
        child = os.fork()
        if child == 0:  # the user: nothing but the pool's constructor, then _exit
            try:
                os.setgid(nobody)
                os.setuid(nobody)
                EndpointPool([GonkaEndpoint("https://node.example", "gonka1node")], shared=name)
                said = "no error"
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                said = f"{type(exc).__name__}: {exc}"
            os.write(write, said.encode())
            os._exit(0)
        os.close(write)
        assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
        with os.fdopen(read, "rb") as pipe:
            said = pipe.read().decode()
    finally:
        os.unlink(path)
    assert said.startswith(f"PermissionError: [Errno 13] shared memory segment {name!r}"), said
    assert "this user may not open it" in said and f"must belong to uid {nobody}" in said
    assert "use another shared= name" in said and f"rm {path}" in said
