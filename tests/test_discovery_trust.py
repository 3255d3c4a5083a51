"""Issue 21, items 1 and 2: a discovery source is a third party.  It may not steer
signed requests to this machine or a private network, and whatever it sends, or
however slowly, discovery, refreshers and the process's exit stay bounded.

Hostile sources are servers on 127.0.0.1 made to look public: names ending in
``.gonka.example`` resolve to 127.0.0.1 in-process (``public_names``), so the
bytes go over real sockets while discovery believes it talks to a public host.
Each test is bounded in time; a source that would hang the old code stops on its
own after a few seconds, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

gonka = pytest.importorskip("gonka_pool.gonka", reason="the [gonka] extra is not installed")
import gonka_pool  # noqa: E402
from gonka_pool import GonkaEndpoint  # noqa: E402
from gonka_pool.gonka import DiscoveryError, discover  # noqa: E402
from gonka_pool.testing import LocalNode  # noqa: E402

pytestmark = pytest.mark.thread_unsafe(reason="patches the process's name resolution and GONKA_ALLOW_PRIVATE")

HAVE_HTTPX2 = all(importlib.util.find_spec(m) is not None for m in ("httpx2", "openai"))
needs_httpx2 = pytest.mark.skipif(not HAVE_HTTPX2, reason="httpx2 / openai not installed")
CHAT = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
PUBLIC = "https://node.gonka.example"  # a participant that stays


@pytest.fixture
def public_names(monkeypatch) -> None:
    """Names ending in .gonka.example resolve to 127.0.0.1; private addresses are
    not allowed by the environment."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.endswith(".gonka.example"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.delenv("GONKA_ALLOW_PRIVATE", raising=False)


class _ThreadingTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a handler still stalling does not hold up the exit


class Source:
    """A discovery source on 127.0.0.1: ``answer(request_line, wfile)`` writes the
    raw response for each connection, in a thread of its own."""

    def __init__(self, answer: Callable[[str, socket.socket], None]) -> None:
        self.requests: list[str] = []
        source = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(10)
                head = b""
                while b"\r\n\r\n" not in head:
                    data = self.request.recv(4096)
                    if not data:
                        return
                    head += data
                line = head.split(b"\r\n", 1)[0].decode()
                source.requests.append(line)
                try:
                    answer(line, self.request)
                except OSError:  # the client gave up: what a deadline does
                    pass

        self.server = _ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, host: str = "chain.gonka.example") -> str:
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def make_source() -> Iterator[Callable[..., Source]]:
    sources: list[Source] = []

    def make(answer: Callable[[str, socket.socket], None]) -> Source:
        sources.append(Source(answer))
        return sources[-1]

    yield make
    for source in sources:
        source.close()


def send_json(sock: socket.socket, payload: object, status: str = "200 OK") -> None:
    body = json.dumps(payload).encode()
    sock.sendall(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )


def listing(*urls: str, weights: tuple[object, ...] = ()) -> Callable[[str, socket.socket], None]:
    """A source that lists one participant per URL (weight 1 unless given)."""
    entries = [
        {"index": f"gonka1p{i}", "inference_url": url, "weight": weights[i] if i < len(weights) else 1}
        for i, url in enumerate(urls)
    ]

    def answer(line: str, sock: socket.socket) -> None:
        if "/participants" in line:
            send_json(sock, {"active_participants": {"participants": entries}})
        else:
            send_json(sock, {"params": {}})

    return answer


def dripping(seconds: float, every: float = 0.2) -> Callable[[str, socket.socket], None]:
    """A source that answers a byte every ``every`` seconds, for ``seconds`` in all
    (then stops, so that code without a total deadline ends, late, instead of hanging)."""

    def answer(line: str, sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sock.sendall(b" ")
            time.sleep(every)

    return answer


# -- 1. the private-address filter -------------------------------------------------------


def test_participant_hosts_are_checked_as_the_client_connects_to_them(public_names, make_source, caplog):
    hidden = [
        "http://127\u30020\u30020\u30021:6379",  # ideographic full stops: httpx reads 127.0.0.1
        "http://127\uff0e0\uff0e0\uff0e1:6379",  # fullwidth full stops
        "http://\uff11\uff12\uff17.0.0.1:6379",  # fullwidth digits (UTS 46)
        "http://[::127.0.0.1]:6379",  # IPv4-compatible
        "http://[::ffff:0:7f00:1]:6379",  # IPv4-translated
        "http://[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
        "http://[2002:7f00:1::]:6379",  # 6to4 of 127.0.0.1
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo, client 127.0.0.1
    ]
    source = make_source(listing(*hidden, PUBLIC))
    with caplog.at_level(logging.WARNING, logger="gonka_pool"):
        found = discover(source.url(), allowlist=False)
    assert [p.endpoint.base_url for p in found] == [PUBLIC + "/v1"]
    skipped = [r.getMessage() for r in caplog.records if "skipped participant" in r.getMessage()]
    assert len(skipped) == len(hidden) and all("private network" in m for m in skipped)


def test_a_non_ascii_host_is_kept_as_the_ascii_host_the_client_connects_to(public_names, make_source):
    source = make_source(listing("https://n\u00f6de.gonka.example", "http://8\u30028\u30028\u30028:8000"))
    found = discover(source.url(), allowlist=False)
    assert [p.endpoint.base_url for p in found] == ["https://xn--nde-sna.gonka.example/v1", "http://8.8.8.8:8000/v1"]


@pytest.mark.parametrize(
    "host",
    ["::127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "::ffff:0:a00:1", "64:ff9b:1::8.8.8.8", "224.0.0.1"],
)
def test_every_ipv4_inside_an_ipv6_address_is_read(host):
    assert gonka._addresses.internal_host(host)


@pytest.mark.parametrize("host", ["64:ff9b::808:808", "2002:808:808::", "::ffff:8.8.8.8", "2606:4700::1111"])
def test_public_ipv4_inside_an_ipv6_address_stays_public(host):
    assert not gonka._addresses.internal_host(host)


def test_where_the_source_runs_does_not_turn_the_filter_off(public_names, make_source, monkeypatch):
    # A source on this machine (a user's own node that syncs the public chain).
    source = make_source(listing("http://169.254.169.254", "http://127.0.0.1:6379", PUBLIC))
    local_source = source.url("127.0.0.1")
    assert [p.endpoint.base_url for p in discover(local_source, allowlist=False)] == [PUBLIC + "/v1"]
    # The user's choice, by keyword or by environment variable, and only that.
    assert len(discover(local_source, allowlist=False, allow_private=True)) == 3
    monkeypatch.setenv("GONKA_ALLOW_PRIVATE", "1")
    assert len(discover(source.url(), allowlist=False)) == 3
    assert len(discover(local_source, allowlist=False, allow_private=False)) == 1
    monkeypatch.setenv("GONKA_ALLOW_PRIVATE", "maybe")
    with pytest.raises(ValueError, match="GONKA_ALLOW_PRIVATE must be 1 or 0"):
        discover(local_source)


@needs_httpx2
def test_a_node_whose_name_resolves_to_this_machine_is_refused_when_connecting(pool_impl, public_names):
    import httpx2

    with LocalNode("n0") as node:
        disguised = GonkaEndpoint(f"http://loopback.gonka.example:{urlsplit(node.url).port}/v1", "gonka1n0")
        pool = pool_impl.EndpointPool([disguised])

        def post(**options):
            transport = gonka.GonkaPoolTransport(pool, **options)
            with httpx2.Client(transport=transport, trust_env=False, timeout=5.0) as client:
                return client.post("http://gonka/chat/completions", json=CHAT)

        async def apost(**options):
            transport = gonka.AsyncGonkaPoolTransport(pool, **options)
            async with httpx2.AsyncClient(transport=transport, trust_env=False, timeout=5.0) as client:
                return await client.post("http://gonka/chat/completions", json=CHAT)

        with pytest.raises(httpx2.ConnectError, match=r"resolves to 127\.0\.0\.1"):
            post()
        pool.mark_success(disguised)
        with pytest.raises(httpx2.ConnectError, match=r"resolves to 127\.0\.0\.1"):
            asyncio.run(apost())
        # An inner transport given without a proxy is checked too.
        pool.mark_success(disguised)
        with pytest.raises(httpx2.ConnectError, match=r"resolves to 127\.0\.0\.1"):
            post(transport=httpx2.HTTPTransport())
        assert node.seen == []
        # The user's explicit choice.
        pool.mark_success(disguised)
        assert post(allow_private=True).status_code == 200
        assert asyncio.run(apost(allow_private=True)).status_code == 200
        assert len(node.seen) == 2


@needs_httpx2
def test_a_discovered_node_whose_name_resolves_to_this_machine_gets_no_signed_request(public_names, make_source):
    import openai

    with LocalNode("n0") as node:
        port = urlsplit(node.url).port
        source = make_source(listing(f"http://loopback.gonka.example:{port}"))
        client = gonka.openai_client("0x" + "11" * 32, source_url=source.url(), refresh_interval=None)
        with client, pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(**CHAT)
        assert node.seen == []


# -- 2. a slow, redirecting or oversized source --------------------------------------------


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_source_that_drips_its_answer_is_cut_at_the_discovery_timeout(public_names, make_source, phase):
    def drip_headers(line: str, sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        end = time.monotonic() + 4.0
        while time.monotonic() < end:
            sock.sendall(b"a")
            time.sleep(0.2)

    source = make_source(drip_headers if phase == "headers" else dripping(4.0))
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match="did not answer in time"):
        discover(source.url(), timeout=1.0)
    assert time.monotonic() - started < 2.0


def test_a_source_that_never_finishes_the_tls_handshake_is_cut_at_the_discovery_timeout(public_names, make_source):
    source = make_source(lambda line, sock: None)  # reads the ClientHello, answers nothing
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match="did not answer in time"):
        discover(f"https://chain.gonka.example:{source.port}", timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_discovery_follows_no_redirect(public_names, make_source):
    internal = make_source(listing(PUBLIC))  # what a redirect would reach: a private service

    def redirect(line: str, sock: socket.socket) -> None:
        location = f"http://127.0.0.1:{internal.port}/latest/meta-data"
        sock.sendall(f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode())

    source = make_source(redirect)
    with pytest.raises(DiscoveryError, match="HTTP 302, a redirect"):
        discover(source.url())
    assert internal.requests == []


def test_one_unreadable_entry_is_skipped_and_counted_never_aborting_the_rest(public_names, make_source, caplog):
    source = make_source(listing("https://a.gonka.example", "https://b.gonka.example", weights=("\u00b2", "7")))
    with caplog.at_level(logging.WARNING, logger="gonka_pool"):
        found = discover(source.url(), allowlist=False)
    assert [(p.endpoint.address, p.weight) for p in found] == [("gonka1p1", 7)]
    assert ["weight" in r.getMessage() for r in caplog.records] == [True]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak resident memory from /proc")
def test_a_huge_document_is_refused_before_it_is_built_in_memory(make_source):
    body = b'{"active_participants": {"participants": [' + b",".join([b"{}"] * 5_000_000) + b"]}}"
    assert len(body) > 14 * 2**20  # under MAX_RESPONSE_BYTES: the count of values refuses it

    def huge(line: str, sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    source = make_source(huge)
    # A fresh interpreter, so that its peak resident memory is discovery's alone;
    # VmHWM, not ru_maxrss, which keeps the forking parent's peak across exec.
    script = f"""
import re
from gonka_pool.gonka import DiscoveryError, discover
def peak_kib():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s*(\\d+) kB", status.read())[1])
before = peak_kib()
try:
    discover("http://127.0.0.1:{source.port}", timeout=30.0)
except DiscoveryError as exc:
    print(exc)
print(peak_kib() - before)
"""
    out = run_python(script, timeout=30.0).splitlines()
    # 374 MiB before (3.11); now the body, its text, then at most MAX_JSON_VALUES
    # small values: 37 MiB on 3.11, 44 MiB on 3.13t here.
    assert int(out[1]) < 64 * 1024, f"peak grew by {int(out[1]) // 1024} MiB"
    assert "more than" in out[0] and "JSON values" in out[0]


def test_closing_a_refresher_returns_within_its_bound_and_updates_nothing_after(pool_impl, public_names, make_source):
    source = make_source(dripping(6.0))
    pool = pool_impl.EndpointPool([GonkaEndpoint(PUBLIC, "gonka1p0")])
    refresher = gonka.Refresher(pool, source.url(), interval=0.05, timeout=1.5)
    deadline = time.monotonic() + 5.0
    while not source.requests:  # a refresh is under way, reading the drip
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    refresher.close()
    assert time.monotonic() - started < 1.5 + gonka.CLOSE_SLACK
    assert not refresher.running
    assert list(pool) == [GonkaEndpoint(PUBLIC, "gonka1p0")] and refresher.refreshes == 0


def test_a_closed_refresher_never_updates_the_pool_even_from_a_discovery_under_way(
    pool_impl, public_names, make_source
):
    release = threading.Event()

    def late(line: str, sock: socket.socket) -> None:
        release.wait(5.0)
        listing("https://late.gonka.example")(line, sock)

    source = make_source(late)
    pool = pool_impl.EndpointPool([GonkaEndpoint(PUBLIC, "gonka1p0")])
    refresher = gonka.Refresher(pool, source.url(), interval=0.05, timeout=5.0, allowlist=False)
    deadline = time.monotonic() + 5.0
    while not source.requests:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    refresher.close(timeout=0)  # returns at once, the discovery still under way
    release.set()
    refresher._thread.join(5.0)
    assert list(pool) == [GonkaEndpoint(PUBLIC, "gonka1p0")] and refresher.refreshes == 0


def test_an_async_refresher_and_asyncio_run_exit_at_once_whatever_the_source_does(pool_impl, public_names, make_source):
    source = make_source(dripping(6.0))
    pool = pool_impl.EndpointPool([GonkaEndpoint(PUBLIC, "gonka1p0")])

    async def main() -> None:
        async with gonka.AsyncRefresher(pool, source.url(), interval=0.05, timeout=5.0):
            for _ in range(500):
                if source.requests:
                    return
                await asyncio.sleep(0.01)

    started = time.monotonic()
    asyncio.run(main())
    assert source.requests and time.monotonic() - started < 1.5
    assert list(pool) == [GonkaEndpoint(PUBLIC, "gonka1p0")]


def run_python(script: str, timeout: float) -> str:
    """``script``'s output, run by this interpreter with this checkout's package."""
    env = {**os.environ, "PYTHONPATH": str(Path(gonka_pool.__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_interpreter_exit_waits_at_most_exit_wait_for_a_refresher(make_source):
    source = make_source(dripping(10.0))
    script = f"""
import time
from gonka_pool import EndpointPool, GonkaEndpoint
from gonka_pool.gonka import Refresher
pool = EndpointPool([GonkaEndpoint("https://node.example", "gonka1p0")])
refresher = Refresher(pool, "http://127.0.0.1:{source.port}", interval=0.05, timeout=30.0)
time.sleep(0.5)  # a refresh is under way, reading the drip
print("exiting", flush=True)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(gonka_pool.__file__).resolve().parent.parent)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "exiting\n"
        started = time.monotonic()
        assert process.wait(timeout=9.0) == 0
        assert source.requests and time.monotonic() - started < gonka.EXIT_WAIT + 1.0
    finally:
        process.kill()
        process.communicate()
