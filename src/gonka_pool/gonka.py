"""Speak Gonka: sign every attempt for the node it goes to, discover the network's
nodes, and read the network's own refusals.

    from gonka_pool.gonka import openai_client

    # GONKA_PRIVATE_KEY, and GONKA_SOURCE_URL (discovery) or GONKA_ENDPOINTS
    client = openai_client()
    reply = client.chat.completions.create(model=..., messages=[...])

- ``Signer(private_key)`` signs as gonka-openai's ``gonka_signature`` does, byte
  for byte: secp256k1 ECDSA, RFC 6979 deterministic, low-S, base64 of ``r || s``,
  over ``hex(sha256(body)) + str(timestamp_ns) + transfer_address``.  With
  coincurve (libsecp256k1, which releases the GIL) where it is installed, the
  ``ecdsa`` package otherwise.  Called as ``on_request(request, endpoint)`` it sets
  ``Authorization``, ``X-Requester-Address`` and ``X-Timestamp`` for
  ``endpoint.address`` with a fresh, strictly increasing timestamp.
- ``discover(source_url)`` reads ``/v1/epochs/current/participants`` and the
  chain's transfer-agent allowlist; ``pool_from_gonka(source_url)`` builds an
  ``EndpointPool`` weighted by the participants' weights.
- ``GonkaPoolTransport`` / ``AsyncGonkaPoolTransport`` (httpx2) judge the
  network's refusals: 403 "Transfer Agent not allowed" keeps the node out, a 400
  for a reused signature or a timestamp outside the window fails over to a
  freshly signed attempt without marking the node, 429 fails over as usual.
- ``Refresher`` / ``AsyncRefresher`` re-discover every few minutes and
  ``pool.update()`` the membership.
- ``openai_client()`` / ``async_openai_client()`` put it all together, reading
  gonka-openai's environment variables.

Install with ``pip install 'gonka-pool[gonka]'``.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import ipaddress
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

try:
    import bech32 as _bech32
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "gonka_pool.gonka needs bech32 and ecdsa (or coincurve): pip install 'gonka-pool[gonka]'"
    ) from exc

from ._endpoint import GonkaEndpoint, redact
from ._failover import PASS, Verdict

__all__ = [
    "ADDRESS_PREFIX",
    "AsyncRefresher",
    "DiscoveryError",
    "Participant",
    "Refresher",
    "Signer",
    "discover",
    "openai_client",
    "async_openai_client",
    "pool_from_gonka",
    "pool_weights",
    "refresh",
    "verify_signature",
]

log = logging.getLogger("gonka_pool")

# The bech32 prefix of the network's account addresses (gonka-openai derives it
# from the chain id "gonka-...").
ADDRESS_PREFIX = "gonka"
# secp256k1's group order; a private key is an integer in [1, N).
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _N // 2

ENV_PRIVATE_KEY = "GONKA_PRIVATE_KEY"
ENV_ADDRESS = "GONKA_ADDRESS"
ENV_ENDPOINTS = "GONKA_ENDPOINTS"
ENV_SOURCE_URL = "GONKA_SOURCE_URL"


# -- signing ------------------------------------------------------------------------


def _load_coincurve() -> Any:
    try:
        import coincurve
    except ImportError:
        return None
    return coincurve


def _load_ecdsa() -> Any:
    try:
        import ecdsa
        import ecdsa.util
    except ImportError:
        return None
    return ecdsa


BACKENDS = ("coincurve", "ecdsa")


def _ripemd160(data: bytes) -> bytes:
    """RIPEMD-160 from hashlib (OpenSSL), else pycryptodome's; OpenSSL 3 builds
    without the legacy provider may lack it."""
    try:
        return hashlib.new("ripemd160", data).digest()
    except ValueError:
        pass
    try:
        from Crypto.Hash import RIPEMD160  # pycryptodome
    except ImportError:
        raise RuntimeError(
            "this Python's hashlib has no RIPEMD-160 (OpenSSL 3 without the legacy "
            "provider), needed to derive the requester address: pass "
            "requester_address= (or set GONKA_ADDRESS), or pip install pycryptodome"
        ) from None
    return RIPEMD160.new(data).digest()


def address_from_public_key(public_key: bytes, prefix: str = ADDRESS_PREFIX) -> str:
    """The account address of a compressed secp256k1 public key: bech32 with
    ``prefix`` of ``ripemd160(sha256(public_key))``, as Cosmos SDK chains derive it."""
    if not isinstance(public_key, bytes) or len(public_key) != 33 or public_key[0] not in (2, 3):
        raise ValueError("public_key must be a 33-byte compressed secp256k1 public key")
    words = _bech32.convertbits(_ripemd160(hashlib.sha256(public_key).digest()), 8, 5)
    assert words is not None  # only unpadded conversions fail
    return _bech32.bech32_encode(prefix, words)


def _check_address(address: object, name: str) -> str:
    if not isinstance(address, str):
        raise TypeError(f"{name} must be a str, not {type(address).__name__}")
    prefix, words = _bech32.bech32_decode(address)
    if prefix != ADDRESS_PREFIX or words is None:
        raise ValueError(f"{name} must be a bech32 {ADDRESS_PREFIX}1... address, got {redact(address)!r}")
    return address


def _private_key_bytes(private_key: object) -> bytes:
    """32 bytes from hex (with or without 0x) or bytes; errors never echo the key."""
    if isinstance(private_key, (bytes, bytearray, memoryview)):
        secret = bytes(private_key)
    elif isinstance(private_key, str):
        text = private_key.strip()
        if text[:2] in ("0x", "0X"):
            text = text[2:]
        if len(text) != 64:
            raise ValueError(
                f"private_key must be 64 hex digits (32 bytes), with or without 0x; got {len(text)} characters"
            )
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            raise ValueError(
                "private_key must be 64 hex digits (32 bytes), with or without 0x; it has a character that is not hex"
            ) from None
    else:
        raise TypeError(f"private_key must be a hex str or 32 bytes, not {type(private_key).__name__}")
    if len(secret) != 32:
        raise ValueError(f"private_key must be 32 bytes, got {len(secret)}")
    if not 0 < int.from_bytes(secret, "big") < _N:
        raise ValueError("private_key is not a valid secp256k1 key (0 or not below the group order)")
    return secret


class _CoincurveBackend:
    """libsecp256k1 through coincurve's cffi bindings: cffi drops the GIL around
    each C call, so threads sign in parallel."""

    __slots__ = ("_key",)
    name = "coincurve"

    def __init__(self, module: Any, secret: bytes) -> None:
        self._key = module.PrivateKey(secret)

    def public_key(self) -> bytes:
        return self._key.public_key.format(compressed=True)

    def sign_digest(self, digest: bytes) -> bytes:
        # A recoverable signature is the compact r || s (RFC 6979 nonce, low-S, as
        # libsecp256k1 always normalizes) plus one recovery byte.
        return self._key.sign_recoverable(digest, hasher=None)[:64]

    def __repr__(self) -> str:
        return "<coincurve key>"


class _EcdsaBackend:
    """The pure-Python ``ecdsa`` package: the same RFC 6979 nonce with SHA-256,
    normalized to low-S by ``sigencode_string_canonize``; holds the GIL."""

    __slots__ = ("_key", "_encode", "_sha256")
    name = "ecdsa"

    def __init__(self, module: Any, secret: bytes) -> None:
        self._key = module.SigningKey.from_string(secret, curve=module.SECP256k1, hashfunc=hashlib.sha256)
        self._encode = module.util.sigencode_string_canonize
        self._sha256 = hashlib.sha256

    def public_key(self) -> bytes:
        return self._key.get_verifying_key().to_string("compressed")

    def sign_digest(self, digest: bytes) -> bytes:
        return self._key.sign_digest_deterministic(digest, hashfunc=self._sha256, sigencode=self._encode)

    def __repr__(self) -> str:
        return "<ecdsa key>"


class Signer:
    """Signs requests for the Gonka network with one account's key.

        >>> signer = Signer("0x" + "11" * 32)
        >>> signer.address
        'gonka1l3e9pgs3mmwuwrh95fecme0s0qtn2880el49wm'
        >>> signer.sign(b"{}", 1, "gonka1xyz")[:16]
        'S+axvSAj8MZBo17R'

    ``private_key`` is 64 hex digits (with or without ``0x``) or 32 bytes;
    ``requester_address`` is sent as ``X-Requester-Address`` (derived from the key
    unless given).  ``backend`` picks ``"coincurve"`` or ``"ecdsa"`` (default: the
    first installed); both give the same bytes.  ``clock_offset_ns`` is added to
    the wall clock for every timestamp (nodes check it against the chain's last
    block time, within about 10 s).

    The key stays inside: it is in no repr, log record or exception, and a
    ``Signer`` refuses to be pickled or copied.  Safe to share between threads.
    """

    __slots__ = ("_backend", "_address", "_public_key", "_lock", "_last_ns", "clock_offset_ns")

    def __init__(
        self,
        private_key: str | bytes,
        *,
        requester_address: str | None = None,
        backend: str | None = None,
        clock_offset_ns: int = 0,
    ) -> None:
        try:
            secret = _private_key_bytes(private_key)
            refused = None
        except (TypeError, ValueError) as exc:
            refused = exc
        # Neither in this frame's locals nor in the parser's frame if it raised: an
        # error reporter that records every frame's locals (Sentry does) sees no key.
        del private_key
        if refused is not None:
            raise refused.with_traceback(None) from None
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, not {backend!r}")
        self._backend: Any = None
        for name in (backend,) if backend else BACKENDS:
            module = _load_coincurve() if name == "coincurve" else _load_ecdsa()
            if module is not None:
                self._backend = (_CoincurveBackend if name == "coincurve" else _EcdsaBackend)(module, secret)
                break
        del secret
        if self._backend is None:
            wanted = backend or "coincurve or ecdsa"
            raise ImportError(f"Signer needs {wanted}: pip install 'gonka-pool[gonka]'")
        self._public_key = self._backend.public_key()
        self._address = (
            address_from_public_key(self._public_key)
            if requester_address is None
            else _check_address(requester_address, "requester_address")
        )
        if isinstance(clock_offset_ns, bool) or not isinstance(clock_offset_ns, int):
            raise TypeError("clock_offset_ns must be an int")
        self.clock_offset_ns = clock_offset_ns
        self._lock = threading.Lock()
        self._last_ns = 0

    @property
    def address(self) -> str:
        """The requester address sent with every request."""
        return self._address

    @property
    def public_key(self) -> bytes:
        """The compressed (33-byte) public key."""
        return self._public_key

    @property
    def backend(self) -> str:
        """``"coincurve"`` or ``"ecdsa"``."""
        return self._backend.name

    def sign(self, body: bytes, timestamp_ns: int, transfer_address: str) -> str:
        """The ``Authorization`` value for ``body`` sent at ``timestamp_ns`` to the
        node whose address is ``transfer_address``."""
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
        if isinstance(timestamp_ns, bool) or not isinstance(timestamp_ns, int):
            raise TypeError(f"timestamp_ns must be an int, not {type(timestamp_ns).__name__}")
        if not isinstance(transfer_address, str) or not transfer_address:
            raise ValueError("transfer_address must be a non-empty str (the node's address)")
        message = (hashlib.sha256(body).hexdigest() + str(timestamp_ns) + transfer_address).encode("utf-8")
        signature = self._backend.sign_digest(hashlib.sha256(message).digest())
        return base64.b64encode(signature).decode("ascii")

    def timestamp_ns(self) -> int:
        """The wall clock (plus ``clock_offset_ns``) in nanoseconds, strictly greater
        than any this signer returned before, from any thread."""
        now = time.time_ns() + self.clock_offset_ns
        with self._lock:
            if now <= self._last_ns:
                now = self._last_ns + 1
            self._last_ns = now
        return now

    def __call__(self, request: Any, endpoint: GonkaEndpoint) -> None:
        """``on_request``: sign ``request`` (its body already read) for ``endpoint``."""
        timestamp = self.timestamp_ns()
        headers = request.headers
        headers["Authorization"] = self.sign(request.content, timestamp, endpoint.address)
        headers["X-Requester-Address"] = self._address
        headers["X-Timestamp"] = str(timestamp)

    def __repr__(self) -> str:
        # getattr: a traceback's frame locals show a half-built Signer too.
        backend = getattr(getattr(self, "_backend", None), "name", None)
        return f"Signer(address={getattr(self, '_address', None)!r}, backend={backend!r})"

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError(
            "a Signer holds a private key and is not pickled or copied; build one from the key in each process"
        )


def verify_signature(public_key: bytes, body: bytes, timestamp_ns: int, transfer_address: str, signature: str) -> bool:
    """Whether ``signature`` (base64 ``r || s``) is the low-S signature of the
    message for ``body``, ``timestamp_ns`` and ``transfer_address`` by the key
    ``public_key`` (33 bytes, compressed), as a node checks it.  Uses ``ecdsa``."""
    ecdsa = _load_ecdsa()
    if ecdsa is None:  # pragma: no cover - ecdsa is in the [gonka] extra
        raise ImportError("verify_signature needs ecdsa: pip install 'gonka-pool[gonka]'")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, TypeError):
        return False
    if len(raw) != 64 or int.from_bytes(raw[32:], "big") > _HALF_N:
        return False  # the Cosmos SDK refuses high-S (malleable) signatures
    message = (hashlib.sha256(body).hexdigest() + str(timestamp_ns) + transfer_address).encode()
    try:
        key = ecdsa.VerifyingKey.from_string(public_key, curve=ecdsa.SECP256k1, hashfunc=hashlib.sha256)
        return bool(key.verify(raw, message, hashfunc=hashlib.sha256, sigdecode=ecdsa.util.sigdecode_string))
    except (ecdsa.BadSignatureError, ecdsa.MalformedPointError, ValueError, AssertionError):
        return False


# -- discovery ------------------------------------------------------------------------


class DiscoveryError(RuntimeError):
    """Discovery found no usable node, or could not read the network's answer."""


@dataclass(frozen=True)
class Participant:
    """One active participant of an epoch: its node, PoC weight and models."""

    endpoint: GonkaEndpoint
    weight: int
    models: tuple[str, ...]


# Bounds on what a source may send: a participants list is tens of KB today.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_PARTICIPANTS = 10_000
MAX_MODELS = 256
MAX_TEXT = 2048  # an address, URL or model name longer than this is refused
# Skipped entries logged one by one, then counted: a hostile source cannot flood the log.
MAX_LOGGED_SKIPS = 10
PARTICIPANTS_PATH = "/v1/epochs/{epoch}/participants"
PARAMS_PATH = "/chain-api/productscience/inference/inference/params"


def _source_root(source_url: object) -> str:
    if not isinstance(source_url, str):
        raise TypeError(f"source_url must be a str, not {type(source_url).__name__}")
    parts = urlsplit(source_url.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
    ):
        raise ValueError(
            f"source_url must be an http(s) URL of a Gonka node, without "
            f"credentials or query, got {redact(source_url)!r}"
        )
    root = parts.scheme + "://" + parts.netloc + parts.path.rstrip("/")
    # gonka-openai takes the node's root; a /v1 base URL is accepted too.
    return root[:-3] if root.endswith("/v1") else root


def _get_json(url: str, timeout: float) -> Any:
    """GET ``url`` as JSON: the standard library, so discovery needs no HTTP
    client installed; bounded in time and size; no proxy from the environment
    (as the transports use trust_env=False)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "gonka-pool"})
    try:
        with opener.open(request, timeout=timeout) as response:
            data = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise DiscoveryError(f"GET {url} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise DiscoveryError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
    if len(data) > MAX_RESPONSE_BYTES:
        raise DiscoveryError(f"GET {url} sent more than {MAX_RESPONSE_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise DiscoveryError(f"GET {url} did not answer JSON") from None


class _Skips:
    def __init__(self, source: str) -> None:
        self.source = source
        self.count = 0

    def skip(self, position: int, reason: str) -> None:
        self.count += 1
        if self.count <= MAX_LOGGED_SKIPS:
            log.warning("gonka discovery: skipped participant %d from %s: %s", position, self.source, reason)

    def summary(self) -> None:
        if self.count > MAX_LOGGED_SKIPS:
            log.warning("gonka discovery: skipped %d participants from %s in all", self.count, self.source)


def _text(value: object) -> str | None:
    return value if type(value) is str and 0 < len(value) <= MAX_TEXT else None


def _internal_host(host: str | None) -> bool:
    """Whether ``host`` names this machine or a private network by itself: a
    ``localhost`` name or an IP literal that is not global (loopback, private,
    link-local such as 169.254.169.254, shared, reserved), in any spelling a
    resolver takes (``127.1``, ``2130706433``, ``0x7f000001``, ``::ffff:10.0.0.1``).
    A DNS name is not resolved: what it points at can change after discovery."""
    if not host:
        return False
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        try:  # the forms inet_aton accepts, as getaddrinfo does
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global


def _participant(
    entry: object, excluded: set[str], skips: _Skips, position: int, internal_allowed: bool = True
) -> Participant | None:
    if not isinstance(entry, dict):
        skips.skip(position, f"not an object ({type(entry).__name__})")
        return None
    address, url = _text(entry.get("index")), _text(entry.get("inference_url"))
    if address is None or url is None:
        skips.skip(position, "no index (address) or inference_url string")
        return None
    if address in excluded:
        return None  # excluded by the network: not an error
    url = url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    try:
        endpoint = GonkaEndpoint(url, address)
    except (TypeError, ValueError) as exc:
        skips.skip(position, str(exc))
        return None
    if not internal_allowed and _internal_host(urlsplit(url).hostname):
        # A participant is a third party: from a public source it must not steer
        # this server's requests (and signatures) to its own machine, its private
        # network or a cloud metadata address.
        skips.skip(
            position, f"inference_url {redact(url)!r} is on a private network or this machine, and the source is not"
        )
        return None
    weight = entry.get("weight", 0)
    if isinstance(weight, str) and weight.isdigit() and len(weight) <= 30:
        weight = int(weight)  # protobuf JSON sends int64 as a string
    if type(weight) is not int or not 0 <= weight < 1 << 63:
        skips.skip(position, f"weight {redact(str(weight))[:40]!r} is not a non-negative integer")
        return None
    models = entry.get("models") or []
    if not isinstance(models, list) or len(models) > MAX_MODELS:
        skips.skip(position, "models is not a list (of at most 256)")
        return None
    names = tuple(m for m in models if _text(m) is not None)
    return Participant(endpoint, weight, names)


def _allowed_addresses(root: str, timeout: float) -> frozenset[str] | None:
    """The chain's transfer-agent allowlist, or None when it restricts nothing
    (empty or absent: the node then lets every transfer agent serve)."""
    payload = _get_json(root + PARAMS_PATH, timeout)
    params = payload.get("params") if isinstance(payload, dict) else None
    if not isinstance(params, dict):
        raise DiscoveryError(f"{root}{PARAMS_PATH} has no params object")
    access = params.get("transfer_agent_access_params")
    allowed = access.get("allowed_transfer_addresses") if isinstance(access, dict) else None
    if not allowed:
        return None
    if not isinstance(allowed, list) or len(allowed) > MAX_PARTICIPANTS:
        raise DiscoveryError(f"{root}{PARAMS_PATH}: allowed_transfer_addresses is not a list")
    return frozenset(a for a in allowed if _text(a) is not None)


def discover(
    source_url: str, *, epoch: str | int = "current", allowlist: bool = True, timeout: float = 10.0
) -> list[Participant]:
    """The active participants of ``epoch`` as ``source_url`` (any Gonka node)
    reports them: ``GET {source_url}/v1/epochs/{epoch}/participants``, less the
    excluded ones and, with ``allowlist``, less those the chain's
    transfer-agent allowlist leaves out (``GET {source_url}/chain-api/...params``).

    Every entry is checked (a string address, an http(s) URL, a non-negative
    integer weight, a list of model names); bad ones are skipped and logged, as
    are nodes on this machine or a private network (``localhost``, ``10.0.0.5``,
    ``169.254.169.254``) unless ``source_url`` is itself on one.
    Raises ``DiscoveryError`` when nothing usable remains or the source cannot be
    read; never returns an empty list.  The ICS23 proof is not checked (as
    gonka-openai by default).
    """
    root = _source_root(source_url)
    if isinstance(epoch, bool) or not (
        epoch == "current" or (type(epoch) is int and epoch >= 0) or (isinstance(epoch, str) and epoch.isdigit())
    ):
        raise ValueError(f"epoch must be 'current' or an epoch number, not {epoch!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    url = root + PARTICIPANTS_PATH.format(epoch=quote(str(epoch), safe=""))
    payload = _get_json(url, timeout)
    if not isinstance(payload, dict):
        raise DiscoveryError(f"{url} did not answer a JSON object")
    active = payload.get("active_participants")
    entries = active.get("participants") if isinstance(active, dict) else None
    if not isinstance(entries, list):
        raise DiscoveryError(f"{url} has no active_participants.participants list")
    if len(entries) > MAX_PARTICIPANTS:
        raise DiscoveryError(f"{url} lists {len(entries)} participants, more than {MAX_PARTICIPANTS}")
    excluded_entries = payload.get("excluded_participants") or []
    excluded = (
        {
            e["address"]
            for e in excluded_entries[:MAX_PARTICIPANTS]
            if isinstance(e, dict) and _text(e.get("address")) is not None
        }
        if isinstance(excluded_entries, list)
        else set()
    )
    skips = _Skips(root)
    found: list[Participant] = []
    seen: set[str] = set()
    # A chain on this machine or a private network (a local testnet) may list nodes
    # there; a public one may not.
    internal_allowed = _internal_host(urlsplit(root).hostname)
    for position, entry in enumerate(entries):
        participant = _participant(entry, excluded, skips, position, internal_allowed)
        if participant is None:
            continue
        if participant.endpoint.address in seen:
            skips.skip(position, "a second entry for the same address")
            continue
        seen.add(participant.endpoint.address)
        found.append(participant)
    skips.summary()
    if allowlist and found:
        allowed = _allowed_addresses(root, timeout)
        if allowed is not None:
            found = [p for p in found if p.endpoint.address in allowed]
            if not found:
                raise DiscoveryError(f"none of the participants {url} lists is on the chain's transfer-agent allowlist")
    if not found:
        raise DiscoveryError(
            f"{url} lists no usable participant "
            f"({len(entries)} entries, {skips.count} skipped, "
            f"{len(excluded)} excluded)"
        )
    return found


def pool_weights(participants: Iterable[Participant]) -> list[int]:
    """The participants' weights as an ``EndpointPool`` takes them: as they are (a
    pool takes any positive weights, at the network's scale), 0 raised to 1 (a
    participant of weight 0 still serves)."""
    return [max(1, p.weight) for p in participants]


def pool_from_gonka(
    source_url: str,
    *,
    epoch: str | int = "current",
    allowlist: bool = True,
    timeout: float = 10.0,
    pool_class: Any = None,
    **pool_options: Any,
) -> Any:
    """An ``EndpointPool`` of the participants ``discover`` finds, weighted by
    their weights (``pool_weights``); ``pool_options`` go to ``EndpointPool``
    (``weights=`` there replaces the discovered ones).  ``pool_class`` builds it
    instead of ``gonka_pool.EndpointPool`` (``EndpointPool.from_gonka`` passes
    ``cls``)."""
    if pool_class is None:
        from . import EndpointPool as pool_class

    participants = discover(source_url, epoch=epoch, allowlist=allowlist, timeout=timeout)
    pool_options.setdefault("weights", pool_weights(participants))
    return pool_class([p.endpoint for p in participants], **pool_options)


# -- epoch refresh ---------------------------------------------------------------------

# How often a Refresher re-discovers by default: epochs last about a day, and the
# allowlist can change at any block; one small GET per node set every 10 minutes.
DEFAULT_REFRESH_INTERVAL = 600.0


def refresh(
    pool: Any, source_url: str, *, epoch: str | int = "current", allowlist: bool = True, timeout: float = 10.0
) -> list[Participant]:
    """Re-discover and ``pool.update()`` to the participants found, weighted.

    Nodes that stay keep their state, except those cooling "until cleared" (a 403
    "Transfer Agent not allowed"): discovery listing them again means the chain
    admits them, so they come back fresh (they are dropped and re-added, by two
    updates).  Raises what ``discover`` raises, and leaves the pool as it was.
    """
    participants = discover(source_url, epoch=epoch, allowlist=allowlist, timeout=timeout)
    endpoints = [p.endpoint for p in participants]
    weights = pool_weights(participants)
    listed = set(endpoints)
    shut_out = {
        state.endpoint for state in pool.snapshot() if state.cooldown_remaining == math.inf and state.endpoint in listed
    }
    if shut_out and len(shut_out) < len(endpoints):
        keep = [i for i, e in enumerate(endpoints) if e not in shut_out]
        pool.update([endpoints[i] for i in keep], [weights[i] for i in keep])
    pool.update(endpoints, weights)
    return participants


class _RefresherBase:
    def __init__(
        self, pool: Any, source_url: str, interval: float, epoch: str | int, allowlist: bool, timeout: float
    ) -> None:
        _source_root(source_url)  # a bad URL fails here, not in the background
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < math.inf:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        self.pool = pool
        self.source_url = source_url
        self.interval = float(interval)
        self._discovery: dict[str, Any] = {"epoch": epoch, "allowlist": allowlist, "timeout": timeout}
        self._failing = False
        self.refreshes = 0  # successful refreshes so far
        self.failures = 0

    def refresh_now(self) -> bool:
        """One refresh, now, in this thread: True when the pool was updated; a
        failure keeps the membership and is logged once per outage."""
        try:
            refresh(self.pool, self.source_url, **self._discovery)
        except Exception as exc:  # noqa: BLE001 - the refresher must outlive any error
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "gonka refresh from %s failed (%s: %s); keeping the current %d nodes until it succeeds",
                    redact(self.source_url),
                    type(exc).__name__,
                    exc,
                    len(self.pool),
                )
            return False
        self.refreshes += 1
        if self._failing:
            self._failing = False
            log.warning("gonka refresh from %s succeeded again: %d nodes", redact(self.source_url), len(self.pool))
        return True


_live_refreshers: weakref.WeakSet[Refresher] = weakref.WeakSet()


@atexit.register
def _close_refreshers() -> None:
    for refresher in list(_live_refreshers):
        refresher.close()


class Refresher(_RefresherBase):
    """Keep ``pool`` at the network's current participants: a daemon thread that
    calls ``refresh`` every ``interval`` seconds (the first time after one
    interval: the pool is assumed fresh).

        pool = pool_from_gonka(source_url)
        with Refresher(pool, source_url):
            ...

    A failed refresh keeps the current membership and logs one WARNING per
    outage (and one when it recovers).  ``close()`` stops the thread and waits
    for it; a refresher still running at interpreter exit is closed then.
    """

    def __init__(
        self,
        pool: Any,
        source_url: str,
        *,
        interval: float = DEFAULT_REFRESH_INTERVAL,
        epoch: str | int = "current",
        allowlist: bool = True,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(pool, source_url, interval, epoch, allowlist, timeout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gonka_pool Refresher", daemon=True)
        _live_refreshers.add(self)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh_now()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Stop refreshing; waits for a refresh in progress (at most its HTTP
        timeout) unless ``timeout`` says otherwise."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        _live_refreshers.discard(self)

    def __enter__(self) -> Refresher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Refresher({redact(self.source_url)!r}, interval={self.interval}, running={self.running})"


class AsyncRefresher(_RefresherBase):
    """``Refresher`` as an asyncio task: discovery runs in a worker thread
    (``asyncio.to_thread``), so the event loop never waits on the network.

        async with AsyncRefresher(pool, source_url):
            ...
    """

    def __init__(
        self,
        pool: Any,
        source_url: str,
        *,
        interval: float = DEFAULT_REFRESH_INTERVAL,
        epoch: str | int = "current",
        allowlist: bool = True,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(pool, source_url, interval, epoch, allowlist, timeout)
        self._task: Any = None

    def start(self) -> AsyncRefresher:
        """Start the task on the running loop (``async with`` does this)."""
        import asyncio

        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(self.interval)
            await asyncio.to_thread(self.refresh_now)

    async def aclose(self) -> None:
        import asyncio

        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> AsyncRefresher:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# -- the network's refusals -------------------------------------------------------------

# The node's own messages (gonka-ai/gonka decentralized-api, post_chat_handler.go).
NOT_ALLOWED = "transfer agent not allowed"
REUSED = "authkey has already been used"
# "Request timestamp is too old", "... is in the future", and the chain's own
# timestamp validation: about the timestamp's age, not the node.  A 400 that names
# the timestamp without one of these words (a malformed header) is the answer.
TIMESTAMP = "timestamp"
TIMESTAMP_AGE_WORDS = ("old", "future", "expired", "advance", "window", "stale")
# Error bodies read to judge them: an echo JSON error is tens of bytes.
MAX_JUDGED_BODY = 4096


def _message(response: Any) -> str:
    try:
        content = response.content
    except Exception:  # noqa: BLE001 - unread (too large or streamed): nothing to judge
        return ""
    return content[:MAX_JUDGED_BODY].decode("utf-8", "replace").lower()


class _GonkaJudge:
    """``_judge_response`` for Gonka nodes, over the transport's own rules."""

    _read_body_statuses: ClassVar[frozenset[int]] = frozenset({400, 403})
    _read_body_limit: ClassVar[int] = MAX_JUDGED_BODY

    def _judge_response(self, response: Any) -> Verdict:
        status = response.status_code
        if status == 403 and NOT_ALLOWED in _message(response):
            # Off the chain's allowlist: out until cleared or dropped by the next
            # discovery (which leaves it out of the membership anyway).
            return math.inf, 0.0, "HTTP 403 Transfer Agent not allowed", False
        if status == 400:
            message = _message(response)
            if REUSED in message or (TIMESTAMP in message and any(word in message for word in TIMESTAMP_AGE_WORDS)):
                # Not the node's fault: the next attempt is signed afresh.
                reason = "signature reused" if REUSED in message else "timestamp outside the window"
                return PASS, 0.0, f"HTTP 400 {reason}", False
        return super()._judge_response(response)  # type: ignore[misc]


try:  # the transports need httpx2; signing and discovery do not
    from .httpx2 import AsyncPoolTransport as _AsyncPoolTransport
    from .httpx2 import PoolTransport as _PoolTransport
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:

    class GonkaPoolTransport(_GonkaJudge, _PoolTransport):
        """``gonka_pool.httpx2.PoolTransport`` that judges Gonka nodes' refusals
        (see ``_GonkaJudge``); give it ``on_request=Signer(...)``."""

    class AsyncGonkaPoolTransport(_GonkaJudge, _AsyncPoolTransport):
        """The async ``GonkaPoolTransport``."""

    __all__ += ["AsyncGonkaPoolTransport", "GonkaPoolTransport"]


# -- one-call clients -------------------------------------------------------------------


def _endpoints_from(endpoints: object) -> list[GonkaEndpoint]:
    if isinstance(endpoints, str):
        entries: Iterable[object] = [e for e in endpoints.split(",") if e.strip()]
    elif isinstance(endpoints, Iterable) and not isinstance(endpoints, Mapping):
        entries = endpoints
    else:
        raise TypeError(
            "endpoints must be GonkaEndpoints, 'url;address' strings, or one comma-separated string of them"
        )
    result = [
        e if isinstance(e, GonkaEndpoint) else GonkaEndpoint.parse(e)  # type: ignore[arg-type]
        for e in entries
    ]
    if not result:
        raise ValueError("endpoints is empty")
    return result


def _pool_and_signer(
    private_key: str | bytes | None, source_url: str | None, endpoints: object, options: dict[str, Any], builder: str
) -> tuple[Any, Signer, Refresher | None]:
    from . import EndpointPool

    if "on_request" in options:
        raise TypeError(f"gonka_pool.gonka.{builder}() signs every attempt itself; on_request is taken")
    if private_key is None:
        private_key = os.environ.get(ENV_PRIVATE_KEY) or None
        if private_key is None:
            raise ValueError(f"{builder}() needs private_key= or {ENV_PRIVATE_KEY}")
    signer = Signer(private_key, requester_address=os.environ.get(ENV_ADDRESS) or None)
    del private_key
    pool_options = options.pop("pool_options", None) or {}
    discovery_timeout = options.pop("discovery_timeout", 10.0)
    refresh_interval = options.pop("refresh_interval", DEFAULT_REFRESH_INTERVAL)
    if endpoints is not None:
        return EndpointPool(_endpoints_from(endpoints), **pool_options), signer, None
    if source_url is None and os.environ.get(ENV_ENDPOINTS):
        return (EndpointPool(_endpoints_from(os.environ[ENV_ENDPOINTS]), **pool_options), signer, None)
    source_url = source_url or os.environ.get(ENV_SOURCE_URL) or None
    if source_url is None:
        raise ValueError(
            f"{builder}() needs endpoints=, source_url=, or {ENV_ENDPOINTS} / {ENV_SOURCE_URL} in the environment"
        )
    pool = pool_from_gonka(source_url, timeout=discovery_timeout, **pool_options)
    refresher = (
        None
        if refresh_interval is None
        else Refresher(pool, source_url, interval=refresh_interval, timeout=discovery_timeout)
    )
    return pool, signer, refresher


def _attach(client: Any, pool: Any, refresher: Refresher | None) -> Any:
    client.gonka_pool = pool
    client.gonka_refresher = refresher
    if refresher is not None:
        # The refresher's thread holds the pool, not the client: once the client is
        # gone, stop it (without waiting: this may run in any thread, or at exit).
        weakref.finalize(client, refresher._stop.set)
    return client


def openai_client(
    private_key: str | bytes | None = None,
    *,
    source_url: str | None = None,
    endpoints: object = None,
    **openai_kwargs: Any,
) -> Any:
    """An ``openai.OpenAI`` for the Gonka network: gonka-openai's ``GonkaOpenAI``
    with failover, per-attempt signing and the network's refusals judged.

    The key is ``private_key`` or ``GONKA_PRIVATE_KEY`` (the requester address
    ``GONKA_ADDRESS`` or derived); the nodes are ``endpoints`` (GonkaEndpoints,
    ``url;address`` strings or one comma-separated string), else discovered from
    ``source_url``, else ``GONKA_ENDPOINTS``, else discovered from
    ``GONKA_SOURCE_URL``.  ``pool_options={...}`` go to ``EndpointPool``,
    ``discovery_timeout=`` to ``discover``; when the nodes were discovered, a
    ``Refresher`` re-discovers every ``refresh_interval=`` seconds (600; None for
    never).  The rest go as to ``gonka_pool.openai.client`` (transport keywords
    such as ``deadline``, ``attempts``; SDK keywords such as ``timeout``).
    ``client.gonka_pool`` is the pool, ``client.gonka_refresher`` the refresher
    (or None); it stops when the client is garbage-collected, or at exit.
    """
    from .openai import _build

    pool, signer, refresher = _pool_and_signer(private_key, source_url, endpoints, openai_kwargs, "openai_client")
    return _attach(
        _build(pool, {**openai_kwargs, "on_request": signer}, "client", GonkaPoolTransport, asynchronous=False),
        pool,
        refresher,
    )


def async_openai_client(
    private_key: str | bytes | None = None,
    *,
    source_url: str | None = None,
    endpoints: object = None,
    **openai_kwargs: Any,
) -> Any:
    """The ``openai.AsyncOpenAI`` ``openai_client`` builds (discovery, when asked
    for, runs here, before the client exists)."""
    from .openai import _build

    pool, signer, refresher = _pool_and_signer(private_key, source_url, endpoints, openai_kwargs, "async_openai_client")
    return _attach(
        _build(
            pool, {**openai_kwargs, "on_request": signer}, "async_client", AsyncGonkaPoolTransport, asynchronous=True
        ),
        pool,
        refresher,
    )
