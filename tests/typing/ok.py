"""A user's script over the whole public API: `mypy --strict` must report nothing here.

`make lint` type-checks it (tests/typing/check.py); tests/test_switch.py also runs it,
on the pure-Python twin, so every line is a call that works, not only one that types.
Each `assert_type` pins what a user's checker sees: the C core's stub, never Any.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import httpx2
import openai
from typing_extensions import assert_type

import gonka_pool.httpx
import gonka_pool.httpx2
import gonka_pool.openai
import gonka_pool.redis
from gonka_pool import IMPLEMENTATION, EndpointPool, EndpointState, GonkaEndpoint, RoutingError

NODES = [GonkaEndpoint("https://n1.example/v1", "gonka1node1"), GonkaEndpoint("https://n2.example/v1", "gonka1node2")]


def answer(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json={"host": request.url.host})


def answer_legacy(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"host": request.url.host})


def selection(pool: EndpointPool) -> None:
    assert_type(pool.next(), GonkaEndpoint)
    idx, endpoint = pool.next_indexed()
    assert_type(idx, int)
    assert_type(pool.next_many(3), list[GonkaEndpoint])
    assert_type(pool.mark_failed(endpoint, 30.0), bool)
    assert_type(pool.mark_failed(idx, timedelta(seconds=5)), bool)
    assert_type(pool.mark_failed(endpoint), bool)
    assert_type(pool.mark_success(idx), bool)
    assert_type(pool.mark_success(endpoint), bool)
    states = pool.snapshot()
    assert_type(states, tuple[EndpointState, ...])
    assert states[0].cooldown_remaining >= 0.0 and states[0].weight >= 1
    assert_type(pool.endpoints, tuple[GonkaEndpoint, ...])
    assert_type(pool.weights, tuple[int, ...])
    assert_type(pool[0], GonkaEndpoint)
    assert_type(pool[:1], tuple[GonkaEndpoint, ...])
    assert_type(iter(pool), Iterator[GonkaEndpoint])
    assert endpoint in pool and len(pool) == 2 and bool(pool) and not pool.is_empty()
    pool.update(NODES, [1, 2])
    pool.update(reversed(NODES), weights=None)


def failover(pool: EndpointPool) -> None:
    def host(endpoint: GonkaEndpoint) -> str:
        return endpoint.base_url

    async def ahost(endpoint: GonkaEndpoint) -> str:
        return endpoint.address

    assert_type(pool.call(host), str)
    assert_type(pool.call(lambda endpoint: len(endpoint.address), attempts=2, cooldown=1.5), int)
    assert_type(
        pool.call(
            host,
            attempts=None,
            cooldown=timedelta(seconds=1),
            timeout_cooldown=60,
            retry_on=OSError,
            timeout_on=(TimeoutError,),
            deadline=10.0,
        ),
        str,
    )
    assert_type(asyncio.run(pool.acall(ahost, deadline=5)), str)


def transports(pool: EndpointPool) -> None:
    with httpx2.Client(
        transport=gonka_pool.httpx2.PoolTransport(
            pool, transport=httpx2.MockTransport(answer), attempts=2, deadline=10.0
        ),
        trust_env=False,
    ) as client:
        assert client.get("http://gonka/models").json()["host"] in {"n1.example", "n2.example"}
    with httpx.Client(
        transport=gonka_pool.httpx.PoolTransport(pool, transport=httpx.MockTransport(answer_legacy)), trust_env=False
    ) as legacy:
        assert legacy.get("http://gonka/models").status_code == 200
    async_transport = gonka_pool.httpx2.AsyncPoolTransport(pool, cooldown=5.0)
    assert isinstance(async_transport, httpx2.AsyncBaseTransport)
    sdk = gonka_pool.openai.client(pool, timeout=30.0)
    assert str(sdk.base_url).startswith("http://gonka")
    sdk.close()
    assert isinstance(gonka_pool.openai.async_client(pool), openai.AsyncOpenAI)


def sharing() -> None:
    assert_type(EndpointPool(NODES).shared, str | None)
    if IMPLEMENTATION != "c":  # shared= is the C core's: the twin refuses it
        return
    pool = EndpointPool(NODES, shared="gonka-pool-typing-ok", shared_capacity=8)
    try:
        assert_type(pool.shared, str | None)
        assert pool.mark_failed(0, 1.0)
    finally:
        assert_type(EndpointPool.unlink_shared("gonka-pool-typing-ok"), bool)


def share_across_hosts(pool: EndpointPool, client: object) -> None:
    # Typed only (it needs a Redis server): main() does not call it.
    with gonka_pool.redis.RedisHealth(pool, client, channel="fleet", subscribe=False) as health:
        assert_type(health.stats(), dict[str, Any])


def main() -> None:
    assert IMPLEMENTATION in ("c", "python")
    pool = EndpointPool(NODES, weights=[1, 1], start=0, base_cooldown=timedelta(seconds=1), max_cooldown=60)
    assert_type(pool, EndpointPool)
    os.environ["GONKA_POOL_TYPING_ENDPOINTS"] = "https://n1.example/v1;gonka1node1,https://n2.example/v1;gonka1node2"
    assert_type(EndpointPool.from_env("GONKA_POOL_TYPING_ENDPOINTS"), EndpointPool)
    assert_type(EndpointPool.from_env("GONKA_POOL_TYPING_ENDPOINTS", weights=[2, 1]), EndpointPool)
    assert_type(GonkaEndpoint.parse("https://n3.example;gonka1node3"), GonkaEndpoint)
    assert issubclass(RoutingError, ValueError)
    selection(pool)
    failover(pool)
    transports(pool)
    sharing()


if __name__ == "__main__":
    main()
