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
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from gonka_pool import GonkaEndpoint
from gonka_pool._local_node import LocalNode

pytestmark = pytest.mark.thread_unsafe(
    reason="the local nodes and their request logs are shared by the module's tests")

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
            pool, transport=self.http.HTTPTransport(verify=False), **transport_options)
        return self.http.Client(transport=transport, timeout=timeout, trust_env=False)

    def async_client(self, pool, timeout: float = 5.0, **transport_options: Any):
        transport = self.adapter.AsyncPoolTransport(
            pool, transport=self.http.AsyncHTTPTransport(verify=False), **transport_options)
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
    unavailable: LocalNode   # 503, Retry-After: 120
    rate_limited: LocalNode  # 429, Retry-After: 120
    unauthorized: LocalNode  # 401
    stall: LocalNode
    broken: LocalNode        # 200, then hangs up mid-stream
    closed_url: str          # nothing listens there

    def servers(self) -> list[LocalNode]:
        return [self.healthy, self.unavailable, self.rate_limited, self.unauthorized,
                self.stall, self.broken]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def running_nodes():
    started = Nodes(
        healthy=LocalNode("healthy"),
        unavailable=LocalNode("unavailable", "unavailable", retry_after=120),
        rate_limited=LocalNode("rate-limited", "rate-limited", retry_after=120),
        unauthorized=LocalNode("unauthorized", "unauthorized"),
        stall=LocalNode("stall", "stall", stall_seconds=3.0),
        broken=LocalNode("broken", "broken-stream"),
        closed_url=f"http://127.0.0.1:{_closed_port()}/v1",
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


@pytest.fixture
def make_local_pool(pool_impl):
    """A pool of the given nodes, for either implementation, its clock frozen at T0
    and its next pick the first node."""

    def make(*members: LocalNode | str | GonkaEndpoint):
        pool = pool_impl.EndpointPool(
            m if isinstance(m, GonkaEndpoint) else endpoint(m) for m in members)
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
    # 503 with Retry-After: 120 > 30; refused: 30; stalled: the timeout cooldown.
    assert cooldowns(pool) == [120, 30, 60, 0]
    assert len(local.unavailable.seen) == 1 and len(local.stall.seen) == 1
    assert len(local.healthy.seen) == 5


def test_the_request_is_rewritten_to_the_node(flavour, local, make_local_pool):
    pool = make_local_pool(local.healthy)
    with flavour.client(pool) as client:
        response = client.post("http://gonka/chat/completions?trace=a%20b", json=CHAT,
                               headers={"X-Caller": "kept"})
    (seen,) = local.healthy.seen
    assert response.status_code == 200
    assert seen.path == "/v1/chat/completions?trace=a%20b"  # the node's base path first
    assert seen.headers["host"] == f"127.0.0.1:{local.healthy.port}"
    assert seen.headers["x-caller"] == "kept"
    assert json.loads(seen.body) == CHAT
    assert str(response.request.url) == "http://gonka/chat/completions?trace=a%20b"


def test_async_every_request_succeeds_while_one_healthy_node_remains(
        flavour, local, make_local_pool):
    pool = make_local_pool(local.unavailable, local.closed_url, local.stall, local.healthy)

    async def main():
        async with flavour.async_client(pool, timeout=STALL_TIMEOUT, attempts=4) as client:
            return [await client.post("http://gonka/chat/completions", json=CHAT)
                    for _ in range(3)]

    responses = asyncio.run(main())
    assert [content_of(r) for r in responses] == ["hello from healthy"] * 3
    assert responses[0].extensions["gonka_endpoint"] == pool[3]
    assert cooldowns(pool) == [120, 30, 60, 0]


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
        response = client.get("http://gonka/models", params={"limit": 2})
    assert response.status_code == 404
    assert [s.path for s in local.healthy.seen] == ["/v1/models?limit=2"]
    assert cooldowns(pool) == [0, 0]


def test_a_429_with_retry_after_cools_the_node_at_least_that_long(
        flavour, local, make_local_pool):
    pool = make_local_pool(local.rate_limited, local.healthy)
    with flavour.client(pool) as client:
        assert client.post("http://gonka/chat/completions", json=CHAT).status_code == 200
    assert cooldowns(pool) == [120, 0]
    pool = make_local_pool(local.rate_limited, local.healthy)
    with flavour.client(pool, cooldown=300) as client:  # longer than Retry-After: kept
        client.post("http://gonka/chat/completions", json=CHAT)
    assert cooldowns(pool) == [300, 0]


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
    assert signed == [(pool[0], f"{local.unavailable.url}/chat/completions"),
                      (pool[1], f"{local.healthy.url}/chat/completions")]
    for node, seen in ((local.unavailable, local.unavailable.seen[0]),
                       (local.healthy, local.healthy.seen[0])):
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
    pool = make_local_pool(endpoint(local.unavailable, "a"), endpoint(local.unavailable, "b"),
                           local.healthy)
    with flavour.client(pool, attempts=2) as client:
        response = client.post("http://gonka/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "node is overloaded"
    assert response.extensions["gonka_endpoint"] == pool[1]
    assert cooldowns(pool) == [120, 120, 0]
    assert local.healthy.seen == []


def test_when_attempts_run_out_the_last_transport_error_is_raised(
        flavour, local, make_local_pool):
    pool = make_local_pool(endpoint(local.closed_url, "a"), endpoint(local.closed_url, "b"),
                           local.healthy)
    with flavour.client(pool, attempts=2) as client:
        with pytest.raises(flavour.http.ConnectError):
            client.post("http://gonka/chat/completions", json=CHAT)
    assert cooldowns(pool) == [30, 30, 0]
    assert local.healthy.seen == []


def test_a_stream_fails_over_before_its_first_byte(flavour, local, make_local_pool):
    pool = make_local_pool(local.unavailable, local.healthy)
    with flavour.client(pool) as client:
        with client.stream("POST", "http://gonka/chat/completions",
                           json={**CHAT, "stream": True}) as response:
            body = b"".join(response.iter_bytes())
    assert response.status_code == 200 and body.endswith(b"data: [DONE]\n\n")
    assert b"healthy" in body
    assert cooldowns(pool) == [120, 0]


def test_a_stream_never_fails_over_after_its_first_byte(flavour, local, make_local_pool):
    pool = make_local_pool(local.broken, local.healthy)
    received = []
    with flavour.client(pool) as client:
        with client.stream("POST", "http://gonka/chat/completions",
                           json={**CHAT, "stream": True}) as response:
            with pytest.raises(flavour.http.RemoteProtocolError):
                for chunk in response.iter_bytes():
                    received.append(chunk)
    assert b"".join(received).startswith(b"data: ")  # the first event arrived...
    assert local.healthy.seen == []                  # ...so nothing was resent
    assert cooldowns(pool) == [0, 0]


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
    transport = Transport(pool)
    assert transport.attempts == 1 and transport.pool is pool
    assert isinstance(transport, flavour.http.BaseTransport)
    assert isinstance(flavour.adapter.AsyncPoolTransport(pool), flavour.http.AsyncBaseTransport)
    transport.close()


def test_the_adapters_say_what_to_install_and_the_core_works_without_them():
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(IMPORT_WITHOUT_HTTPX)], capture_output=True,
        text=True, env={**os.environ, "GONKA_POOL_NO_EXTENSIONS": "1"}, check=True,
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
    client = openai.OpenAI(base_url="http://gonka", api_key="unused", max_retries=0,
                           http_client=flavour.client(pool))
    with client:
        reply = client.chat.completions.create(**CHAT)
        stream = client.chat.completions.create(**CHAT, stream=True)
        words = "".join(chunk.choices[0].delta.content or "" for chunk in stream
                        if chunk.choices)
    assert reply.choices[0].message.content == "hello from healthy"
    assert words == "hello from healthy"
    assert cooldowns(pool) == [120, 30, 0]
    assert [s.path for s in local.healthy.seen] == ["/v1/chat/completions"] * 2


@needs_openai
def test_openai_sdk_reports_a_401_without_failing_over(flavour, local, make_local_pool):
    import openai

    pool = make_local_pool(local.unauthorized, local.healthy)
    with openai.OpenAI(base_url="http://gonka", api_key="unused", max_retries=0,
                       http_client=flavour.client(pool)) as client:
        with pytest.raises(openai.AuthenticationError, match="invalid signature"):
            client.chat.completions.create(**CHAT)
    assert cooldowns(pool) == [0, 0] and local.healthy.seen == []


@needs_openai
def test_async_openai_sdk_fails_over_through_the_transport(flavour, local, make_local_pool):
    import openai

    pool = make_local_pool(local.unavailable, local.closed_url, local.healthy)

    async def main():
        async with openai.AsyncOpenAI(base_url="http://gonka", api_key="unused", max_retries=0,
                                      http_client=flavour.async_client(pool)) as client:
            reply = await client.chat.completions.create(**CHAT)
            stream = await client.chat.completions.create(**CHAT, stream=True)
            words = "".join([chunk.choices[0].delta.content or "" async for chunk in stream
                             if chunk.choices])
            return reply.choices[0].message.content, words

    assert asyncio.run(main()) == ("hello from healthy", "hello from healthy")
    assert cooldowns(pool) == [120, 30, 0]
