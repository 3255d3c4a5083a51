"""PoolTransport / AsyncPoolTransport against real HTTP nodes on 127.0.0.1.

No mocked transport: each test sends through httpx2 or legacy httpx (the
``flavour`` fixture) to ``LocalNode`` servers started here: a healthy node, nodes
answering 503 / 429 with Retry-After, a closed port, a node that stalls past the
client timeout, one answering 401, one that hangs up mid-stream.  Every pool test
runs on both implementations, with the pool's clock frozen so cooldowns are exact.
Requests are few, timeouts short, and every server stops with the module.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from gonka_pool import GonkaEndpoint
from gonka_pool.testing import LocalNode, free_port

pytestmark = pytest.mark.thread_unsafe(reason="the local nodes and their request logs are shared by the module's tests")

# Optional extras: skipped where not installed (httpx2 and openai 3.x need 3.11+).
HAVE = {name: importlib.util.find_spec(name) is not None for name in ("httpx", "httpx2", "openai")}
needs_openai = pytest.mark.skipif(not HAVE["openai"], reason="openai is not installed")

T0 = 10**12
S = 10**9
STALL_TIMEOUT = 0.2  # the client timeout that the stalling node overruns
CHAT = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}


@dataclass(frozen=True)
class Flavour:
    """One HTTP library and its gonka_pool adapter."""

    name: str
    http: ModuleType
    adapter: ModuleType

    # The nodes speak plain HTTP: inner transports without TLS setup (loading the CA
    # bundle costs tens of milliseconds per transport).  trust_env=False: a proxy
    # from the environment would otherwise be mounted ahead of the pool transport.
    def client(self, pool, timeout: float = 5.0, **transport_options: Any):
        transport = self.adapter.PoolTransport(
            pool, transport=self.http.HTTPTransport(verify=False), **transport_options
        )
        return self.http.Client(transport=transport, timeout=timeout, trust_env=False)

    def async_client(self, pool, timeout: float = 5.0, **transport_options: Any):
        transport = self.adapter.AsyncPoolTransport(
            pool, transport=self.http.AsyncHTTPTransport(verify=False), **transport_options
        )
        return self.http.AsyncClient(transport=transport, timeout=timeout, trust_env=False)


@pytest.fixture(params=["httpx2", "httpx"])
def flavour(request) -> Flavour:
    if not HAVE[request.param]:
        pytest.skip(f"{request.param} is not installed")
    http = importlib.import_module(request.param)
    return Flavour(request.param, http, importlib.import_module(f"gonka_pool.{request.param}"))


@dataclass
class Nodes:
    healthy: LocalNode
    unavailable: LocalNode  # 503, Retry-After: 120
    rate_limited: LocalNode  # 429, Retry-After: 120
    unauthorized: LocalNode  # 401
    stall: LocalNode
    broken: LocalNode  # 200, then hangs up mid-stream
    closed_url: str  # nothing listens there

    def servers(self) -> list[LocalNode]:
        return [self.healthy, self.unavailable, self.rate_limited, self.unauthorized, self.stall, self.broken]


@pytest.fixture(scope="module")
def running_nodes():
    started = Nodes(
        healthy=LocalNode("healthy"),
        unavailable=LocalNode("unavailable", "unavailable", retry_after=120),
        rate_limited=LocalNode("rate-limited", "rate-limited", retry_after=120),
        unauthorized=LocalNode("unauthorized", "unauthorized"),
        stall=LocalNode("stall", "stall", stall_seconds=3.0),
        broken=LocalNode("broken", "broken-stream"),
        closed_url=f"http://127.0.0.1:{free_port()}/v1",
    )
    for node in started.servers():
        node.start()
    yield started
    for node in started.servers():
        node.stop()


@pytest.fixture
def local(running_nodes) -> Nodes:
    for node in running_nodes.servers():
        node.reset()
    return running_nodes


def endpoint(node: LocalNode | str, address: str | None = None) -> GonkaEndpoint:
    if isinstance(node, str):
        return GonkaEndpoint(node, address or "gonka1closed")
    return GonkaEndpoint(node.url, address or f"gonka1{node.name}")


def in_order(pool_impl) -> dict:
    """Settings under which ``acquire()`` picks exactly as ``next_indexed()`` does
    (round robin): these tests pin the order of attempts.  Empty for a core without
    ``balance=``, whose picks are round robin anyway."""
    try:
        pool_impl.EndpointPool([GonkaEndpoint("http://127.0.0.1:9/v1", "a")], balance="round_robin")
    except TypeError:
        return {}
    return {"balance": "round_robin"}


@pytest.fixture
def make_local_pool(pool_impl):
    """A pool of the given nodes, for either implementation, its clock frozen at T0
    and its next pick the first node; picking in round robin (see ``in_order``)."""

    def make(*members: LocalNode | str | GonkaEndpoint, **settings: Any):
        settings = {**in_order(pool_impl), **settings}
        pool = pool_impl.EndpointPool((m if isinstance(m, GonkaEndpoint) else endpoint(m) for m in members), **settings)
        pool._set_clock(T0)
        # A pool may start its round robin anywhere: take picks until the last node.
        for _ in range(len(pool)):
            if pool.next_indexed()[0] == len(pool) - 1:
                return pool
        raise AssertionError("no round robin")

    return make


def cooldowns(pool) -> list[float]:
    """Each node's cooldown in seconds from T0 (0: not marked)."""
    return [0 if d == 0 else (d - T0) / S for d in pool._state()[2]]


def in_flight(pool) -> int:
    """Requests the pool counts in flight, over all nodes."""
    return sum(state.in_flight for state in pool.snapshot())


def content_of(response) -> str:
    return response.json()["choices"][0]["message"]["content"]


# -- failover -------------------------------------------------------------------


def test_every_request_succeeds_while_one_healthy_node_remains(flavour, local, make_local_pool):
    pool = make_local_pool(local.unavailable, local.closed_url, local.stall, local.healthy)
    with flavour.client(pool, timeout=STALL_TIMEOUT, attempts=len(pool)) as client:
        responses = [client.post("http://gonka/chat/completions", json=CHAT) for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * 5
    assert {content_of(r) for r in responses} == {"hello from healthy"}
    assert {r.extensions["gonka_endpoint"] for r in responses} == {pool[3]}
    # 503 with Retry-After: 120 > the backoff's 30; refused: 30; stalled: 30 as well
    # (a timeout is an error to the pool's backoff unless timeout_cooldown says more).
    assert cooldowns(pool) == [120, 30, 30, 0]
    assert len(local.unavailable.seen) == 1 and len(local.stall.seen) == 1
    assert len(local.healthy.seen) == 5
    assert in_flight(pool) == 0  # every attempt settled, failures and answers alike


def test_the_request_is_rewritten_to_the_node(flavour, local, make_local_pool):
    pool = make_local_pool(local.healthy)
    with flavour.client(pool) as client:
        response = client.post("http://gonka/chat/completions?trace=a%20b", json=CHAT, headers={"X-Caller": "kept"})
    (seen,) = local.healthy.seen
    assert response.status_code == 200
    assert seen.path == "/v1/chat/completions?trace=a%20b"  # the node's base path first
    assert seen.headers["host"] == f"127.0.0.1:{local.healthy.port}"
    assert seen.headers["x-caller"] == "kept"
    assert json.loads(seen.body) == CHAT
    assert str(response.request.url) == "http://gonka/chat/completions?trace=a%20b"


def test_async_every_request_succeeds_while_one_healthy_node_remains(flavour, local, make_local_pool):
    pool = make_local_pool(local.unavailable, local.closed_url, local.stall, local.healthy)

    async def main():
        async with flavour.async_client(pool, timeout=STALL_TIMEOUT, attempts=4) as client:
            return [await client.post("http://gonka/chat/completions", json=CHAT) for _ in range(3)]

    responses = asyncio.run(main())
    assert [content_of(r) for r in responses] == ["hello from healthy"] * 3
    assert responses[0].extensions["gonka_endpoint"] == pool[3]
    assert cooldowns(pool) == [120, 30, 30, 0]


def test_a_401_goes_back_to_the_caller_and_marks_no_node(flavour, local, make_local_pool):
    pool = make_local_pool(local.unauthorized, local.healthy)
    with flavour.client(pool) as client:
        response = client.post("http://gonka/chat/completions", json=CHAT)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "invalid signature"
    assert response.extensions["gonka_endpoint"] == pool[0]
    assert cooldowns(pool) == [0, 0]
    assert local.healthy.seen == []


def test_async_a_401_goes_back_to_the_caller_and_marks_no_node(flavour, local, make_local_pool):
    pool = make_local_pool(local.unauthorized, local.healthy)

    async def main():
        async with flavour.async_client(pool) as client:
            return await client.post("http://gonka/chat/completions", json=CHAT)

    assert asyncio.run(main()).status_code == 401
    assert cooldowns(pool) == [0, 0] and local.healthy.seen == []


def test_a_404_is_the_callers_and_keeps_the_query(flavour, local, make_local_pool):
    pool = make_local_pool(local.healthy, local.unavailable)
    with flavour.client(pool) as client:
        response = client.get("http://gonka/unknown", params={"limit": 2})
    assert response.status_code == 404
    assert [s.path for s in local.healthy.seen] == ["/v1/unknown?limit=2"]
    assert cooldowns(pool) == [0, 0]


def test_a_429_with_retry_after_cools_the_node_at_least_that_long(flavour, local, make_local_pool):
    pool = make_local_pool(local.rate_limited, local.healthy)
    with flavour.client(pool) as client:
        assert client.post("http://gonka/chat/completions", json=CHAT).status_code == 200
    assert cooldowns(pool) == [120, 0]
    assert pool.snapshot()[0].consecutive_failures == 1  # a failure: the node asked for time
    pool = make_local_pool(local.rate_limited, local.healthy)
    with flavour.client(pool, cooldown=300) as client:  # longer than Retry-After: kept
        client.post("http://gonka/chat/completions", json=CHAT)
    assert cooldowns(pool) == [300, 0]
    assert in_flight(pool) == 0


def test_a_429_without_retry_after_is_load_and_fails_over_without_a_backoff(flavour, local, make_local_pool, caplog):
    busy = LocalNode("busy", "rate-limited", retry_after="").start()  # no usable Retry-After
    try:
        pool = make_local_pool(busy, local.healthy)
        with caplog.at_level(logging.INFO, logger="gonka_pool"), flavour.client(pool, cooldown=300) as client:
            response = client.post("http://gonka/chat/completions", json=CHAT)
        assert content_of(response) == "hello from healthy" and len(busy.seen) == 1
        state = pool.snapshot()[0]
        assert 0 < state.cooldown_remaining < 1  # a jittered moment, not cooldown=300
        assert (state.consecutive_failures, state.total_failures) == (0, 0)
        assert [r for r in caplog.records if r.name == "gonka_pool"] == []  # no WARNING: load is no failure
        assert in_flight(pool) == 0
    finally:
        busy.stop()


def test_only_the_configured_statuses_fail_over(flavour, local, make_local_pool):
    pool = make_local_pool(local.unavailable, local.healthy)
    with flavour.client(pool, retry_statuses={502}) as client:
        assert client.post("http://gonka/chat/completions", json=CHAT).status_code == 503
    assert cooldowns(pool) == [0, 0]


def test_on_request_signs_each_attempt_for_its_node(flavour, local, make_local_pool):
    pool = make_local_pool(local.unavailable, local.healthy)
    signed: list[tuple[GonkaEndpoint, str]] = []

    def sign(request, node: GonkaEndpoint) -> None:
        digest = hashlib.sha256(request.content).hexdigest()
        request.headers["X-Gonka-Signature"] = f"{node.address}:{digest}"
        signed.append((node, str(request.url)))

    with flavour.client(pool, on_request=sign) as client:
        response = client.post("http://gonka/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert signed == [
        (pool[0], f"{local.unavailable.url}/chat/completions"),
        (pool[1], f"{local.healthy.url}/chat/completions"),
    ]
    for node, seen in ((local.unavailable, local.unavailable.seen[0]), (local.healthy, local.healthy.seen[0])):
        digest = hashlib.sha256(seen.body).hexdigest()
        assert seen.headers["x-gonka-signature"] == f"gonka1{node.name}:{digest}"


def test_async_on_request_may_be_a_coroutine(flavour, local, make_local_pool):
    pool = make_local_pool(local.closed_url, local.healthy)
    seen_by_signer = []

    async def sign(request, node):
        await asyncio.sleep(0)
        seen_by_signer.append(node)
        request.headers["X-Gonka-Sender"] = node.address

    async def main():
        async with flavour.async_client(pool, on_request=sign) as client:
            return await client.post("http://gonka/chat/completions", json=CHAT)

    assert asyncio.run(main()).status_code == 200
    assert seen_by_signer == [pool[0], pool[1]]
    assert local.healthy.seen[0].headers["x-gonka-sender"] == "gonka1healthy"


def test_an_error_in_on_request_propagates_and_marks_nothing(flavour, local, make_local_pool):
    pool = make_local_pool(local.healthy, local.healthy)

    def sign(request, node):
        raise RuntimeError("no key for this node")

    with flavour.client(pool, on_request=sign) as client, pytest.raises(RuntimeError):
        client.post("http://gonka/chat/completions", json=CHAT)
    assert cooldowns(pool) == [0, 0] and local.healthy.seen == []


def test_when_attempts_run_out_the_last_response_is_returned(flavour, local, make_local_pool):
    pool = make_local_pool(endpoint(local.unavailable, "a"), endpoint(local.unavailable, "b"), local.healthy)
    with flavour.client(pool, attempts=2) as client:
        response = client.post("http://gonka/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "node is overloaded"
    assert response.extensions["gonka_endpoint"] == pool[1]
    assert cooldowns(pool) == [120, 120, 0]
    assert local.healthy.seen == []


def test_when_attempts_run_out_the_last_transport_error_is_raised(flavour, local, make_local_pool):
    pool = make_local_pool(endpoint(local.closed_url, "a"), endpoint(local.closed_url, "b"), local.healthy)
    with flavour.client(pool, attempts=2) as client:
        with pytest.raises(flavour.http.ConnectError):
            client.post("http://gonka/chat/completions", json=CHAT)
    assert cooldowns(pool) == [30, 30, 0]
    assert local.healthy.seen == []


def test_a_stream_fails_over_before_its_first_byte(flavour, local, make_local_pool):
    pool = make_local_pool(local.unavailable, local.healthy)
    with flavour.client(pool) as client:
        with client.stream("POST", "http://gonka/chat/completions", json={**CHAT, "stream": True}) as response:
            body = b"".join(response.iter_bytes())
    assert response.status_code == 200 and body.endswith(b"data: [DONE]\n\n")
    assert b"healthy" in body
    assert cooldowns(pool) == [120, 0]


def test_a_stream_never_fails_over_after_its_first_byte(flavour, local, make_local_pool):
    pool = make_local_pool(local.broken, local.healthy)
    received = []
    with flavour.client(pool) as client:
        with client.stream("POST", "http://gonka/chat/completions", json={**CHAT, "stream": True}) as response:
            with pytest.raises(flavour.http.RemoteProtocolError):
                for chunk in response.iter_bytes():
                    received.append(chunk)
    assert b"".join(received).startswith(b"data: ")  # the first event arrived...
    assert local.healthy.seen == []  # ...so nothing was resent
    assert cooldowns(pool) == [0, 0]


def test_with_the_default_balance_a_busy_node_fails_over_and_every_attempt_settles(flavour, local, pool_impl):
    busy = LocalNode("busy", "rate-limited", retry_after="").start()  # Gonka's "capacity reached"
    try:
        pool = pool_impl.EndpointPool([endpoint(busy), endpoint(local.healthy)], start=0)  # balance's default
        with flavour.client(pool) as client:
            response = client.post("http://gonka/chat/completions", json=CHAT)
        assert content_of(response) == "hello from healthy"
        assert len(busy.seen) == 1  # tried first (both unmeasured: scan order), then the other
        refused, answered = pool.snapshot()
        assert (refused.consecutive_failures, refused.total_failures) == (0, 0)
        assert answered.consecutive_failures == 0 and in_flight(pool) == 0
    finally:
        busy.stop()


def test_a_stream_settles_its_attempt_when_its_headers_arrive(flavour, local, make_local_pool):
    pool = make_local_pool(local.healthy)
    with flavour.client(pool) as client:
        with client.stream("POST", "http://gonka/chat/completions", json={**CHAT, "stream": True}) as response:
            # Settled before a byte of the body was read: the latency the pool
            # learns is the time to the headers, for a stream its first byte.
            assert in_flight(pool) == 0
            assert b"".join(response.iter_bytes()).startswith(b"data: ")
    assert in_flight(pool) == 0 and cooldowns(pool) == [0]


def test_an_error_that_is_not_the_nodes_fault_settles_its_attempt_unmarked(flavour, local, make_local_pool):
    pool = make_local_pool(local.healthy, local.unavailable)

    def sign(request, endpoint):
        raise RuntimeError("the signer's bug")

    with flavour.client(pool, on_request=sign) as client:
        with pytest.raises(RuntimeError, match="signer"):
            client.post("http://gonka/chat/completions", json=CHAT)
    assert in_flight(pool) == 0 and cooldowns(pool) == [0, 0]
    assert local.healthy.seen == [] and local.unavailable.seen == []


def test_async_a_cancelled_request_leaves_no_request_in_flight(flavour, local, make_local_pool):
    pool = make_local_pool(local.closed_url, local.stall, local.healthy)

    async def main():
        async with flavour.async_client(pool) as client:
            task = asyncio.ensure_future(client.post("http://gonka/chat/completions", json=CHAT))
            for _ in range(500):
                if local.stall.seen:
                    break
                await asyncio.sleep(0.01)
            assert local.stall.seen and in_flight(pool) == 1  # stalled on the second node
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert in_flight(pool) == 0
    assert cooldowns(pool) == [30, 0, 0]  # the refused node only: the cancelled attempt marks nothing
    assert local.healthy.seen == []


def test_the_transport_checks_its_arguments(flavour, pool_impl):
    pool = pool_impl.EndpointPool([GonkaEndpoint("http://127.0.0.1:9/v1", "a")])
    Transport = flavour.adapter.PoolTransport
    for bad, error in [
        ({"attempts": 0}, ValueError),
        ({"cooldown": -1}, ValueError),
        ({"timeout_cooldown": "60"}, TypeError),
        ({"retry_statuses": 503}, TypeError),
        ({"retry_statuses": ["503"]}, ValueError),
        ({"retry_statuses": [700]}, ValueError),
        ({"on_request": "sign"}, TypeError),
    ]:
        with pytest.raises(error):
            Transport(pool, **bad)
    with pytest.raises(TypeError, match="EndpointPool"):
        Transport([GonkaEndpoint("http://127.0.0.1:9/v1", "a")])
    for bad, error in [
        ({"origin": "gonka"}, ValueError),
        ({"origin": "http://gonka/v1"}, ValueError),
        ({"origin": "http://user:pw@gonka"}, ValueError),
        ({"origin": b"http://gonka"}, TypeError),
        ({"max_retry_after": -1}, ValueError),
        ({"max_retry_after": float("inf")}, ValueError),
        ({"deadline": 0}, ValueError),
        ({"deadline": "1"}, TypeError),
    ]:
        with pytest.raises(error):
            Transport(pool, **bad)
    transport = Transport(pool)
    assert transport.attempts is None and transport.pool is pool
    assert transport.origin == "http://gonka"
    assert isinstance(transport, flavour.http.BaseTransport)
    assert isinstance(flavour.adapter.AsyncPoolTransport(pool), flavour.http.AsyncBaseTransport)
    transport.close()


def test_the_adapters_say_what_to_install_and_the_core_works_without_them():
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(IMPORT_WITHOUT_HTTPX)],
        capture_output=True,
        text=True,
        env={**os.environ, "GONKA_POOL_NO_EXTENSIONS": "1"},
        check=True,
    ).stdout
    assert out.splitlines() == [
        "a",
        "gonka_pool.httpx2 needs httpx2: pip install 'gonka-pool[httpx2]'",
        "gonka_pool.httpx needs httpx: pip install 'gonka-pool[httpx]'",
    ]


IMPORT_WITHOUT_HTTPX = """
    import sys
    for name in ("httpx", "httpx2", "openai"):
        sys.modules[name] = None   # as if not installed
    import gonka_pool
    pool = gonka_pool.EndpointPool([gonka_pool.GonkaEndpoint("https://a.example", "a")])
    print(pool.call(lambda ep: ep.address))
    for module in ("gonka_pool.httpx2", "gonka_pool.httpx"):
        try:
            __import__(module)
        except ImportError as exc:
            print(exc)
"""


# -- the openai SDK ---------------------------------------------------------------


@needs_openai
def test_openai_sdk_fails_over_through_the_transport(flavour, local, make_local_pool):
    import openai

    pool = make_local_pool(local.unavailable, local.closed_url, local.healthy)
    client = openai.OpenAI(base_url="http://gonka", api_key="unused", max_retries=0, http_client=flavour.client(pool))
    with client:
        reply = client.chat.completions.create(**CHAT)
        stream = client.chat.completions.create(**CHAT, stream=True)
        words = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert reply.choices[0].message.content == "hello from healthy"
    assert words == "hello from healthy"
    assert cooldowns(pool) == [120, 30, 0]
    assert [s.path for s in local.healthy.seen] == ["/v1/chat/completions"] * 2


@needs_openai
def test_openai_sdk_reports_a_401_without_failing_over(flavour, local, make_local_pool):
    import openai

    pool = make_local_pool(local.unauthorized, local.healthy)
    with openai.OpenAI(
        base_url="http://gonka", api_key="unused", max_retries=0, http_client=flavour.client(pool)
    ) as client:
        with pytest.raises(openai.AuthenticationError, match="invalid signature"):
            client.chat.completions.create(**CHAT)
    assert cooldowns(pool) == [0, 0] and local.healthy.seen == []


@needs_openai
def test_async_openai_sdk_fails_over_through_the_transport(flavour, local, make_local_pool):
    import openai

    pool = make_local_pool(local.unavailable, local.closed_url, local.healthy)

    async def main():
        async with openai.AsyncOpenAI(
            base_url="http://gonka", api_key="unused", max_retries=0, http_client=flavour.async_client(pool)
        ) as client:
            reply = await client.chat.completions.create(**CHAT)
            stream = await client.chat.completions.create(**CHAT, stream=True)
            words = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
            return reply.choices[0].message.content, words

    assert asyncio.run(main()) == ("hello from healthy", "hello from healthy")
    assert cooldowns(pool) == [120, 30, 0]


# -- the request path: policies, origin, redirects, cookies, caps, deadline ------------


def _round_robin_from(pool, first: int) -> None:
    """Take picks until the next one is node ``first``."""
    for _ in range(len(pool)):
        if pool.next_indexed()[0] == (first - 1) % len(pool):
            return
    raise AssertionError("no round robin")


def test_the_transport_follows_the_pools_backoff_and_resets_it_on_success(flavour, local, make_local_pool):
    flaky = LocalNode("flaky", "unavailable", retry_after="").start()  # no usable Retry-After
    try:
        pool = make_local_pool(flaky, local.healthy, base_cooldown=1.0, max_cooldown=8.0)
        with flavour.client(pool) as client:
            for outage, expected in enumerate([1, 2, 4, 8]):
                pool._set_clock(T0 + outage * 100 * S)
                _round_robin_from(pool, 0)
                assert client.post("http://gonka/chat/completions", json=CHAT).status_code == 200
                state = pool.snapshot()[0]
                assert (state.cooldown_remaining, state.consecutive_failures) == (expected, outage + 1)
            flaky.behaviour = "ok"
            pool._set_clock(T0 + 1000 * S)
            _round_robin_from(pool, 0)
            response = client.post("http://gonka/chat/completions", json=CHAT)
        assert response.extensions["gonka_endpoint"] == pool[0]
        assert pool.snapshot()[0].consecutive_failures == 0
        assert pool.snapshot()[0].total_failures == 4
    finally:
        flaky.stop()


def test_an_answer_that_is_the_callers_is_neither_a_success_nor_a_failure_of_its_node(flavour, local, make_local_pool):
    # A 401 is returned, cools nothing (one bad key must not cool the pool), and
    # says nothing of the node: not its speed (a node answering errors at once
    # would look the fastest and draw every request), not its health.
    pool = make_local_pool(local.unauthorized, local.healthy)
    pool.mark_failed(0, 0.5)
    pool._set_clock(T0 + S)
    _round_robin_from(pool, 0)
    assert pool.snapshot()[0].consecutive_failures == 1

    async def main():
        async with flavour.async_client(pool) as client:
            return await client.post("http://gonka/chat/completions", json=CHAT)

    assert asyncio.run(main()).status_code == 401
    state = pool.snapshot()[0]
    assert (state.consecutive_failures, state.in_flight) == (1, 0)
    assert local.healthy.seen == []  # the 401 was returned without failing over


def test_a_node_that_answers_401_at_once_takes_no_more_than_its_share(flavour, local, make_local_pool):
    # The answering node takes 20 ms more (on_request runs inside the attempt);
    # were each 401 a success, the 401 node would look 20x faster and take nearly
    # every request (it did: 38-39 of 40).
    pool = make_local_pool(local.unauthorized, local.healthy, balance="peak_ewma")
    pool._set_clock(None)  # the real clock: the latencies are the test

    def slow_node_1(request, endpoint):
        if endpoint == pool[1]:
            time.sleep(0.02)

    statuses: Counter[int] = Counter()
    with flavour.client(pool, on_request=slow_node_1) as client:
        for _ in range(40):
            statuses[client.post("http://gonka/chat/completions", json=CHAT).status_code] += 1
    assert statuses[401] <= 24, statuses  # half, and a few while each node was new


def test_attempts_follow_the_pool_through_update(flavour, local, make_local_pool):
    pool = make_local_pool(endpoint(local.unavailable, "a"))
    with flavour.client(pool) as client:
        pool.update([endpoint(local.unavailable, "a"), endpoint(local.rate_limited, "b"), endpoint(local.healthy)])
        statuses = [client.post("http://gonka/chat/completions", json=CHAT).status_code for _ in range(6)]
    assert statuses == [200] * 6


def test_timeout_cooldown_gives_stalls_longer_than_the_backoff(flavour, local, make_local_pool):
    pool = make_local_pool(local.stall, local.healthy)
    with flavour.client(pool, timeout=STALL_TIMEOUT, timeout_cooldown=90) as client:
        assert client.post("http://gonka/chat/completions", json=CHAT).status_code == 200
    assert cooldowns(pool) == [90, 0]


@pytest.mark.parametrize("asked", ["99999999999", "9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_node_can_ask_for_at_most_max_retry_after(flavour, local, make_local_pool, asked):
    hostile = LocalNode("hostile", "unavailable", retry_after=asked).start()
    try:
        pool = make_local_pool(hostile, local.healthy)
        with flavour.client(pool) as client:
            assert client.post("http://gonka/chat/completions", json=CHAT).status_code == 200
        assert cooldowns(pool) == [300, 0]
        pool.update(list(pool))  # kept, and still bounded
        assert pool.snapshot()[0].cooldown_remaining == 300
        pool = make_local_pool(hostile, local.healthy)
        with flavour.client(pool, max_retry_after=10, cooldown=2) as client:
            client.post("http://gonka/chat/completions", json=CHAT)
        assert cooldowns(pool) == [10, 0]
    finally:
        hostile.stop()


@pytest.mark.parametrize(
    "url",
    [
        "http://other-service/billing",
        "https://api.openai.com/v1/models",
        "http://169.254.169.254/latest/meta-data/",
        "https://gonka/chat/completions",  # the origin's host, another scheme
        "http://gonka:8080/chat/completions",  # ...another port
    ],
)
def test_a_request_for_another_origin_is_refused_before_anything_is_sent(flavour, local, make_local_pool, url):
    pool = make_local_pool(local.healthy)
    with flavour.client(pool) as client:
        with pytest.raises(flavour.adapter.RoutingError, match="routes only requests to http://gonka") as refused:
            client.get(url, headers={"Authorization": "Bearer OTHER-TOKEN"})
    assert "OTHER-TOKEN" not in str(refused.value)
    assert local.healthy.seen == [] and pool._state()[1] == 0


def test_a_transport_with_its_own_origin_routes_that_origin_only(flavour, local, make_local_pool):
    pool = make_local_pool(local.healthy)
    transport = flavour.adapter.PoolTransport(pool, origin="https://pool.internal:8443")
    with flavour.http.Client(transport=transport, trust_env=False) as client:
        assert client.post("https://pool.internal:8443/chat/completions", json=CHAT).status_code == 200
        with pytest.raises(flavour.adapter.RoutingError):
            client.post("http://gonka/chat/completions", json=CHAT)
    assert [s.path for s in local.healthy.seen] == ["/v1/chat/completions"]


def test_a_mounted_transport_leaves_other_hosts_to_the_client(flavour, local, make_local_pool):
    other = LocalNode("other-service").start()
    try:
        pool = make_local_pool(local.healthy)
        mounts = {"http://gonka": flavour.adapter.PoolTransport(pool)}
        with flavour.http.Client(mounts=mounts, trust_env=False) as client:
            assert client.post("http://gonka/chat/completions", json=CHAT).status_code == 200
            client.get(f"http://127.0.0.1:{other.port}/billing", headers={"Authorization": "Bearer OTHER-TOKEN"})
        assert [s.path for s in other.seen] == ["/billing"]
        assert "authorization" not in local.healthy.seen[0].headers
    finally:
        other.stop()


def test_a_client_base_url_with_the_nodes_path_is_refused_with_a_fix(flavour, local, make_local_pool):
    pool = make_local_pool(local.healthy)
    with flavour.client(pool) as client:
        with pytest.raises(flavour.adapter.RoutingError, match="base URL 'http://gonka'"):
            client.post("http://gonka/v1/chat/completions", json=CHAT)
    assert local.healthy.seen == []


def test_the_transport_of_the_other_library_names_the_module_to_import(flavour, pool_impl):
    other_name = "httpx" if flavour.name == "httpx2" else "httpx2"
    if not HAVE[other_name]:
        pytest.skip(f"{other_name} is not installed")
    other = importlib.import_module(other_name)
    pool = pool_impl.EndpointPool([GonkaEndpoint("http://127.0.0.1:9/v1", "a")])
    wrong = importlib.import_module(f"gonka_pool.{other_name}").PoolTransport(pool)
    with flavour.http.Client(transport=wrong, trust_env=False) as client:
        with pytest.raises(TypeError, match=f"gonka_pool.{flavour.name}.PoolTransport"):
            client.get("http://gonka/models")
    with pytest.raises(TypeError, match=f"gonka_pool.{other_name}.PoolTransport"):
        flavour.adapter.PoolTransport(pool, transport=other.HTTPTransport())
    with pytest.raises(TypeError, match="AsyncBaseTransport"):
        flavour.adapter.AsyncPoolTransport(pool, transport=flavour.http.HTTPTransport())


def test_cookies_set_by_one_node_never_reach_another(flavour, local, make_local_pool):
    jar = [("Set-Cookie", f"c{i}={'x' * 4000}; Path=/") for i in range(20)]
    baker = LocalNode("baker", headers=jar).start()
    try:
        pool = make_local_pool(baker, local.healthy)
        with flavour.client(pool) as client:
            statuses = [client.post("http://gonka/chat/completions", json=CHAT).status_code for _ in range(4)]
            assert not client.cookies
        assert statuses == [200] * 4
        assert all("cookie" not in seen.headers for seen in baker.seen + local.healthy.seen)
        assert len(local.healthy.seen) == 2
    finally:
        baker.stop()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_redirect_within_the_node_is_followed_through_the_pool(flavour, local, make_local_pool, asynchronous):
    mover = LocalNode("mover", "redirect", location="/v1/target").start()
    try:
        pool = make_local_pool(mover, local.healthy)
        if asynchronous:

            async def main():
                client = flavour.http.AsyncClient(
                    transport=flavour.adapter.AsyncPoolTransport(pool), trust_env=False, follow_redirects=True
                )
                async with client:
                    return await client.post("http://gonka/chat/completions", json=CHAT)

            response = asyncio.run(main())
        else:
            transport = flavour.adapter.PoolTransport(pool)
            with flavour.http.Client(transport=transport, trust_env=False, follow_redirects=True) as client:
                response = client.post("http://gonka/chat/completions", json=CHAT)
        assert [(s.method, s.path) for s in local.healthy.seen] == [("POST", "/v1/target")]
        assert response.history[0].headers["location"] == "http://gonka/target"
        assert str(response.url) == "http://gonka/target"
    finally:
        mover.stop()


def test_a_redirect_elsewhere_is_left_alone_and_following_it_is_refused(flavour, local, make_local_pool):
    bystander = LocalNode("bystander").start()
    mover = LocalNode("mover", "redirect", location=f"http://127.0.0.1:{bystander.port}/steal").start()
    try:
        pool = make_local_pool(mover, local.healthy)
        signed = []
        transport = flavour.adapter.PoolTransport(pool, on_request=lambda request, node: signed.append(node))
        with flavour.http.Client(transport=transport, trust_env=False) as client:
            response = client.post("http://gonka/chat/completions", json=CHAT)
            assert response.headers["location"] == f"http://127.0.0.1:{bystander.port}/steal"
        _round_robin_from(pool, 0)
        with flavour.http.Client(transport=transport, trust_env=False, follow_redirects=True) as client:
            with pytest.raises(flavour.adapter.RoutingError):
                client.post("http://gonka/chat/completions", json=CHAT, headers={"Authorization": "Bearer SECRET"})
        assert bystander.seen == [] and local.healthy.seen == []
        assert signed == [pool[0], pool[0]]
    finally:
        mover.stop()
        bystander.stop()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_the_deadline_bounds_the_whole_request(flavour, local, make_local_pool, asynchronous):
    stalled = [endpoint(local.stall, f"s{i}") for i in range(3)]
    pool = make_local_pool(*stalled)
    started = time.monotonic()
    if asynchronous:

        async def main():
            async with flavour.async_client(pool, timeout=5.0, deadline=0.5) as client:
                await client.post("http://gonka/chat/completions", json=CHAT)

        with pytest.raises(flavour.http.TimeoutException):
            asyncio.run(main())
    else:
        with flavour.client(pool, timeout=5.0, deadline=0.5) as client:
            with pytest.raises(flavour.http.TimeoutException):
                client.post("http://gonka/chat/completions", json=CHAT)
    elapsed = time.monotonic() - started
    # The first attempt's read timeout was cut from 5 s to the 0.5 s left; no
    # attempt started after the deadline.
    assert elapsed < 2.0
    assert len(local.stall.seen) == 1


def test_one_warning_per_failure_with_its_reason(flavour, local, make_local_pool, caplog):
    pool = make_local_pool(local.unavailable, local.healthy)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="gonka_pool"), flavour.client(pool) as client:
        client.post("http://gonka/chat/completions", json=CHAT)
    (record,) = [r for r in caplog.records if r.name == "gonka_pool"]
    assert record.levelno == logging.WARNING
    assert (record.gonka_reason, record.gonka_cooldown, record.gonka_failures) == ("HTTP 503", 120, 1)
    assert record.gonka_endpoint == pool[0]


# -- gonka_pool.openai ------------------------------------------------------------


@needs_openai
def test_openai_client_is_built_the_right_way(local, make_local_pool, monkeypatch):
    from gonka_pool.openai import client

    monkeypatch.setenv("OPENAI_API_KEY", "sk-REAL-KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    pool = make_local_pool(local.unavailable, local.healthy)
    with client(pool) as openai_client:
        assert openai_client.max_retries == 0
        reply = openai_client.chat.completions.create(**CHAT)
    assert reply.choices[0].message.content == "hello from healthy"
    assert "REAL-KEY" not in local.healthy.seen[0].headers["authorization"]
    assert cooldowns(pool) == [120, 0]
    with pytest.raises(TypeError, match="origin="):
        client(pool, base_url="http://gonka/v1")


@needs_openai
@pytest.mark.thread_unsafe(reason="sets the SDK's environment variables")
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_nothing_from_the_environment_reaches_a_node(local, make_local_pool, monkeypatch, asynchronous):
    from gonka_pool.openai import async_client, client

    secrets = {
        "OPENAI_API_KEY": "sk-SECRET-1",
        "OPENAI_ORG_ID": "org-SECRET-2",
        "OPENAI_PROJECT_ID": "proj-SECRET-3",
        "OPENAI_ADMIN_KEY": "sk-admin-SECRET-4",
        "OPENAI_CUSTOM_HEADERS": "Authorization: Bearer sk-SECRET-5\nX-Team: SECRET-6",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    pool = make_local_pool(local.healthy)

    async def send_async():
        async with async_client(pool) as sdk:
            await sdk.chat.completions.create(**CHAT)
            await sdk.with_options(timeout=5.0).chat.completions.create(**CHAT)
            await sdk.with_options(default_headers={"X-Mine": "1"}).chat.completions.create(**CHAT)

    if asynchronous:
        asyncio.run(send_async())
    else:
        with client(pool) as sdk:
            sdk.chat.completions.create(**CHAT)
            # with_options() builds a new client, which reads the environment again
            sdk.with_options(timeout=5.0).chat.completions.create(**CHAT)
            sdk.with_options(default_headers={"X-Mine": "1"}).chat.completions.create(**CHAT)
    assert len(local.healthy.seen) == 3
    for request in local.healthy.seen:
        sent = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
        assert "SECRET" not in sent, sent
        assert request.headers["authorization"] == "Bearer gonka-pool"
    assert local.healthy.seen[2].headers["x-mine"] == "1"
    # what the caller passes is sent
    with client(pool, organization="org-mine", default_headers={"X-Team": "mine"}) as sdk:
        sdk.with_options(timeout=5.0).chat.completions.create(**CHAT)
    assert local.healthy.seen[3].headers["openai-organization"] == "org-mine"
    assert local.healthy.seen[3].headers["x-team"] == "mine"


@needs_openai
def test_openai_client_sends_one_request_per_attempt_against_stalled_nodes(local, make_local_pool):
    import openai

    from gonka_pool.openai import client

    pool = make_local_pool(*[endpoint(local.stall, f"s{i}") for i in range(3)])
    started = time.monotonic()
    with client(pool, timeout=STALL_TIMEOUT) as openai_client:
        with pytest.raises(openai.APITimeoutError):
            openai_client.chat.completions.create(**CHAT)
    assert len(local.stall.seen) == 3  # openai's own 2 retries would make it 9
    assert time.monotonic() - started < 3 * STALL_TIMEOUT + 1.5


@needs_openai
def test_openai_follows_a_trailing_slash_redirect_to_the_same_path(local, make_local_pool):
    from gonka_pool.openai import async_client, client

    mover = LocalNode("mover", "redirect", location="/v1/models/", redirect_status=308).start()
    try:
        pool = make_local_pool(mover, local.healthy)
        with client(pool) as openai_client:
            models = openai_client.models.list()
        assert [m.id for m in models.data] == ["local"]
        assert [s.path for s in local.healthy.seen] == ["/v1/models/"]

        async def main():
            pool = make_local_pool(mover, local.healthy)
            async with async_client(pool) as openai_client:
                return await openai_client.models.list()

        assert [m.id for m in asyncio.run(main()).data] == ["local"]
        assert [s.path for s in local.healthy.seen] == ["/v1/models/"] * 2
    finally:
        mover.stop()


# -- attempts that follow the cost of failure ---------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_request_reaches_the_healthy_node_past_three_bad_neighbours(flavour, local, make_local_pool, asynchronous):
    pool = make_local_pool(local.closed_url, local.unavailable, local.stall, local.healthy)
    if asynchronous:

        async def main():
            async with flavour.async_client(pool, timeout=STALL_TIMEOUT) as client:
                return await client.post("http://gonka/chat/completions", json=CHAT)

        response = asyncio.run(main())
    else:
        with flavour.client(pool, timeout=STALL_TIMEOUT) as client:
            response = client.post("http://gonka/chat/completions", json=CHAT)
    assert content_of(response) == "hello from healthy"
    assert cooldowns(pool) == [30, 120, 30, 0]


def test_an_explicit_attempts_still_caps_the_request(flavour, local, make_local_pool):
    pool = make_local_pool(local.closed_url, local.unavailable, local.stall, local.healthy)
    with flavour.client(pool, timeout=STALL_TIMEOUT, attempts=3) as client:
        with pytest.raises(flavour.http.TimeoutException):
            client.post("http://gonka/chat/completions", json=CHAT)
    assert local.healthy.seen == []


def test_with_every_node_stalled_a_request_ends_after_three_timeouts(flavour, local, make_local_pool):
    pool = make_local_pool(*[endpoint(local.stall, f"s{i}") for i in range(5)])
    started = time.monotonic()
    with flavour.client(pool, timeout=STALL_TIMEOUT) as client:
        with pytest.raises(flavour.http.TimeoutException):
            client.post("http://gonka/chat/completions", json=CHAT)
    assert len(local.stall.seen) == 3
    assert time.monotonic() - started < 3 * STALL_TIMEOUT + 1.0


def test_a_weighted_pool_tries_each_node_once_per_request(flavour, local, pool_impl):
    pool = pool_impl.EndpointPool(
        [
            endpoint(local.unavailable, "heavy"),
            endpoint(local.rate_limited, "b"),
            endpoint(local.closed_url),
            endpoint(local.healthy),
        ],
        weights=[6, 1, 1, 1],
        **in_order(pool_impl),
    )
    pool._set_clock(T0)
    for i in range(4):  # all cooling, the heavy node first to recover
        pool.mark_failed(i, 1 + i)
    with flavour.client(pool) as client:
        response = client.post("http://gonka/chat/completions", json=CHAT)
    assert content_of(response) == "hello from healthy"
    assert len(local.unavailable.seen) == 1 and len(local.rate_limited.seen) == 1
