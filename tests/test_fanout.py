"""A request's fan-out is bounded by default (issue 21, defect 8).

With ``attempts=None`` a request used to go on while failures were fast: over a
source listing many participants on one host that answers 400 "AuthKey has
already been used" (never marked, by design), each request sent one signed POST
of its prompt per participant.  Now ``attempts=None`` tries at most
``DEFAULT_MAX_ATTEMPTS`` (8) nodes, hence at most 8 hosts; ``attempts=N`` raises
that; and the Gonka one-call clients give every request a deadline unless told
otherwise.  The network test runs a real server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gonka_pool import GonkaEndpoint

KEY = "0x" + "11" * 32
MANY = 30
DEFAULT_MAX_ATTEMPTS = 8  # as the docs state it


def nodes_on_one_host(url: str, count: int = MANY) -> list[GonkaEndpoint]:
    return [GonkaEndpoint(url, f"gonka1participant{i}") for i in range(count)]


def test_the_default_bound_is_the_one_the_docs_state():
    from gonka_pool import _failover

    assert _failover.DEFAULT_MAX_ATTEMPTS == DEFAULT_MAX_ATTEMPTS


def test_a_call_tries_at_most_eight_nodes_by_default_however_fast_they_fail(pool_impl):
    pool = pool_impl.EndpointPool(nodes_on_one_host("https://one-host.example/v1"), start=0)
    tried: list[GonkaEndpoint] = []

    def refused(endpoint: GonkaEndpoint) -> None:
        tried.append(endpoint)
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        pool.call(refused)
    assert len(tried) == DEFAULT_MAX_ATTEMPTS == len(set(tried))


def test_an_async_call_tries_at_most_eight_nodes_by_default(pool_impl):
    pool = pool_impl.EndpointPool(nodes_on_one_host("https://one-host.example/v1"), start=0)
    tried: list[GonkaEndpoint] = []

    async def refused(endpoint: GonkaEndpoint) -> None:
        tried.append(endpoint)
        raise ConnectionResetError("reset")

    with pytest.raises(ConnectionResetError):
        asyncio.run(pool.acall(refused))
    assert len(tried) == DEFAULT_MAX_ATTEMPTS


@pytest.mark.parametrize("attempts", [DEFAULT_MAX_ATTEMPTS + 1, MANY, 10 * MANY])
def test_attempts_raise_the_bound_up_to_every_node_once(pool_impl, attempts):
    pool = pool_impl.EndpointPool(nodes_on_one_host("https://one-host.example/v1"), start=0)
    tried: list[GonkaEndpoint] = []

    def refused(endpoint: GonkaEndpoint) -> None:
        tried.append(endpoint)
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        pool.call(refused, attempts=attempts)
    assert len(tried) == min(attempts, MANY) == len(set(tried))


def test_a_pool_smaller_than_the_bound_still_tries_every_node(pool_impl):
    pool = pool_impl.EndpointPool(nodes_on_one_host("https://one-host.example/v1", 5), start=0)
    tried: list[GonkaEndpoint] = []

    def refused(endpoint: GonkaEndpoint) -> None:
        tried.append(endpoint)
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        pool.call(refused)
    assert len(set(tried)) == len(tried) == 5


# -- the report's case: many participants on one host, each answer a 400 that marks nothing --


class _ReusedSignatureHost(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReusedSignatureHandler)
        self.posts = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _ReusedSignatureHandler(BaseHTTPRequestHandler):
    server: _ReusedSignatureHost

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.posts += 1
        body = json.dumps({"message": "AuthKey has already been used for a transfer request"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def one_host() -> Iterator[_ReusedSignatureHost]:
    server = _ReusedSignatureHost()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.thread_unsafe(reason="counts every POST its one server receives")
@pytest.mark.parametrize("builder", ["openai_client", "async_openai_client"])
def test_a_request_over_many_participants_on_one_host_sends_at_most_eight_signed_posts(one_host, builder):
    gonka = pytest.importorskip("gonka_pool.gonka", reason="the [gonka] extra is not installed")
    openai = pytest.importorskip("openai", reason="the [openai] extra is not installed")
    client = getattr(gonka, builder)(KEY, endpoints=nodes_on_one_host(one_host.url), pool_options={"start": 0})
    messages = [{"role": "user", "content": "a prompt that should reach few hosts"}]

    def ask() -> None:
        with client:
            client.chat.completions.create(model="local", messages=messages)

    with pytest.raises(openai.BadRequestError, match="AuthKey has already been used"):
        if builder == "openai_client":
            ask()
        else:
            asyncio.run(_ask_async(client, messages))
    assert one_host.posts == DEFAULT_MAX_ATTEMPTS
    assert len(client.gonka_pool) == MANY


# -- the one-call clients' default deadline -------------------------------------------


@pytest.mark.thread_unsafe(reason="fresh openai clients in several threads at once may fail (docs/api.md)")
@pytest.mark.parametrize(
    ("options", "longest_wait"),
    [
        ({}, 300.0),  # the default deadline
        ({"deadline": 30.0}, 30.0),
        ({"deadline": 900.0}, 600.0),  # raised: the SDK's own 600 s timeout is the bound again
        ({"deadline": None}, 600.0),  # asked for none
    ],
)
def test_the_one_call_clients_give_each_request_a_deadline_unless_told_otherwise(options, longest_wait):
    gonka = pytest.importorskip("gonka_pool.gonka", reason="the [gonka] extra is not installed")
    pytest.importorskip("openai", reason="the [openai] extra is not installed")
    httpx2 = pytest.importorskip("httpx2")
    waits: list[float] = []

    def answer(request: Any) -> Any:
        waits.append(max(value for value in request.extensions["timeout"].values() if value is not None))
        return httpx2.Response(200, json=_completion())

    for builder in ("openai_client", "async_openai_client"):
        waits.clear()
        client = getattr(gonka, builder)(
            KEY, endpoints="http://node.example/v1;gonka1a", transport=httpx2.MockTransport(answer), **options
        )
        messages = [{"role": "user", "content": "hi"}]
        if builder == "openai_client":
            with client:
                client.chat.completions.create(model="local", messages=messages)
        else:
            asyncio.run(_ask_async(client, messages))
        # The time left when the attempt started: a little under the deadline.
        assert waits and longest_wait - 5.0 < waits[0] <= longest_wait, (builder, waits)


async def _ask_async(client: Any, messages: list[dict[str, str]]) -> None:
    async with client:
        await client.chat.completions.create(model="local", messages=messages)


def _completion() -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "local",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    }
