"""What a Redis writer may do to a pool joined by ``gonka_pool.redis``: anyone who
can PUBLISH on the channel or HSET the hash.  Remote events hold at most
``max_remote_cooling`` of the nodes in cooldown, no deadline in the hash lies
beyond now + ``max_cooldown``, and a node the pool clears (discovery listed it
again) is cleared in Redis and in the other pools too.

The hostile writer is a plain redis-py client against a real ``redis-server``
(skipped without one, as tests/test_redis.py is).  Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections import Counter

import pytest

import test_redis
from gonka_pool.redis import node_key
from test_redis import NS, connected, cooling, shares_a_server, wait_until

DAY_NS = 86_400 * NS
YEARS_31_MS = 31 * 365 * 86_400 * 1000

server = test_redis.server  # the fixture: a redis-server of this module's own


@pytest.fixture
def channel():
    return f"gonka_pool_trust_{uuid.uuid4().hex}"


def hostile_cooldown(client, channel: str, endpoint, remaining_ns: int = DAY_NS) -> None:
    """What anyone who can PUBLISH may send: a well-formed cooldown of another source."""
    message = {
        "v": 1,
        "src": "hostile",
        "event": "cooldown",
        "node": node_key(endpoint),
        "remaining_ns": remaining_ns,
        "failures": 64,
    }
    client.publish(channel, json.dumps(message))


def hostile_clear(client, channel: str, endpoint) -> None:
    message = {"v": 1, "src": "hostile", "event": "cleared", "node": node_key(endpoint), "remaining_ns": 0}
    client.publish(channel, json.dumps({**message, "failures": 0}))


def server_ms(client) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def stored_deadline_ms(client, channel: str, endpoint) -> int | None:
    value = client.hget(f"{channel}:cooldowns", node_key(endpoint))
    return None if value is None else int(value.split(b":")[0])


# -- the hooks, no Redis needed ----------------------------------------------------------


def test_both_cores_tell_redis_their_max_cooldown(make_pool):
    assert make_pool(2, base_cooldown=0.5, max_cooldown=7.25)._max_ns == 7_250_000_000


# -- defect 5: the share of nodes remote events may cool -----------------------------------


@shares_a_server
def test_remote_cooldowns_for_all_nodes_but_one_leave_half_the_nodes_in_service(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    hostile = server.client()
    pool = pool_impl.make(8)
    with RedisHealth(pool, server.client(), channel=channel) as health:
        connected(health)
        for _ in range(3):  # "forever if repeated": a repeat cools no more nodes
            for endpoint in pool.endpoints[:7]:
                hostile_cooldown(hostile, channel, endpoint)
        wait_until(lambda: health.stats()["received"] >= 21)
        picks = Counter(pool.next() for _ in range(1000))
        stats = health.stats()
    assert len(picks) == 4 and max(picks.values()) <= 250  # 4 cooled by the writer, not 7
    assert pool.endpoints[7] in picks
    assert stats["remote_cooling"] == 4
    assert stats["applied"] == 4 * 3 and stats["refused"] == 3 * 3
    assert sum(not state.available for state in pool.snapshot()) == 4


@shares_a_server
def test_local_failures_still_cool_nodes_beyond_the_remote_share(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    hostile = server.client()
    pool = pool_impl.make(4)
    with RedisHealth(pool, server.client(), channel=channel) as health:
        connected(health)
        for endpoint in pool.endpoints[:2]:
            hostile_cooldown(hostile, channel, endpoint)
        wait_until(lambda: health.stats()["remote_cooling"] == 2)
        pool.mark_failed(2)  # this process's own failure: no share applies
        assert [state.available for state in pool.snapshot()] == [False, False, False, True]
        hostile_cooldown(hostile, channel, pool.endpoints[3])
        wait_until(lambda: health.stats()["refused"] == 1)
        assert pool.snapshot()[3].available


@shares_a_server
def test_max_remote_cooling_of_zero_applies_no_remote_cooldown_and_one_applies_all(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    hostile = server.client()
    closed, trusting = pool_impl.make(3), pool_impl.make(3)
    with (
        RedisHealth(closed, server.client(), channel=channel, max_remote_cooling=0) as none,
        RedisHealth(trusting, server.client(), channel=channel, max_remote_cooling=1) as every,
    ):
        connected(none, every)
        for endpoint in closed.endpoints:
            hostile_cooldown(hostile, channel, endpoint)
        wait_until(lambda: none.stats()["received"] >= 3 and every.stats()["received"] >= 3)
        assert none.stats()["refused"] == 3 and all(state.available for state in closed.snapshot())
        assert every.stats()["refused"] == 0 and not any(state.available for state in trusting.snapshot())


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, True, "0.5", None])
def test_a_max_remote_cooling_outside_0_to_1_is_refused_before_anything_starts(make_pool, bad):
    from gonka_pool.redis import RedisHealth

    pool = make_pool(2)
    with pytest.raises(ValueError, match="max_remote_cooling must be a number from 0 to 1"):
        RedisHealth(pool, object(), max_remote_cooling=bad)


# -- defect 5: deadlines stored for years --------------------------------------------------


@shares_a_server
def test_a_deadline_31_years_ahead_in_the_hash_is_cut_back_on_load_and_pins_no_later_process(
    pool_impl, server, channel
):
    from gonka_pool.redis import RedisHealth

    hostile = server.client()
    first = pool_impl.make(4, base_cooldown=0.5, max_cooldown=2.0)
    target = first.endpoints[0]
    hostile.hset(f"{channel}:cooldowns", node_key(target), f"{server_ms(hostile) + YEARS_31_MS}:9")
    with RedisHealth(first, server.client(), channel=channel) as health:
        connected(health)
        loaded_at = server_ms(hostile)
        assert cooling(first, 0) and first.snapshot()[0].cooldown_remaining <= 2.02  # max_cooldown + a tick
        # The hash itself no longer holds the hostile deadline, and expires with it.
        assert stored_deadline_ms(hostile, channel, target) <= loaded_at + 2000
        assert 0 < hostile.pttl(f"{channel}:cooldowns") <= 2000
        assert health.stats()["clamped"] == 1
    wait_until(lambda: not hostile.exists(f"{channel}:cooldowns"), timeout=4)
    later = pool_impl.make(4, base_cooldown=0.5, max_cooldown=2.0)
    with RedisHealth(later, server.client(), channel=channel) as health:
        connected(health)
        assert all(state.available for state in later.snapshot())


@shares_a_server
def test_an_honest_cooldown_cuts_back_a_longer_deadline_stored_for_its_node(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    hostile = server.client()
    pool = pool_impl.make(2, base_cooldown=0.5, max_cooldown=2.0)
    target = pool.endpoints[1]
    hostile.hset(f"{channel}:cooldowns", node_key(target), f"{server_ms(hostile) + YEARS_31_MS}:9")
    # A publisher only: it never loads the hash, so only its write can cut it back.
    with RedisHealth(pool, server.client(), channel=channel, subscribe=False) as health:
        pool.mark_failed(target, 0.5)
        wait_until(lambda: health.stats()["sent"] == 1)
        written_at = server_ms(hostile)
    assert stored_deadline_ms(hostile, channel, target) <= written_at + 2000


@shares_a_server
def test_cooldowns_sent_and_stored_are_capped_at_the_senders_max_cooldown(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    client = server.client()
    pool = pool_impl.make(2, base_cooldown=0.5, max_cooldown=2.0)
    with RedisHealth(pool, server.client(), channel=channel) as health:
        connected(health)
        pool.mark_failed(0, float("inf"))  # "until cleared" here; two seconds for everyone else
        pool.mark_failed(1, 3600)
        wait_until(lambda: health.stats()["sent"] == 2)
        sent_at = server_ms(client)
    for endpoint in pool.endpoints:
        assert stored_deadline_ms(client, channel, endpoint) <= sent_at + 2000


# -- defects 8/9: a node that discovery lists again is cleared in Redis too ----------------


@shares_a_server
def test_a_node_the_pool_clears_is_cleared_in_redis_and_in_the_other_pools(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    a, b = pool_impl.make(4), pool_impl.make(4)
    node = a.endpoints[1]
    with RedisHealth(a, server.client(), channel=channel) as ha, RedisHealth(b, server.client(), channel=channel) as hb:
        connected(ha, hb)
        a.mark_failed(node, float("inf"))  # a 403: "until cleared"
        wait_until(lambda: cooling(b, 1) and stored_deadline_ms(server.client(), channel, node) is not None)
        # What refresh() does when discovery lists the node again: it clears the
        # node, then tells its observer (the pool's hook, called as the pool does).
        a.mark_failed(node, 0)
        ha._observe("cleared", node, 0, 0)
        wait_until(lambda: not cooling(b, 1))
        assert stored_deadline_ms(server.client(), channel, node) is None
        assert hb.stats()["remote_cooling"] == 0
    late = pool_impl.make(4)
    with RedisHealth(late, server.client(), channel=channel) as hl:
        connected(hl)
        assert all(state.available for state in late.snapshot())


@shares_a_server
def test_a_remote_clear_never_ends_a_cooldown_of_the_receivers_own_failure(pool_impl, server, channel):
    from gonka_pool.redis import RedisHealth

    hostile = server.client()
    pool = pool_impl.make(4)
    with RedisHealth(pool, server.client(), channel=channel) as health:
        connected(health)
        pool.mark_failed(2)
        hostile_cooldown(hostile, channel, pool.endpoints[0])
        wait_until(lambda: cooling(pool, 0))
        for endpoint in pool.endpoints:
            hostile_clear(hostile, channel, endpoint)
        wait_until(lambda: health.stats()["received"] >= 5)
        assert [state.available for state in pool.snapshot()] == [True, True, False, True]


@shares_a_server
def test_the_asyncio_variant_bounds_remote_cooldowns_and_shares_clears(pool_impl, server, channel):
    from gonka_pool.redis import AsyncRedisHealth

    hostile = server.client()
    a, b = pool_impl.make(4), pool_impl.make(4)

    async def wait_for(condition) -> None:
        for _ in range(5000):
            if condition():
                return
            await asyncio.sleep(0.001)
        pytest.fail("not within 5 s")

    async def scenario() -> dict:
        client_a, client_b = server.async_client(), server.async_client()
        try:
            async with (
                AsyncRedisHealth(a, client_a, channel=channel) as ha,
                AsyncRedisHealth(b, client_b, channel=channel) as hb,
            ):
                await wait_for(lambda: ha.stats()["connected"] and hb.stats()["connected"])
                for endpoint in b.endpoints[1:]:
                    hostile_cooldown(hostile, channel, endpoint)
                await wait_for(lambda: hb.stats()["received"] >= 3)
                assert [state.available for state in b.snapshot()] == [True, False, False, True]
                a.mark_failed(1, 0)  # a's own view of node 1: as refresh() clears it
                ha._observe("cleared", a.endpoints[1], 0, 0)
                await wait_for(lambda: b.snapshot()[1].available)
                return hb.stats()
        finally:
            await client_a.aclose()
            await client_b.aclose()

    stats = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert stats["refused"] == 1 and stats["remote_cooling"] == 1
