"""``python -m gonka_pool top``: the shared health of a real ``shared=`` segment (the C
core writes it; top reads it on either core, the twin included) and of a real
redis-server, read without being changed, as one plain snapshot off a terminal and
redrawn in place on one."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from gonka_pool import GonkaEndpoint
from gonka_pool._cli import top
from gonka_pool._cli.health_sources import SourceError, read_segment
from gonka_pool.testing import LocalRedis

pytestmark = pytest.mark.thread_unsafe(
    reason="each test reads back exactly its own marks on a segment a parallel run's threads would share"
)

C = pytest.importorskip("gonka_pool._pool")
if not C.SHARED_SUPPORTED:  # pragma: no cover - POSIX shared memory
    pytest.skip("no POSIX shared memory", allow_module_level=True)

NODES = [GonkaEndpoint(f"https://node{i}.example/v1", f"gonka1node{i}") for i in range(3)]
LISTED = ",".join(f"{node.base_url};{node.address}" for node in NODES[:2])  # node2 left out


@pytest.fixture
def segment():
    name = f"top-{uuid.uuid4().hex[:16]}"
    pool = C.EndpointPool(NODES, shared=name, start=0)
    pool.mark_failed(0, 60)
    pool.mark_failed(0, 60)  # already cooling: total 2, consecutive 1
    pool.mark_failed(2, float("inf"))
    yield name, pool
    C.EndpointPool.unlink_shared(name)


def run_top(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "gonka_pool", "top", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def rows(output):
    """{node column: the rest of its line, split on runs of two spaces}."""
    table = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
        if cells and (cells[0].startswith(("https://", "record "))):
            table[cells[0]] = cells[1:]
    return table


@pytest.mark.parametrize("twin", [False, True], ids=["c-core", "twin"])
def test_top_prints_one_snapshot_of_a_shared_segment_off_a_terminal(segment, twin):
    name, _ = segment
    env = {"GONKA_ENDPOINTS": LISTED}
    if twin:
        env["GONKA_POOL_NO_EXTENSIONS"] = "1"
    done = run_top("--shared", name, env=env)
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout  # a pipe gets plain text, once
    table = rows(done.stdout)
    state, left, consecutive, total, last = table["https://node0.example/v1 (gonka1node0)"]
    assert (state, consecutive, total) == ("cooling", "1", "2")
    assert left.endswith(" s")  # 59.9 s, or 1 min 00 s with the deadline's tick
    assert last.endswith("ago")
    assert table["https://node1.example/v1 (gonka1node1)"] == ["available", "-", "0", "0", "-"]
    # node2 was not listed: its record is shown by its key, state and counts.
    (unnamed,) = [row for node, row in table.items() if node.startswith("record ")]
    assert unnamed[:4] == ["until cleared", "inf", "1", "1"]
    assert "2 cooling" in done.stdout
    assert "last reason: not stored in the segment" in done.stdout


def test_reading_a_segment_changes_none_of_its_bytes(segment):
    name, _ = segment
    path = "/dev/shm" + C._segment_file(name)
    if not os.path.exists(path):
        pytest.skip("segments are not files under /dev/shm here")
    with open(path, "rb") as file:
        before = file.read()
    read_segment(name, NODES)
    read_segment(name, ())
    with open(path, "rb") as file:
        assert file.read() == before


def test_the_workers_marks_show_at_the_next_read(segment):
    name, pool = segment
    health = {row.node: row for row in read_segment(name, NODES)[0]}
    assert not health["https://node1.example/v1 (gonka1node1)"].cooling
    pool.mark_failed(1, 30)
    pool.mark_success(0)
    health = {row.node: row for row in read_segment(name, NODES)[0]}
    assert health["https://node1.example/v1 (gonka1node1)"].cooling
    assert health["https://node0.example/v1 (gonka1node0)"].consecutive == 0


def test_top_refuses_a_segment_that_does_not_exist_and_creates_none():
    name = f"top-{uuid.uuid4().hex[:16]}"
    done = run_top("--shared", name)
    assert done.returncode == 1
    assert f"no shared segment {name!r}" in done.stderr
    assert C.EndpointPool.unlink_shared(name) is False  # still none


def test_a_node_no_live_pool_holds_any_more_is_not_shown(segment):
    name, pool = segment
    pool.update(NODES[:2])  # node2 dropped: its record is left to be reused
    shown = [row.node for row in read_segment(name, NODES)[0]]
    assert sorted(shown) == sorted(f"{node.base_url} ({node.address})" for node in NODES[:2])


def test_top_looks_for_the_segment_of_the_uid_it_is_given(segment):
    done = run_top("--shared", segment[0], "--uid", str(os.geteuid() + 1))
    assert done.returncode == 1
    assert f"of uid {os.geteuid() + 1}" in done.stderr


def test_top_refuses_a_bad_segment_name():
    with pytest.raises(SourceError, match="1 to 200 letters"):
        read_segment("../etc/passwd")


def test_top_refuses_a_bad_endpoints_list(segment):
    done = run_top("--shared", segment[0], "--endpoints", "not a url")
    assert done.returncode == 2
    assert "--endpoints" in done.stderr


class Terminal(io.StringIO):
    def isatty(self):
        return True


def options(**given):
    values = {
        "shared": None,
        "redis": None,
        "channel": "gonka_pool",
        "endpoints": LISTED,
        "interval": 0.01,
        "count": None,
        "once": False,
        "uid": None,
        **given,
    }
    return argparse.Namespace(**values)


def test_top_on_a_terminal_redraws_the_table_in_place(segment):
    screen = Terminal()
    assert top.top(options(shared=segment[0], count=3), screen) == 0
    text = screen.getvalue()
    assert text.count("\x1b[H\x1b[2J") == 3  # home and clear before each of the 3 tables
    assert text.count("NODE") == 3


def test_top_once_prints_a_single_plain_table_even_on_a_terminal(segment):
    screen = Terminal()
    assert top.top(options(shared=segment[0], once=True), screen) == 0
    assert "\x1b[" not in screen.getvalue()
    assert screen.getvalue().count("NODE") == 1


@pytest.fixture
def redis_server():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary (Debian: apt-get install redis-server)")
    pytest.importorskip("redis")
    with LocalRedis(binary) as server:
        yield server


@pytest.mark.parametrize("twin", [False, True], ids=["c-core", "twin"])
def test_top_reads_the_health_redis_health_stores_without_changing_it(redis_server, twin):
    import redis

    from gonka_pool.redis import RedisHealth

    impl = __import__("gonka_pool._pool_py" if twin else "gonka_pool._pool", fromlist=["EndpointPool"])
    pool = impl.EndpointPool(NODES, start=0)
    client = redis.Redis.from_url(redis_server.url)
    health = RedisHealth(pool, client, channel="top-test")
    try:
        pool.mark_failed(1, 60)
        deadline = time.monotonic() + 10
        while not client.hlen("top-test:cooldowns") and time.monotonic() < deadline:
            time.sleep(0.01)
        health.close()  # its sender may store the cooldown again (a reconnect resends): only top reads now
        before = client.hgetall("top-test:cooldowns")
        env = {"GONKA_POOL_NO_EXTENSIONS": "1"} if twin else {}
        done = run_top("--redis", redis_server.url, "--channel", "top-test", "--endpoints", LISTED, env=env)
        assert done.returncode == 0, done.stderr
        table = rows(done.stdout)
        state, left, consecutive, total, last = table["https://node1.example/v1 (gonka1node1)"]
        assert (state, consecutive, total, last) == ("cooling", "1", "-", "-")
        assert left.endswith("s")
        # Listed, never failed: absent from the hash, available as far as Redis knows.
        assert table["https://node0.example/v1 (gonka1node0)"] == ["available", "-", "0", "-", "-"]
        assert "Redis keeps no total count" in done.stdout
        assert client.hgetall("top-test:cooldowns") == before
    finally:
        health.close()
        client.close()


def test_top_says_why_when_redis_cannot_be_reached():
    pytest.importorskip("redis")
    from gonka_pool.testing import free_port

    done = run_top("--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 1
    assert "could not read Redis" in done.stderr


def test_what_another_redis_writer_put_in_the_hash_neither_crashes_top_nor_reaches_the_terminal(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.hset(
            "top-hostile:cooldowns",
            mapping={
                "\x1b[2J\x1b]0;owned\x07https://x.example/v1;gonka1x": "9999999999999:1",
                "https://node1.example/v1;gonka1node1": "1:²",  # "²".isdigit(), and int() refuses it
                "https://node2.example/v1;gonka1node2": "9" * 5000 + ":1",  # past int()'s digit limit
            },
        )
        done = run_top("--redis", redis_server.url, "--channel", "top-hostile")
    finally:
        client.delete("top-hostile:cooldowns")
        client.close()
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "not an endpoint: '\\x1b[2J" in done.stdout
    assert "node1" not in done.stdout and "node2" not in done.stdout  # not RedisHealth's entries
