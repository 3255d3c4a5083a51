"""Secrets that must not ride along with an error (issue 21, defects 6 and 7).

A token in a URL's query or fragment (``?api_key=sk-...``, ``#access_token=...``)
reaches no error message, repr or log record, whichever public call refuses the
URL.  And no exception raised while a ``Signer`` is built holds the private key:
not in its text, not in the locals of any frame of its traceback (error reporters
such as Sentry record those by default), not in any exception chained to it as
cause or context, recursively.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

gonka = pytest.importorskip("gonka_pool.gonka", reason="the [gonka] extra is not installed")
from gonka_pool import GonkaEndpoint  # noqa: E402
from gonka_pool.gonka import Refresher, Signer, _signing, discover, pool_from_gonka, refresh  # noqa: E402
from test_secrets import chain, texts_of  # noqa: E402

pytestmark = pytest.mark.thread_unsafe(
    reason="sets GONKA_ENDPOINTS / GONKA_PRIVATE_KEY and patches the signing module; caplog sees every thread"
)

# -- defect 6: a URL's query and fragment ----------------------------------------------

# The token in two halves: a message quoting either half quotes part of it.
HALVES = ("Zq9vK", "Xw7pL")
TOKEN = "sk-" + "".join(HALVES)
SECRET_URLS = [
    f"https://node.example/v1?api_key={TOKEN}",
    f"https://node.example/v1#access_token={TOKEN}",
    f"https://node.example/v1?a=1&key={TOKEN}#frag",
    f"https://node.example?{TOKEN}",
    f"http://node.example:8080/v1/?token={TOKEN};more",
    f"https://node.example/v1?key={TOKEN}@x",  # an '@' in the query
    f"https://node .example/v1?key={TOKEN}",  # wrong before the query too
    f"ftp://node.example/v1?key={TOKEN}",  # a scheme refused before the query is looked at
    f"https://node.example/v1?key={TOKEN} more",
]


def url_calls(url: str, pool_impl: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[[], object]]:
    """Each public call that takes a URL from the user, refusing this one."""
    pool = pool_impl.EndpointPool([GonkaEndpoint("https://node1.example", "gonka1a")])

    def from_env() -> object:
        monkeypatch.setenv("GONKA_ENDPOINTS", f"https://node0.example;gonka1z,{url};gonka1a")
        return pool_impl.EndpointPool.from_env()

    calls: dict[str, Callable[[], object]] = {
        "GonkaEndpoint": lambda: GonkaEndpoint(url, "gonka1a"),
        "GonkaEndpoint.parse": lambda: GonkaEndpoint.parse(f"{url};gonka1a"),
        "EndpointPool.from_env": from_env,
        "discover": lambda: discover(url),
        "pool_from_gonka": lambda: pool_from_gonka(url, pool_class=pool_impl.EndpointPool),
        "refresh": lambda: refresh(pool, url),
        "Refresher": lambda: Refresher(pool, url),
    }
    try:
        import gonka_pool.httpx2 as httpx2_transports
        from gonka_pool.openai import client
    except ImportError:  # pragma: no cover - the [openai] extra is not installed
        return calls
    calls["httpx2.PoolTransport(origin=)"] = lambda: httpx2_transports.PoolTransport(pool, origin=url)
    calls["openai.client(origin=)"] = lambda: client(pool, origin=url)
    calls["gonka.openai_client(source_url=)"] = lambda: gonka.openai_client("0x" + "11" * 32, source_url=url)
    calls["gonka.openai_client(endpoints=)"] = lambda: gonka.openai_client("0x" + "11" * 32, endpoints=f"{url};gonka1a")
    return calls


@pytest.mark.parametrize("url", SECRET_URLS)
def test_no_error_or_log_record_quotes_a_token_in_a_urls_query_or_fragment(url, pool_impl, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    for name, call in url_calls(url, pool_impl, monkeypatch).items():
        caplog.clear()
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        texts = [*texts_of(info.value), caplog.text]
        leaked = [text for text in texts for half in HALVES if half in text]
        assert not leaked, (name, url, leaked)


def test_a_refused_url_still_shows_which_url_it_was_up_to_its_query():
    with pytest.raises(ValueError) as info:
        GonkaEndpoint.parse(f"https://node.example/v1?api_key={TOKEN};gonka1a")
    assert "'https://node.example/v1?***'" in str(info.value)


# -- defect 7: the key in traceback frames and chained exceptions ---------------------

# A valid key (below the group order) whose every 8-digit window is recognisable.
KEY_HEX = "".join(f"c0ffee{i:02x}" for i in range(1, 9))
KEY_BYTES = bytes.fromhex(KEY_HEX)


def key_material(key_hex: str) -> tuple[list[str], list[bytes], int | None]:
    """What of ``key_hex`` (a key as a test passes it) a leak would show: 8-digit
    windows of its text (as hex, HEX and in a bytes repr), their bytes, its value."""
    windows = [key_hex[i : i + 8] for i in range(0, len(key_hex) - 7, 8) if key_hex[i : i + 8] != "0" * 8]
    texts, raw = [], []
    for window in windows:
        texts += [window.lower(), window.upper()]
        try:
            chunk = bytes.fromhex(window)
        except ValueError:
            continue
        raw.append(chunk)
        texts.append(repr(chunk)[2:-1])
    try:
        value = int(key_hex, 16)
    except ValueError:
        value = None
    if value is not None:
        texts.append(str(value)[:20])
    return texts, raw, value


def shows_key(value: object, material: tuple[list[str], list[bytes], int | None]) -> bool:
    texts, raw, number = material
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return any(chunk in data for chunk in raw) or any(text.encode() in data for text in texts)
    if isinstance(value, int) and not isinstance(value, bool) and number is not None and value == number:
        return True
    try:
        shown = value if isinstance(value, str) else repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails shows nothing
        return False
    return any(text in shown for text in texts)


def leaks(exc: BaseException, key_hex: str, skip_file: str | None = __file__) -> list[str]:
    """Where ``exc`` shows the key: its texts, or a local of a frame of any chained
    exception's traceback (but frames of ``skip_file``: this module's own, which
    hold the key as any caller does)."""
    material = key_material(key_hex)
    found = [f"text {text!r}" for text in texts_of(exc) if shows_key(text, material)]
    for error in chain(exc):
        tb = error.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_filename != skip_file:
                for name, value in dict(frame.f_locals).items():
                    if shows_key(value, material):
                        found.append(f"{type(error).__name__}: {frame.f_code.co_name} local {name}")
            tb = tb.tb_next
    return found


def _refusing_ecdsa() -> Any:
    """An ``ecdsa`` whose key constructor refuses the key, its frame holding it."""

    class SigningKey:
        @staticmethod
        def from_string(string: bytes, **options: object) -> None:
            raise ValueError("this build cannot use the key")

    return types.SimpleNamespace(
        SigningKey=SigningKey, SECP256k1=None, util=types.SimpleNamespace(sigencode_string_canonize=None)
    )


def _no_ripemd160(data: bytes) -> bytes:
    raise RuntimeError("no RIPEMD-160 here")


# (key as passed, its hex for the search, Signer keywords, patches of _signing)
BAD_KEYS = {
    "one non-hex character": (KEY_HEX[:-1] + "z", KEY_HEX[:-1] + "z"),
    "one non-hex character, 0x": ("0x" + KEY_HEX[:-1] + "g", KEY_HEX[:-1] + "g"),
    "63 digits": (KEY_HEX[:-1], KEY_HEX[:-1]),
    "65 digits": (KEY_HEX + "1", KEY_HEX + "1"),
    "beyond the group order": ("ff" * 16 + KEY_HEX[32:], "ff" * 16 + KEY_HEX[32:]),
    "31 bytes": (KEY_BYTES[:31], KEY_HEX[:62]),
    "33 bytes": (KEY_BYTES + b"\x01", KEY_HEX + "01"),
    "an int": (int(KEY_HEX, 16), KEY_HEX),
}
GOOD_KEY_FORMS = {"hex": KEY_HEX, "0x hex": "0x" + KEY_HEX, "bytes": KEY_BYTES, "bytearray": bytearray(KEY_BYTES)}
BAD_ARGUMENTS: dict[str, tuple[dict[str, Any], dict[str, Callable[..., Any]]]] = {
    "a backend name with a space": ({"backend": "ecdsa "}, {}),
    "an unknown backend": ({"backend": "openssl"}, {}),
    "a backend that is not installed": ({"backend": "ecdsa"}, {"_load_ecdsa": lambda: None}),
    "no backend installed": ({}, {"_load_ecdsa": lambda: None, "_load_coincurve": lambda: None}),
    "a backend that refuses the key": ({"backend": "ecdsa"}, {"_load_ecdsa": _refusing_ecdsa}),
    "a requester address of another chain": ({"requester_address": "cosmos1xyz"}, {}),
    "a clock offset that is not an int": ({"clock_offset_ns": 1.5}, {}),
    "no RIPEMD-160 to derive the address": ({}, {"_ripemd160": _no_ripemd160}),
}


def signer_error_paths() -> Iterator[Any]:
    for name, (key, key_hex) in BAD_KEYS.items():
        yield pytest.param(key, key_hex, {}, {}, id=f"key: {name}")
    for form, key in GOOD_KEY_FORMS.items():
        for name, (options, patches) in BAD_ARGUMENTS.items():
            yield pytest.param(key, KEY_HEX, options, patches, id=f"{form} key, {name}")


@pytest.mark.parametrize(("key", "key_hex", "options", "patches"), list(signer_error_paths()))
def test_no_error_building_a_signer_holds_the_key_in_a_frame_or_a_chained_exception(
    key, key_hex, options, patches, monkeypatch
):
    for name, replacement in patches.items():
        monkeypatch.setattr(_signing, name, replacement)
    with pytest.raises(Exception) as info:  # each path raises its own kind
        Signer(key, **options)
    assert not leaks(info.value, key_hex), leaks(info.value, key_hex)


def test_the_leak_check_finds_a_key_left_in_a_frame():
    # The check itself, on what the old Signer did: raise while the key is a local.
    def parse(private_key: str) -> None:
        secret = bytes.fromhex(private_key[:-1] + "0")
        raise ValueError(f"refused {len(secret)} bytes")

    with pytest.raises(ValueError) as info:
        parse(KEY_HEX[:-1] + "z")
    found = leaks(info.value, KEY_HEX[:-1] + "z", skip_file=None)
    assert [entry.rpartition(" local ")[2] for entry in found] == ["private_key", "secret"]


def one_call_client_error_paths() -> Iterator[Any]:
    bad = KEY_HEX[:-1] + "z"
    yield pytest.param({"private_key": bad}, {}, bad, id="a bad key passed")
    yield pytest.param({}, {"GONKA_PRIVATE_KEY": bad}, bad, id="a bad key in GONKA_PRIVATE_KEY")
    yield pytest.param({"on_request": print}, {"GONKA_PRIVATE_KEY": KEY_HEX}, KEY_HEX, id="a key with on_request")
    yield pytest.param({"private_key": KEY_HEX, "on_request": print}, {}, KEY_HEX, id="a key passed with on_request")
    yield pytest.param({"private_key": KEY_HEX, "endpoints": []}, {}, KEY_HEX, id="a key passed, no endpoints")
    yield pytest.param({"private_key": KEY_HEX, "attempts": 0}, {}, KEY_HEX, id="a key passed, a bad transport keyword")


@pytest.mark.parametrize("builder", ["openai_client", "async_openai_client"])
@pytest.mark.parametrize(("kwargs", "environ", "key_hex"), list(one_call_client_error_paths()))
def test_no_error_of_the_one_call_clients_holds_the_key_in_a_frame(builder, kwargs, environ, key_hex, monkeypatch):
    pytest.importorskip("openai", reason="the [openai] extra is not installed")
    for name in ("GONKA_PRIVATE_KEY", "GONKA_ADDRESS", "GONKA_SOURCE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GONKA_ENDPOINTS", "http://node.example/v1;gonka1a")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(Exception) as info:  # each path raises its own kind
        getattr(gonka, builder)(**kwargs)
    assert not leaks(info.value, key_hex), leaks(info.value, key_hex)
