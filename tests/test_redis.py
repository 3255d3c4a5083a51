"""Health shared through Redis: the pool's observer and apply hooks on both cores,
then ``gonka_pool.redis`` against a real ``redis-server`` started on a free port.

Without the ``redis-server`` binary or redis-py the Redis tests skip, except under
``make test`` (``GONKA_POOL_REQUIRE_REDIS=1``), which installs both and so fails
instead of passing on skips.  Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import nodes
from gonka_pool import GonkaEndpoint
from gonka_pool.redis import node_key
from gonka_pool.testing import LocalRedis

NS = 1_000_000_000
T0 = 10**12  # a frozen clock's "now" for the hook tests


# -- the pool's hooks, on both cores ---------------------------------------------------


def observed(pool):
    events = []
    pool._set_observer(lambda *event: events.append(event))
    return events


def test_the_observer_hears_each_cooldown_entered_with_its_duration_and_count(make_pool):
    pool = make_pool(3, base_cooldown=1.0, max_cooldown=8.0)
    eps = pool.endpoints
    pool._set_clock(T0)
    events = observed(pool)
    pool.mark_failed(1, 5)
    pool.mark_failed(eps[2])
    pool.mark_failed(eps[2])  # already cooling: the same outage, no new cooldown
    pool._set_clock(T0 + 10 * NS)
    pool.mark_failed(eps[2])
    pool._mark_failed_at_least(eps[0], None, 3)
    assert events == [
        ("cooldown", eps[1], 5 * NS, 1),
        ("cooldown", eps[2], 1 * NS, 1),
        ("cooldown", eps[2], 2 * NS, 2),
        ("cooldown", eps[0], 3 * NS, 1),
    ]


def test_the_observer_hears_a_success_only_when_it_resets_a_count(make_pool):
    pool = make_pool(3)
    eps = pool.endpoints
    events = observed(pool)
    assert pool.mark_success(eps[0]) is True  # count already 0: nothing to share
    assert pool.mark_success(2) is True
    pool.mark_failed(eps[1])
    pool.mark_failed(2)
    events.clear()
    assert pool.mark_success(eps[1]) is True
    assert pool.mark_success(2) is True
    assert pool.mark_success(2) is True
    assert pool.mark_success(GonkaEndpoint("https://other.example", "x")) is False
    assert events == [("success", eps[1], 0, 0), ("success", eps[2], 0, 0)]
    assert [s.consecutive_failures for s in pool.snapshot()] == [0, 0, 0]
    with pytest.raises(IndexError):
        pool.mark_success(3)


def test_an_observer_of_none_stops_and_a_non_callable_is_a_type_error(make_pool):
    pool = make_pool(2)
    events = observed(pool)
    pool._set_observer(None)
    pool.mark_failed(0)
    pool.mark_success(0)
    assert events == []
    with pytest.raises(TypeError, match="observer must be callable"):
        pool._set_observer(42)


def test_apply_remote_never_shortens_a_cooldown_and_raises_the_count(make_pool):
    pool = make_pool(2, base_cooldown=1.0, max_cooldown=100.0)
    ep = pool.endpoints[0]
    pool._set_clock(T0)
    pool.mark_failed(ep, 50)
    assert pool._apply_remote(ep, 10 * NS, 3) is True
    state = pool.snapshot()[0]
    assert state.cooldown_remaining == 50.0 and state.consecutive_failures == 3
    assert pool._apply_remote(ep, 80 * NS, 1) is True
    state = pool.snapshot()[0]
    assert state.cooldown_remaining == 80.0 and state.consecutive_failures == 3
    assert state.total_failures == 1  # a remote failure is not this process's


def test_apply_remote_is_capped_at_the_pools_max_cooldown(make_pool):
    pool = make_pool(2, base_cooldown=1.0, max_cooldown=20.0)
    pool._set_clock(T0)
    assert pool._apply_remote(pool.endpoints[1], 2**64 - 1, 2**64 - 1) is True
    assert pool.snapshot()[1].cooldown_remaining == 20.0
    assert pool.next() == pool.endpoints[0]


def test_apply_remote_calls_no_observer_logs_nothing_and_ignores_unknown_nodes(make_pool, caplog):
    pool = make_pool(2)
    events = observed(pool)
    with caplog.at_level(logging.DEBUG, logger="gonka_pool"):
        assert pool._apply_remote(pool.endpoints[0], NS, 1) is True
        assert pool._apply_remote_success(pool.endpoints[0]) is True
    assert events == [] and caplog.records == []
    stranger = GonkaEndpoint("https://other.example", "x")
    assert pool._apply_remote(stranger, NS, 1) is False
    assert pool._apply_remote_success(stranger) is False
    with pytest.raises(TypeError):
        pool._apply_remote("https://node0.example", NS, 1)


def test_apply_remote_success_resets_the_count_and_lets_the_cooldown_run(make_pool):
    pool = make_pool(2)
    pool._set_clock(T0)
    pool._apply_remote(pool.endpoints[0], 5 * NS, 4)
    assert pool._apply_remote_success(pool.endpoints[0]) is True
    state = pool.snapshot()[0]
    assert state.consecutive_failures == 0 and state.cooldown_remaining == 5.0
    assert pool.next() == pool.endpoints[1]


def test_the_two_cores_apply_remote_events_to_the_same_state(both_impls):
    c, py = (impl.make(4, base_cooldown=1.0, max_cooldown=30.0) for impl in both_impls)
    for pool in (c, py):
        pool._set_clock(T0)
        eps = pool.endpoints
        pool._apply_remote(eps[1], 3 * NS, 2)
        pool._apply_remote(eps[1], 1 * NS, 5)
        pool._apply_remote(eps[2], 0, 7)
        pool._apply_remote(eps[3], 99 * NS, 1)
        pool._apply_remote_success(eps[1])
        pool.next_many(6)
    assert c._state() == py._state()
    assert c.snapshot() == py.snapshot()


def test_marks_racing_observer_changes_and_remote_events_raise_nothing(make_pool):
    """Threads mark (entering cooldowns, clearing, resetting) and apply remote events
    while the observer is swapped under them: every call completes, and an observer
    hears only what happened while it was set."""
    pool = make_pool(4, base_cooldown=0.001, max_cooldown=0.002)
    eps = pool.endpoints
    heard = []
    observers = [lambda *event: heard.append(event), lambda *event: None, None]
    stop = threading.Event()
    errors = []

    def marker(k: int) -> None:
        try:
            while not stop.is_set():
                i = k % 4
                pool.mark_failed(eps[i])
                pool.mark_failed(i, 0)
                pool.mark_success(eps[i])
                pool._apply_remote(eps[(i + 1) % 4], 1000, 2)
                pool._apply_remote_success(eps[(i + 2) % 4])
                pool.next()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=marker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n in range(300):
            pool._set_observer(observers[n % 3])
            time.sleep(0.0005)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert heard and {event[0] for event in heard} <= {"cooldown", "success"}
    assert all(endpoint in eps for _, endpoint, _, _ in heard)


def test_remote_events_racing_update_land_on_the_membership_in_force(make_pool):
    pool = make_pool(4, max_cooldown=600.0)
    eps = pool.endpoints
    stop = threading.Event()

    def applier() -> None:
        while not stop.is_set():
            for endpoint in eps:
                pool._apply_remote(endpoint, 500 * NS, 3)

    thread = threading.Thread(target=applier)
    thread.start()
    try:
        for n in range(200):
            pool.update(eps[: 2 + n % 3])
    finally:
        stop.set()
        thread.join(30)
    pool.update(eps)
    for endpoint in eps:
        pool._apply_remote(endpoint, 500 * NS, 3)
    states = pool.snapshot()
    assert all(not s.available and s.consecutive_failures == 3 for s in states)
    assert pool._state()[1] == 4  # cooling counts each deadline once


def test_importing_gonka_pool_or_its_redis_module_does_not_import_redis():
    code = "import sys, gonka_pool, gonka_pool.redis; assert 'redis' not in sys.modules, 'redis imported'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# -- a real redis-server ------------------------------------------------------------------

try:
    import redis
    import redis.asyncio
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    HAVE_REDIS_PY = True
except ImportError:  # pragma: no cover - make test installs it
    HAVE_REDIS_PY = False

shares_a_server = pytest.mark.thread_unsafe(
    reason="starts, kills and restarts redis-server processes and measures latency"
)
WAIT_S = 5.0  # the bound on every wait for something to arrive through Redis


class RedisServer(LocalRedis):
    """A ``LocalRedis`` that hands out clients and closes them with the server."""

    def __init__(self, binary: str) -> None:
        super().__init__(binary)
        # Closed by close(): a client collected with its sockets open warns (an
        # error here) in whichever test is running then.
        self.clients: list = []

    def close(self) -> None:
        self.kill()
        for client in self.clients:
            client.close()

    def client(self, **options):
        options.setdefault("socket_timeout", 2)
        options.setdefault("socket_connect_timeout", 2)
        # One quick retry: redis-py's default backs off for seconds, longer than
        # the fault tests wait.
        options.setdefault("retry", Retry(NoBackoff(), 1))
        client = redis.Redis(host="127.0.0.1", port=self.port, **options)
        self.clients.append(client)
        return client

    def async_client(self):
        return redis.asyncio.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)


def require_redis_py() -> None:
    if not HAVE_REDIS_PY:
        if os.environ.get("GONKA_POOL_REQUIRE_REDIS"):
            pytest.fail("redis-py is not installed (make test installs it)")
        pytest.skip("redis-py is not installed")


def redis_binary() -> str:
    require_redis_py()
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("GONKA_POOL_REQUIRE_REDIS"):
            pytest.fail("redis-server is not installed (make test installs it)")
        pytest.skip("no redis-server binary")
    return binary


@pytest.fixture(scope="module")
def server():
    server = RedisServer(redis_binary())
    server.start()
    yield server
    server.close()


@pytest.fixture
def own_server():
    """A server of the test's own, for the tests that kill it."""
    server = RedisServer(redis_binary())
    server.start()
    yield server
    server.close()


@pytest.fixture
def channel():
    return f"gonka_pool_test_{uuid.uuid4().hex}"


def wait_until(condition, timeout=WAIT_S, poll=0.0002) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(poll)
    return time.perf_counter() - start


def cooling(pool, i: int) -> bool:
    return not pool.snapshot()[i].available


def connected(*healths) -> None:
    wait_until(lambda: all(h.stats()["connected"] for h in healths))


@shares_a_server
def test_a_mark_in_one_pool_is_seen_by_anothers_next_within_50_ms(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    a, b = pool_impl.make(8), pool_impl.make(8)
    # b trusts this Redis with all its nodes (by default remote events cool at most half).
    trusting = RedisHealth(b, server.client(), channel=channel, max_remote_cooling=1.0)
    with RedisHealth(a, server.client(), channel=channel) as ha, trusting as hb:
        connected(ha, hb)
        delays = []
        for i in range(7):
            start = time.perf_counter()
            a.mark_failed(i, 30)
            wait_until(lambda i=i: cooling(b, i))
            delays.append(time.perf_counter() - start)
        picks = {b.next() for _ in range(16)}
    median = statistics.median(delays)
    print(
        f"\n{pool_impl.name}: propagation median {median * 1e3:.2f} ms, "
        f"max {max(delays) * 1e3:.2f} ms over {len(delays)} marks"
    )
    assert median < 0.050
    assert picks == {b.endpoints[7]}  # b's next() skips the 7 nodes a marked


def _child(port: int, channel: str, commands, replies) -> None:
    """A second process: its own pool and RedisHealth, marking on command and
    reporting what it sees."""
    import redis as redis_py

    from gonka_pool import EndpointPool
    from gonka_pool.redis import RedisHealth

    pool = EndpointPool(nodes(3), start=0)
    client = redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    with RedisHealth(pool, client, channel=channel) as health:
        deadline = time.monotonic() + WAIT_S
        while not health.stats()["connected"] and time.monotonic() < deadline:
            time.sleep(0.001)
        replies.put("ready")
        for command in iter(commands.get, "stop"):
            if command == "mark":
                pool.mark_failed(2, 30)
                replies.put(time.monotonic())
            elif command == "wait-0":
                deadline = time.monotonic() + WAIT_S
                while pool.snapshot()[0].available and time.monotonic() < deadline:
                    time.sleep(0.0002)
                replies.put((time.monotonic(), {pool.next() for _ in range(6)}))


@shares_a_server
def test_two_processes_share_their_marks_both_ways(server, channel):
    from gonka_pool import EndpointPool
    from gonka_pool.redis import RedisHealth

    context = multiprocessing.get_context("spawn")
    commands, replies = context.Queue(), context.Queue()
    child = context.Process(target=_child, args=(server.port, channel, commands, replies))
    child.start()
    try:
        pool = EndpointPool(nodes(3), start=0)
        with RedisHealth(pool, server.client(), channel=channel) as health:
            connected(health)
            assert replies.get(timeout=60) == "ready"
            commands.put("mark")
            marked_at = replies.get(timeout=WAIT_S)
            wait_until(lambda: cooling(pool, 2))
            to_parent = time.monotonic() - marked_at
            assert {pool.next() for _ in range(6)} == set(pool.endpoints[:2])
            commands.put("wait-0")
            marked_at = time.monotonic()
            pool.mark_failed(0, 30)
            seen_at, picks = replies.get(timeout=WAIT_S + 5)
            to_child = seen_at - marked_at
            assert picks == {pool.endpoints[1]}  # node 2 marked by the child, 0 by us
        commands.put("stop")
        child.join(30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
    print(f"\nacross processes: child->parent {to_parent * 1e3:.2f} ms, parent->child {to_child * 1e3:.2f} ms")
    assert to_parent < 0.050 and to_child < 0.050


@shares_a_server
def test_a_pool_started_later_loads_the_cooldowns_still_running(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    a, c = pool_impl.make(4), pool_impl.make(4)
    with RedisHealth(a, server.client(), channel=channel) as ha:
        connected(ha)
        a.mark_failed(1, 30)
        a.mark_failed(2, 30)
        a.mark_failed(2, 0)  # a clear stays local
        wait_until(lambda: server.client().hlen(f"{channel}:cooldowns") == 2)
    with RedisHealth(c, server.client(), channel=channel) as hc:
        connected(hc)
        states = c.snapshot()
        assert [s.available for s in states] == [True, False, False, True]
        assert 29 < states[1].cooldown_remaining <= 30.01
        assert states[1].consecutive_failures == 1


@shares_a_server
def test_cooldowns_in_redis_expire_with_their_deadlines(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    a = pool_impl.make(2, base_cooldown=0.2, max_cooldown=0.2)
    client = server.client()
    with RedisHealth(a, server.client(), channel=channel) as ha:
        connected(ha)
        a.mark_failed(0)
        wait_until(lambda: client.exists(f"{channel}:cooldowns"))
        assert 0 < client.pttl(f"{channel}:cooldowns") <= 200
        wait_until(lambda: not client.exists(f"{channel}:cooldowns"), timeout=2)
    late = pool_impl.make(2)
    with RedisHealth(late, server.client(), channel=channel) as hl:
        connected(hl)
        assert all(s.available for s in late.snapshot())


@shares_a_server
def test_a_remote_mark_never_shortens_a_local_cooldown(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    a, b = pool_impl.make(2), pool_impl.make(2)
    with RedisHealth(a, server.client(), channel=channel) as ha, RedisHealth(b, server.client(), channel=channel) as hb:
        connected(ha, hb)
        b.mark_failed(0, 200)
        wait_until(lambda: cooling(a, 0))
        a.mark_failed(1, 1)
        wait_until(lambda: cooling(b, 1))
        a.mark_success(1)
        wait_until(lambda: b.snapshot()[1].consecutive_failures == 0)
    assert b.snapshot()[0].cooldown_remaining > 190
    assert cooling(b, 1)  # a success resets the count; the cooldown runs on


@shares_a_server
def test_garbage_on_the_channel_or_in_the_hash_is_ignored_and_counted(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    client = server.client()
    key = node_key(nodes(1)[0])
    client.hset(
        f"{channel}:cooldowns",
        mapping={
            key: "99999999999999999999999:9",
            "https://node1.example;addr1": "soon",
            "https://nowhere.example;x": "9999999999999:1",
        },
    )
    pool = pool_impl.make(3, max_cooldown=60.0)
    with RedisHealth(pool, server.client(), channel=channel) as health:
        connected(health)
        junk = [
            b"\xff\xfe",
            b"[]",
            b"{}",
            b'{"v":1,"event":"cooldown","node":"%s"}' % key.encode(),
            b'{"v":1,"event":"cooldown","node":"%s","remaining_ns":-5,"failures":1}' % key.encode(),
            b'{"v":1,"event":"cooldown","node":"%s","remaining_ns":true,"failures":1}' % key.encode(),
            b'{"v":1,"event":"boom","node":"%s"}' % key.encode(),
            b"[" * 100_000,
            b"x" * 10_000,
            b'{"v":1,"event":"cooldown","node":["a"],"remaining_ns":5,"failures":1}',
        ]
        for message in junk:
            client.publish(channel, message)
        wait_until(lambda: health.stats()["received"] >= len(junk))
        stats = health.stats()
        assert stats["ignored"] >= len(junk) + 2 and stats["applied"] == 0
        assert all(s.available for s in pool.snapshot())
        # A well-formed event asking for a day is capped at this pool's max_cooldown.
        client.publish(
            channel,
            f'{{"v":1,"src":"other","event":"cooldown","node":"{key}","remaining_ns":{86_400 * NS},"failures":999}}',
        )
        wait_until(lambda: cooling(pool, 0))
        assert pool.snapshot()[0].cooldown_remaining <= 60.01


@shares_a_server
def test_the_queue_is_bounded_and_drops_the_oldest_while_redis_is_away(pool_impl):
    require_redis_py()  # no server (none is ever started), but its client
    from gonka_pool.redis import RedisHealth

    nowhere = RedisServer("redis-server")  # never started: nothing listens there
    client = nowhere.client(socket_timeout=0.2, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    pool = pool_impl.make(10)
    health = RedisHealth(pool, client, queue_size=3)
    try:
        start = time.perf_counter()
        for i in range(10):
            assert pool.mark_failed(i, 30) is True
        assert pool.next() in pool.endpoints
        marking = time.perf_counter() - start
        assert marking < 0.5  # nothing on the request path waited for Redis
        stats = health.stats()
        assert (stats["queued"], stats["queue"], stats["dropped"]) == (10, 3, 7)
        assert not stats["connected"]
    finally:
        start = time.perf_counter()
        health.close(timeout=0.3)
        assert time.perf_counter() - start < 0.3 + 2 * 1.0 + 0.5
    assert not health._sender.is_alive() and not health._listener.is_alive()
    assert health.stats()["queue"] == 3  # unsent: Redis never came


@shares_a_server
def test_redis_killed_and_restarted_raises_nothing_and_state_converges(pool_impl, own_server, channel):
    from gonka_pool.redis import RedisHealth

    a, b = pool_impl.make(4), pool_impl.make(4)
    with (
        RedisHealth(a, own_server.client(), channel=channel) as ha,
        RedisHealth(b, own_server.client(), channel=channel) as hb,
    ):
        connected(ha, hb)
        a.mark_failed(0, 60)
        wait_until(lambda: cooling(b, 0))
        own_server.kill()
        wait_until(lambda: not ha.stats()["connected"] and not hb.stats()["connected"])
        # Requests go on while Redis is away: marks and selections neither block
        # nor raise.
        start = time.perf_counter()
        a.mark_failed(1, 60)
        for _ in range(100):
            b.next()
            a.mark_success(2)
        assert time.perf_counter() - start < 0.5
        own_server.start()  # empty: the restart lost the hash
        wait_until(lambda: cooling(b, 1), timeout=10)
        connected(ha, hb)
        late = pool_impl.make(4)
        with RedisHealth(late, own_server.client(), channel=channel) as hl:
            connected(hl)
            # Both of a's cooldowns reached Redis again: the one queued while it
            # was away, and the one sent before the restart, resent on reconnecting.
            wait_until(lambda: cooling(late, 0) and cooling(late, 1))
    assert ha.stats()["connects"] >= 2 and hb.stats()["errors"] >= 1


@shares_a_server
def test_a_subscription_redis_py_reconnects_by_itself_resynchronizes(pool_impl, own_server, channel):
    """A client whose retries outlast the restart reconnects and resubscribes inside
    redis-py, without an error reaching RedisHealth: the restart is seen all the same,
    and the cooldowns the restart lost are sent again."""
    from redis.backoff import ConstantBackoff

    from gonka_pool.redis import RedisHealth

    a = pool_impl.make(3)
    patient = own_server.client(retry=Retry(ConstantBackoff(0.1), 50))
    with RedisHealth(a, patient, channel=channel) as ha:
        connected(ha)
        a.mark_failed(2, 60)
        wait_until(lambda: own_server.client().hlen(f"{channel}:cooldowns") == 1)
        own_server.kill()
        own_server.start()
        wait_until(lambda: ha.stats()["connects"] >= 2, timeout=10)
        assert ha.stats()["errors"] == 0  # redis-py hid the outage: the callback saw it
        wait_until(lambda: own_server.client().hlen(f"{channel}:cooldowns") == 1)
        late = pool_impl.make(3)
        with RedisHealth(late, own_server.client(), channel=channel) as hl:
            connected(hl)
            assert cooling(late, 2)


@shares_a_server
def test_close_sends_what_is_queued_and_stops_the_threads(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    pool = pool_impl.make(3)
    health = RedisHealth(pool, server.client(), channel=channel)
    connected(health)
    for i in range(3):
        pool.mark_failed(i, 30)
    health.close()
    assert server.client().hlen(f"{channel}:cooldowns") == 3
    assert not health._sender.is_alive() and not health._listener.is_alive()
    pool.mark_failed(0, 40)  # no longer observed
    assert health.stats()["queued"] == 3


@shares_a_server
def test_the_asyncio_variant_shares_marks_between_two_pools(pool_impl, server, channel):
    from gonka_pool.redis import AsyncRedisHealth

    async def scenario():
        a, b = pool_impl.make(3), pool_impl.make(3)
        client_a, client_b = server.async_client(), server.async_client()
        async with (
            client_a,
            client_b,
            AsyncRedisHealth(a, client_a, channel=channel) as ha,
            AsyncRedisHealth(b, client_b, channel=channel) as hb,
        ):
            deadline = time.monotonic() + WAIT_S
            while not (ha.stats()["connected"] and hb.stats()["connected"]):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.001)
            start = time.perf_counter()
            a.mark_failed(1, 30)
            while not cooling(b, 1):
                assert time.perf_counter() - start < WAIT_S
                await asyncio.sleep(0.0002)
            delay = time.perf_counter() - start
            # A mark from another thread reaches the loop too.
            await asyncio.to_thread(b.mark_failed, 2, 30)
            while not cooling(a, 2):
                assert time.perf_counter() - start < WAIT_S
                await asyncio.sleep(0.0002)
        assert ha._sender.done() and hb._listener.done()
        return delay

    delay = asyncio.run(scenario())
    assert server.client().hlen(f"{channel}:cooldowns") == 2
    print(f"\nasyncio: propagation {delay * 1e3:.2f} ms")
    assert delay < 0.050


def test_a_bad_channel_or_queue_size_is_refused_before_anything_starts(pool_impl):
    from gonka_pool.redis import RedisHealth

    pool = pool_impl.make(2)
    for kwargs in ({"channel": ""}, {"queue_size": 0}):
        with pytest.raises(ValueError):
            RedisHealth(pool, object(), **kwargs)


def _shared_supported() -> bool:
    import gonka_pool

    return gonka_pool.IMPLEMENTATION == "c" and gonka_pool._pool.SHARED_SUPPORTED


@shares_a_server
@pytest.mark.skipif(not _shared_supported(), reason="needs the C core's shared=")
def test_one_subscriber_per_machine_is_enough_with_shared_pools(server, channel):
    from gonka_pool import EndpointPool
    from gonka_pool.redis import RedisHealth

    segment = f"redis-{uuid.uuid4().hex[:12]}"
    endpoints = nodes(4)
    # machine 1: two workers on one segment, one subscribing; machine 2: one worker
    subscriber, publisher = (EndpointPool(endpoints, shared=segment) for _ in range(2))
    remote = EndpointPool(endpoints)
    try:
        with (
            RedisHealth(subscriber, server.client(), channel=channel) as h1,
            RedisHealth(publisher, server.client(), channel=channel, subscribe=False) as h2,
            RedisHealth(remote, server.client(), channel=channel) as h3,
        ):
            connected(h1, h3)
            publisher.mark_failed(1, 30)  # a publish-only worker's mark reaches machine 2
            wait_until(lambda: cooling(remote, 1))
            remote.mark_failed(2, 30)  # machine 2's mark reaches both workers of machine 1
            wait_until(lambda: cooling(publisher, 2))
            assert cooling(subscriber, 2)
            connected(h2)  # set by its sender once the send returned: may trail the message
            assert h2.stats()["received"] == 0
    finally:
        EndpointPool.unlink_shared(segment)


def test_subscribe_must_be_a_bool():
    pytest.importorskip("redis")
    import redis

    from gonka_pool import EndpointPool
    from gonka_pool.redis import RedisHealth

    with pytest.raises(TypeError, match="subscribe must be a bool"):
        RedisHealth(EndpointPool(nodes(1)), redis.Redis(), subscribe="no")


class _UnreachableClient:
    """A client whose every call fails with a message quoting a URL with a password."""

    def register_script(self, script):
        return lambda **kwargs: None

    def _fail(self, *args, **kwargs):
        raise ConnectionError("Error 111 connecting to redis://fleet:s3cr3t-pw@10.0.0.9:6379")

    pipeline = pubsub = _fail


@pytest.mark.thread_unsafe(reason="caplog collects every thread's records")
def test_a_lost_redis_is_logged_without_a_password_its_error_quotes(pool_impl, caplog):
    from gonka_pool.redis import RedisHealth

    pool = pool_impl.make(2)
    with caplog.at_level(logging.WARNING, logger="gonka_pool.redis"):
        health = RedisHealth(pool, _UnreachableClient())
        pool.mark_failed(0, 30)
        wait_until(lambda: health.stats()["errors"] >= 2)
        health.close(timeout=0.2)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "lost Redis" in text
    assert "s3cr3t" not in text and "fleet:" not in text
