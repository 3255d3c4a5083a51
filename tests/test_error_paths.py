"""Error paths and fallbacks a user meets, which the other tests leave unrun.

Found by the coverage report of ``make test-gil``: each test here pins a refusal
(its type and a message that says what is wrong) or a fallback that a user can
reach through the public API.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from datetime import datetime, timezone

import pytest

from gonka_pool import GonkaEndpoint, _clock, _failover
from gonka_pool.testing import LocalNode

# -- pool.call / pool.acall ---------------------------------------------------------


@pytest.mark.parametrize("fn", [None, "https://node0.example", 3])
def test_call_refuses_what_it_cannot_call_and_names_its_type(make_pool, fn):
    pool = make_pool(2)
    with pytest.raises(TypeError, match=f"pool.call needs a callable, not {type(fn).__name__}"):
        pool.call(fn)
    with pytest.raises(TypeError, match=f"pool.acall needs a callable, not {type(fn).__name__}"):
        asyncio.run(pool.acall(fn))
    assert pool.snapshot() == make_pool(2).snapshot()  # nothing was marked


def test_a_discard_that_raises_does_not_stop_the_failover(make_pool):
    # The transports close the response of a node they fail over from; a close()
    # that raises must not cost the request its next node.
    pool = make_pool(2)
    cooldowns = _failover.Cooldowns(30.0, None)
    plan = _failover.failover_plan(
        pool, 2, lambda exc: None, lambda status: cooldowns.for_error("HTTP 503") if status == 503 else None
    )
    discarded = []

    def discard(status):
        discarded.append(status)
        raise OSError("connection already closed")

    answer = _failover.run(plan, lambda idx, endpoint: 503 if idx == 0 else 200, discard)
    assert answer == 200
    assert discarded == [503]
    assert [state.available for state in pool.snapshot()] == [False, True]


def test_an_async_discard_that_raises_does_not_stop_the_failover(make_pool):
    pool = make_pool(2)
    cooldowns = _failover.Cooldowns(30.0, None)
    plan = _failover.failover_plan(
        pool, 2, lambda exc: None, lambda status: cooldowns.for_error("HTTP 503") if status == 503 else None
    )

    async def send(idx, endpoint):
        return 503 if idx == 0 else 200

    async def discard(status):
        raise OSError("connection already closed")

    assert asyncio.run(_failover.arun(plan, send, discard)) == 200
    assert [state.available for state in pool.snapshot()] == [False, True]


@pytest.mark.thread_unsafe(reason="caplog captures the one process-wide gonka_pool logger")
def test_a_failure_passed_over_without_a_cooldown_is_logged_at_debug_only(make_pool, caplog):
    # cooldown=PASS (the Gonka transport's stale-timestamp refusal) fails over
    # without blaming the node; the record says so, at DEBUG only.
    pool = make_pool(2)
    plan = _failover.failover_plan(
        pool,
        2,
        lambda exc: None,
        lambda status: (_failover.PASS, 0.0, "stale timestamp", False) if status == 400 else None,
    )
    with caplog.at_level(logging.DEBUG, logger="gonka_pool"):
        assert _failover.run(plan, lambda idx, endpoint: 400 if idx == 0 else 200) == 200
    assert [state.available for state in pool.snapshot()] == [True, True]
    (record,) = [r for r in caplog.records if "stale timestamp" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "without a cooldown" in record.getMessage()


def test_retry_after_dates_without_a_zone_are_utc():
    # RFC 5322's "-0000" means UTC with no local zone known; parsedate gives a
    # naive datetime for it, which must not be compared as local time.
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=timezone.utc)
    assert _failover.retry_after_seconds("Thu, 01 Jan 2026 00:00:30 -0000", now=now) == 30.0
    assert _failover.retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0


def test_settings_show_in_reprs():
    assert repr(_failover.PASS) == "PASS"
    assert repr(_failover.Cooldowns(1.0, 5.0)) == "cooldown=1.0, timeout_cooldown=5.0"


# -- the transports -------------------------------------------------------------------


@pytest.fixture(params=["httpx2", "httpx"])
def adapter(request):
    pytest.importorskip(request.param, reason=f"{request.param} is not installed")
    return importlib.import_module(f"gonka_pool.{request.param}")


@pytest.mark.parametrize("origin", ["http://pool.internal:99999", "http://pool.internal:port", "http://[zz::1]"])
def test_an_origin_whose_port_or_host_urllib_cannot_read_is_refused(make_pool, adapter, origin):
    with pytest.raises(ValueError, match=r"origin must be scheme://host\[:port\]"):
        adapter.PoolTransport(make_pool(1), origin=origin)


def test_a_transport_shows_its_settings_in_its_repr(make_pool, adapter):
    pool = make_pool(1)
    transport = adapter.AsyncPoolTransport(
        pool, origin="https://pool.internal:8443", attempts=2, cooldown=1.0, deadline=30.0
    )
    assert repr(transport) == (
        f"AsyncPoolTransport({pool!r}, origin='https://pool.internal:8443', attempts=2, "
        "cooldown=1.0, timeout_cooldown=1.0, max_retry_after=300.0, deadline=30.0)"
    )


@pytest.mark.parametrize(
    ("location", "seen_by_the_client"),
    [
        ("/v1?page=2", "http://gonka/?page=2"),  # the base path itself, with a query
        ("/metrics", "/metrics"),  # outside the node's base path: no pool URL for it
        ("http://[::1/v1/x", "http://[::1/v1/x"),  # unparseable: left for the client to refuse
    ],
)
def test_redirect_locations_are_rewritten_only_into_the_pool(make_pool, adapter, location, seen_by_the_client):
    http = importlib.import_module(adapter.__name__.rpartition(".")[2])
    mover = LocalNode("mover", "redirect", location=location).start()
    try:
        pool = make_pool(1)
        pool.update([GonkaEndpoint(mover.url, "gonka1mover")])
        # The transport itself, not a client: httpx refuses an unparseable Location
        # when it builds the redirect, httpx2 does not.
        with adapter.PoolTransport(pool) as transport:
            response = transport.handle_request(http.Request("GET", "http://gonka/models"))
            response.read()
        assert response.status_code == 307
        assert response.headers["location"] == seen_by_the_client
    finally:
        mover.stop()


# -- endpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["[zz::1]", "[1.2.3.4]", "[::1::2]", "[v1.fe80]"])
def test_a_bracketed_host_that_is_no_ipv6_address_is_refused(host):
    # urllib refuses most of these itself (3.11.4+); an IPvFuture literal such as
    # [v1.fe80] passes urllib on every version, and no client can connect to it.
    with pytest.raises(ValueError, match=r"invalid endpoint URL 'https://\[.*\]/v1': "):
        GonkaEndpoint(f"https://{host}/v1", "addr")


def test_a_stripe_copy_is_an_equal_endpoint_that_is_another_object():
    # The C core hands each thread its own copy on free-threaded builds.
    endpoint = GonkaEndpoint("https://node0.example", "addr0")
    copy = endpoint._copy_for_stripe()
    assert copy == endpoint and hash(copy) == hash(endpoint)
    assert copy is not endpoint
    assert (copy.base_url, copy.address) == (endpoint.base_url, endpoint.address)


# -- the clock ----------------------------------------------------------------------


@pytest.mark.thread_unsafe(reason="patches the process-wide time.clock_getres")
def test_the_precise_clock_is_used_where_the_coarse_one_is_unavailable(monkeypatch):
    def no_coarse_clock(clock_id):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(time, "clock_getres", no_coarse_clock)
    name, tick_ns = _clock._pick_clock()
    assert tick_ns == 0
    assert name in ("CLOCK_MONOTONIC", "QueryPerformanceCounter")


@pytest.mark.thread_unsafe(reason="patches the process-wide time.clock_getres")
def test_a_coarse_clock_too_coarse_for_cooldowns_is_not_used(monkeypatch):
    monkeypatch.setattr(time, "clock_getres", lambda clock_id: 1.0)
    assert _clock._pick_clock()[1] == 0


# -- gonka_pool.gonka: the signer and discovery -------------------------------------

KEY = "0x" + "11" * 32
PARTICIPANT = {"index": "gonka1node", "inference_url": "https://node.example", "weight": 1}


@pytest.fixture
def gonka():
    return pytest.importorskip("gonka_pool.gonka", reason="the [gonka] extra is not installed")


@pytest.mark.thread_unsafe(reason="patches the gonka module's backend loader")
def test_a_signer_asked_for_a_backend_that_is_not_installed_says_what_to_install(gonka, monkeypatch):
    monkeypatch.setattr(gonka._signing, "_load_coincurve", lambda: None)
    with pytest.raises(ImportError, match=r"Signer needs coincurve: pip install 'gonka-pool\[gonka\]'"):
        gonka.Signer(KEY, backend="coincurve")
    monkeypatch.setattr(gonka._signing, "_load_ecdsa", lambda: None)
    with pytest.raises(ImportError, match="Signer needs coincurve or ecdsa"):
        gonka.Signer(KEY)


@pytest.mark.parametrize("backend", ["coincurve", "ecdsa"])
def test_neither_backends_key_object_shows_the_key_in_its_repr(gonka, backend):
    # test_gonka checks the default backend's; a user may pick the other one.
    pytest.importorskip(backend, reason=f"{backend} is not installed")
    key_object = gonka.Signer(KEY, backend=backend)._backend
    assert repr(key_object) == f"<{backend} key>"


def test_signer_arguments_of_the_wrong_kind_are_refused(gonka):
    with pytest.raises(ValueError, match="backend must be one of"):
        gonka.Signer(KEY, backend="openssl")
    with pytest.raises(TypeError, match="clock_offset_ns must be an int"):
        gonka.Signer(KEY, clock_offset_ns=1.5)
    signer = gonka.Signer(KEY, backend="ecdsa")
    with pytest.raises(TypeError, match="body must be bytes, not str"):
        signer.sign("{}", 1, "gonka1xyz")
    with pytest.raises(TypeError, match="timestamp_ns must be an int, not bool"):
        signer.sign(b"{}", True, "gonka1xyz")
    with pytest.raises(ValueError, match="transfer_address must be a non-empty str"):
        signer.sign(b"{}", 1, "")


def test_addresses_are_derived_only_from_compressed_public_keys(gonka):
    public_key = gonka.Signer(KEY, backend="ecdsa").public_key
    assert gonka.address_from_public_key(public_key) == gonka.Signer(KEY).address
    for bad in (public_key[1:], b"\x04" + public_key[1:], public_key.hex()):
        with pytest.raises(ValueError, match="33-byte compressed secp256k1 public key"):
            gonka.address_from_public_key(bad)
    with pytest.raises(TypeError, match="requester_address must be a str, not int"):
        gonka.Signer(KEY, requester_address=7)


def test_discovery_refuses_a_source_url_that_is_not_a_str_and_a_timeout_that_is_no_time(gonka):
    with pytest.raises(TypeError, match="source_url must be a str, not bytes"):
        gonka.discover(b"http://x.example")
    for timeout in (0, -1.0, float("inf"), float("nan"), True, "10"):
        with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
            gonka.discover("http://x.example", timeout=timeout)


@pytest.mark.parametrize("signature", ["not base64!", "", "QUJD\n"])
def test_a_signature_that_is_not_base64_does_not_verify(gonka, signature):
    signer = gonka.Signer(KEY, backend="ecdsa")
    good = signer.sign(b"{}", 1, "gonka1xyz")
    assert gonka.verify_signature(signer.public_key, b"{}", 1, "gonka1xyz", good)
    assert not gonka.verify_signature(signer.public_key, b"{}", 1, "gonka1xyz", signature)


def serve(gonka, monkeypatch, participants, params=None):
    """Discovery against canned JSON answers, by path."""

    def get_json(url, timeout):
        if url.endswith("/participants"):
            return participants
        return params

    monkeypatch.setattr(gonka._discovery, "_get_json", get_json)


@pytest.mark.thread_unsafe(reason="patches the gonka module's HTTP getter")
@pytest.mark.parametrize(
    ("participants", "message"),
    [
        ([PARTICIPANT], "did not answer a JSON object"),
        ({"active_participants": {"participants": [PARTICIPANT] * 3}}, "lists 3 participants, more than 2"),
    ],
)
def test_discovery_refuses_participant_lists_of_the_wrong_shape(gonka, monkeypatch, participants, message):
    monkeypatch.setattr(gonka._discovery, "MAX_PARTICIPANTS", 2)
    serve(gonka, monkeypatch, participants)
    with pytest.raises(gonka.DiscoveryError, match=message):
        gonka.discover("http://x.example")


@pytest.mark.thread_unsafe(reason="patches the gonka module's HTTP getter")
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([], "has no params object"),
        ({"params": None}, "has no params object"),
        (
            {"params": {"transfer_agent_access_params": {"allowed_transfer_addresses": "gonka1node"}}},
            "allowed_transfer_addresses is not a list",
        ),
    ],
)
def test_discovery_refuses_an_allowlist_it_cannot_read(gonka, monkeypatch, params, message):
    serve(gonka, monkeypatch, {"active_participants": {"participants": [PARTICIPANT]}}, params)
    with pytest.raises(gonka.DiscoveryError, match=message):
        gonka.discover("http://x.example")
    # allowlist=False never reads it.
    assert [p.endpoint.address for p in gonka.discover("http://x.example", allowlist=False)] == ["gonka1node"]


def test_a_source_that_answers_no_json_is_a_discovery_error(gonka):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Maintenance(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>maintenance</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Maintenance) as server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        try:
            with pytest.raises(gonka.DiscoveryError, match="did not answer JSON"):
                gonka.discover(f"http://127.0.0.1:{server.server_port}", timeout=5.0)
        finally:
            server.shutdown()


def test_one_call_clients_refuse_endpoints_they_cannot_read(gonka):
    with pytest.raises(TypeError, match="endpoints must be GonkaEndpoints"):
        gonka._clients._endpoints_from(5)
    with pytest.raises(TypeError, match="endpoints must be GonkaEndpoints"):
        gonka._clients._endpoints_from({"https://node.example;gonka1node": 1})
    with pytest.raises(ValueError, match="endpoints is empty"):
        gonka._clients._endpoints_from(" , ")
    assert gonka._clients._endpoints_from("https://a.example;gonka1a, https://b.example;gonka1b") == [
        GonkaEndpoint("https://a.example", "gonka1a"),
        GonkaEndpoint("https://b.example", "gonka1b"),
    ]
