"""pool.call / pool.acall with the common HTTP clients, against real local servers.

By default a node's fault is an OSError or one of the transport errors of httpx,
httpx2 and aiohttp that are no OSError (httpx's ``ConnectError``, ``ReadTimeout``,
``RemoteProtocolError``...; aiohttp's ``ServerDisconnectedError``,
``ClientPayloadError``), recognised by module and class name without importing
those libraries.  What the caller got wrong (a URL scheme httpx does not speak, an
illegal header, an invalid URL, its own connection pool full) is raised at once and
cools no node.  Nodes: a ``LocalNode`` answering 200, one that stalls, one that
hangs up mid-body, a server that closes every connection unanswered, and a closed
port.  Each test runs on the C core and the twin, with every library installed.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import socket
import subprocess
import sys
import textwrap
import threading
from types import ModuleType

import pytest

from gonka_pool import GonkaEndpoint
from gonka_pool._client_errors import client_fault
from gonka_pool.testing import LocalNode, free_port

pytestmark = pytest.mark.thread_unsafe(reason="the local servers of the module are shared by its tests")

SYNC_LIBRARIES = [name for name in ("httpx", "httpx2") if importlib.util.find_spec(name) is not None]
HAVE_AIOHTTP = importlib.util.find_spec("aiohttp") is not None
needs_aiohttp = pytest.mark.skipif(not HAVE_AIOHTTP, reason="aiohttp is not installed")
TIMEOUT = 0.3  # the client timeout the stalling node overruns
CHAT = {"model": "local", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def _read_request(connection: socket.socket) -> None:
    """Read a whole request (headers and a Content-Length body): closing a socket
    with bytes still unread sends a reset, which the client reports as a ReadError
    instead of the unanswered close this server stands for."""
    connection.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            return
        body += chunk


class HangUpServer:
    """Accepts each connection, reads the request and closes it unanswered: httpx's
    RemoteProtocolError, aiohttp's ServerDisconnectedError (no OSError)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/v1"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:  # closed by stop()
                return
            with connection:
                _read_request(connection)

    def stop(self) -> None:
        try:  # wakes the thread blocked in accept(), which close() alone does not
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def servers():
    nodes = {
        "ok": LocalNode("ok"),
        "stall": LocalNode("stall", "stall", stall_seconds=TIMEOUT + 5),
        "broken": LocalNode("broken", "broken-stream"),
    }
    for node in nodes.values():
        node.start()
    hang_up = HangUpServer()
    urls = {name: node.url for name, node in nodes.items()}
    urls["hang-up"] = hang_up.url
    urls["closed"] = f"http://127.0.0.1:{free_port()}/v1"
    yield urls
    hang_up.stop()
    for node in nodes.values():
        node.stop()


def pool_of(pool_impl, servers, *names):
    """A pool of the named servers, tried in that order."""
    return pool_impl.EndpointPool([GonkaEndpoint(servers[name], f"gonka1{i}") for i, name in enumerate(names)], start=0)


def cooling(pool):
    return [state.cooldown_remaining for state in pool.snapshot()]


def post_with(http: ModuleType, url: str = "", **request):
    """fn(endpoint): POST the chat to the endpoint (or to ``url``), body read; the status."""

    def post(endpoint):
        with http.Client(timeout=TIMEOUT, trust_env=False) as client:
            response = client.post(url or f"{endpoint.base_url}/chat/completions", json=CHAT, **request)
            response.read()
            return response.status_code

    return post


@pytest.fixture(params=SYNC_LIBRARIES)
def http(request) -> ModuleType:
    return importlib.import_module(request.param)


# -- httpx and httpx2: the node's faults -------------------------------------------


@pytest.mark.parametrize("bad", ["closed", "hang-up", "broken"])
def test_a_refused_or_broken_connection_through_httpx_fails_over_and_cools_the_node(pool_impl, servers, http, bad):
    # closed: ConnectError; hang-up: RemoteProtocolError before the status line;
    # broken: RemoteProtocolError mid-body.  None is an OSError.
    pool = pool_of(pool_impl, servers, bad, "ok")
    assert pool.call(post_with(http), cooldown=30) == 200
    remaining = cooling(pool)
    assert 25 < remaining[0] < 31 and remaining[1] == 0
    assert pool.snapshot()[0].total_failures == 1


def test_a_read_timeout_through_httpx_is_cooled_as_a_timeout(pool_impl, servers, http):
    pool = pool_of(pool_impl, servers, "stall", "ok")
    assert pool.call(post_with(http), cooldown=5, timeout_cooldown=60) == 200
    assert cooling(pool)[0] > 50  # timeout_cooldown, not cooldown


def test_retry_on_transport_error_keeps_an_httpx_timeout_a_timeout(pool_impl, servers, http):
    # What the README advised before these errors were recognised.
    pool = pool_of(pool_impl, servers, "stall", "ok")
    assert pool.call(post_with(http), retry_on=http.TransportError, cooldown=5, timeout_cooldown=60) == 200
    assert cooling(pool)[0] > 50


def test_the_last_httpx_error_is_raised_when_every_node_failed(pool_impl, servers, http):
    pool = pool_of(pool_impl, servers, "closed", "hang-up")
    with pytest.raises(http.RemoteProtocolError):
        pool.call(post_with(http), cooldown=30)
    assert all(remaining > 25 for remaining in cooling(pool))


# -- httpx and httpx2: the caller's bugs -------------------------------------------


@pytest.mark.parametrize(
    ("mistake", "request_options", "error"),
    [
        ("a URL scheme httpx does not speak", {"url": "ftp://127.0.0.1/v1"}, "UnsupportedProtocol"),
        ("a URL without a scheme", {"url": "127.0.0.1/v1/chat/completions"}, "UnsupportedProtocol"),
        ("an invalid port", {"url": "http://127.0.0.1:abc/v1"}, "InvalidURL"),
        ("an illegal header value", {"headers": {"x-note": "a\nb"}}, "LocalProtocolError"),
        ("a bad argument", {"files": 42}, "TypeError"),
    ],
)
def test_a_callers_mistake_through_httpx_raises_at_once_and_cools_nothing(
    pool_impl, servers, http, mistake, request_options, error
):
    pool = pool_of(pool_impl, servers, "ok", "ok")
    request_options = dict(request_options)  # the parameter is shared by the runs
    url = request_options.pop("url", "")
    tried = []

    def post(endpoint):
        tried.append(endpoint)
        return post_with(http, url, **request_options)(endpoint)

    with pytest.raises(Exception) as raised:
        pool.call(post, cooldown=30)
    assert type(raised.value).__name__ == error, mistake
    assert len(tried) == 1
    assert cooling(pool) == [0, 0]
    assert [state.total_failures for state in pool.snapshot()] == [0, 0]


def test_a_full_httpx_connection_pool_is_the_callers_unless_retry_on_names_it(pool_impl, servers, http):
    # PoolTimeout: no node was contacted (every connection of the client's own
    # pool was busy); failing over would meet the same full pool.
    pool = pool_of(pool_impl, servers, "ok", "ok")
    calls = []

    def full(endpoint):
        calls.append(endpoint)
        if len(calls) == 1:
            raise http.PoolTimeout("no connection available")
        return "answered"

    with pytest.raises(http.PoolTimeout):
        pool.call(full, cooldown=30)
    assert cooling(pool) == [0, 0]
    calls.clear()
    assert pool.call(full, cooldown=30, retry_on=http.PoolTimeout) == "answered"
    first, second = sorted(cooling(pool))
    assert first == 0 and second > 25  # the node tried first this time


def test_an_httpx_error_subclassed_by_the_caller_is_judged_by_its_base(http):
    class WrappedConnectError(http.ConnectError):
        pass

    class WrappedUnsupported(http.UnsupportedProtocol):
        pass

    assert client_fault(WrappedConnectError("refused")) == "error"
    assert client_fault(WrappedUnsupported("ftp")) == "caller"
    assert client_fault(http.ConnectTimeout("slow")) == "timeout"
    assert client_fault(http.InvalidURL("bad")) is None  # no TransportError: raised as any other


# -- httpx's AsyncClient through pool.acall -------------------------------------------


@pytest.mark.parametrize("bad", ["closed", "hang-up", "stall"])
def test_acall_with_an_httpx_async_client_fails_over_a_bad_node(pool_impl, servers, http, bad):
    pool = pool_of(pool_impl, servers, bad, "ok")

    async def post(endpoint):
        async with http.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
            response = await client.post(f"{endpoint.base_url}/chat/completions", json=CHAT)
            await response.aread()
            return response.status_code

    assert asyncio.run(pool.acall(post, cooldown=5, timeout_cooldown=60)) == 200
    remaining = cooling(pool)[0]
    assert (remaining > 50) if bad == "stall" else (0 < remaining < 6)


# -- aiohttp ---------------------------------------------------------------------


def aiohttp_post(url: str = ""):
    import aiohttp

    async def post(endpoint):
        timeout = aiohttp.ClientTimeout(sock_read=TIMEOUT, sock_connect=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url or f"{endpoint.base_url}/chat/completions", json=CHAT) as response:
                await response.read()
                return response.status

    return post


@needs_aiohttp
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ("closed", "ClientConnectorError"),  # an OSError too
        ("hang-up", "ServerDisconnectedError"),  # no OSError
        ("broken", "ClientPayloadError"),  # no OSError
    ],
)
def test_acall_with_aiohttp_fails_over_a_refused_or_broken_node(pool_impl, servers, bad, error):
    pool = pool_of(pool_impl, servers, bad, "ok")
    assert asyncio.run(pool.acall(aiohttp_post(), cooldown=30)) == 200
    assert 25 < cooling(pool)[0] < 31
    # and the error is the one named, when it is the last
    lone = pool_of(pool_impl, servers, bad)
    with pytest.raises(Exception) as raised:
        asyncio.run(lone.acall(aiohttp_post(), cooldown=30))
    assert type(raised.value).__name__ == error


@needs_aiohttp
def test_an_aiohttp_read_timeout_is_cooled_as_a_timeout(pool_impl, servers):
    # SocketTimeoutError < ServerTimeoutError < (ClientConnectionError, asyncio.TimeoutError)
    pool = pool_of(pool_impl, servers, "stall", "ok")
    assert asyncio.run(pool.acall(aiohttp_post(), cooldown=5, timeout_cooldown=60)) == 200
    assert cooling(pool)[0] > 50


@needs_aiohttp
@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://127.0.0.1/v1", "NonHttpUrlClientError"),
        ("127.0.0.1/v1", "InvalidUrlClientError"),
        ("http://127.0.0.1:99999/v1", "InvalidUrlClientError"),
    ],
)
def test_an_invalid_url_through_aiohttp_raises_at_once_and_cools_nothing(pool_impl, servers, url, error):
    pool = pool_of(pool_impl, servers, "ok", "ok")
    with pytest.raises(Exception) as raised:
        asyncio.run(pool.acall(aiohttp_post(url), cooldown=30))
    assert type(raised.value).__name__ == error
    assert cooling(pool) == [0, 0]


# -- recognised by name ----------------------------------------------------------


def same_named(module: str, name: str, *bases: type) -> type:
    return type(name, bases or (Exception,), {"__module__": module, "__qualname__": name})


def test_aiohttp_errors_are_recognised_by_module_and_name_without_aiohttp():
    # aiohttp's own hierarchy, rebuilt: what the table reads is the module's
    # top-level package and the class's qualified name, nothing else.
    client_error = same_named("aiohttp.client_exceptions", "ClientError")
    connection_error = same_named("aiohttp.client_exceptions", "ClientConnectionError", client_error)
    server_connection = same_named("aiohttp.client_exceptions", "ServerConnectionError", connection_error)
    disconnected = same_named("aiohttp.client_exceptions", "ServerDisconnectedError", server_connection)
    server_timeout = same_named(
        "aiohttp.client_exceptions", "ServerTimeoutError", server_connection, asyncio.TimeoutError
    )
    invalid_url = same_named("aiohttp.client_exceptions", "InvalidURL", client_error, ValueError)
    assert client_fault(disconnected()) == "error"
    assert client_fault(server_timeout()) == "timeout"
    assert client_fault(invalid_url()) is None
    assert client_fault(client_error()) is None  # a response error (4xx raised) is the answer
    # The same names elsewhere are not the clients'.
    assert client_fault(same_named("myapp.errors", "ClientConnectionError")()) is None
    assert client_fault(same_named("httpx_helpers", "TransportError")()) is None
    assert client_fault(same_named("httpx._exceptions", "TransportError")()) == "error"
    # 3.10's asyncio.TimeoutError (aiohttp's total= timeout), no builtins.TimeoutError there
    assert client_fault(same_named("asyncio.exceptions", "TimeoutError")()) == "timeout"


def test_pool_call_judges_a_same_named_error_as_the_library_would(pool_impl):
    disconnected = same_named("aiohttp.client_exceptions", "ClientConnectionError")
    pool = pool_impl.EndpointPool([GonkaEndpoint(f"https://n{i}.example", f"gonka1n{i}") for i in range(2)], start=0)
    calls = []

    def fn(endpoint):
        calls.append(endpoint)
        if len(calls) == 1:
            raise disconnected("server disconnected")
        return "answered"

    assert pool.call(fn, cooldown=30) == "answered"
    assert cooling(pool)[0] > 25


def test_judging_an_error_imports_no_http_library():
    script = textwrap.dedent(
        """
        import sys
        from gonka_pool import EndpointPool, GonkaEndpoint
        pool = EndpointPool([GonkaEndpoint("https://a.example", "gonka1a")])
        def fail(endpoint):
            raise KeyError("a bug")
        try:
            pool.call(fail)
        except KeyError:
            pass
        print(sorted(m for m in ("httpx", "httpx2", "aiohttp") if m in sys.modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
