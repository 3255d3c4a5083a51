"""Signing for the Gonka network: the ``Signer`` (one account's key, two
interchangeable backends), its addresses, and ``verify_signature`` as a node
checks a signature.

``Signer`` signs as gonka-openai's ``gonka_signature`` does, byte for byte:
secp256k1 ECDSA, RFC 6979 deterministic, low-S, base64 of ``r || s``, over
``hex(sha256(body)) + str(timestamp_ns) + transfer_address``; with coincurve
(libsecp256k1, which releases the GIL) where it is installed, the ``ecdsa``
package otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from typing import Any

try:
    import bech32 as _bech32
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    # Still a ModuleNotFoundError naming the missing package, so that pytest.importorskip
    # and other callers tell an extra not installed from a broken install (which raises as is).
    raise ModuleNotFoundError(
        "gonka_pool.gonka needs bech32 and ecdsa (or coincurve): pip install 'gonka-pool[gonka]'", name=exc.name
    ) from exc

from .._endpoint import GonkaEndpoint, redact

# The bech32 prefix of the network's account addresses (gonka-openai derives it
# from the chain id "gonka-...").
ADDRESS_PREFIX = "gonka"
# secp256k1's group order; a private key is an integer in [1, N).
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _N // 2


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


def _parse_private_key(private_key: object) -> tuple[bytes | None, Exception | None]:
    """The 32 bytes of a key given as hex (with or without 0x) or bytes, or else
    the error to raise; errors never echo the key.

    It returns its error rather than raising it: a raise from here would keep the
    key in this frame's locals, reachable from the error's traceback (and one from
    inside an ``except`` would chain an error whose frames hold it), and error
    reporters that record every frame's locals (Sentry's default) would send it.
    """
    if isinstance(private_key, (bytes, bytearray, memoryview)):
        try:
            secret = bytes(private_key)
        except ValueError:  # a released memoryview
            return None, ValueError("private_key could not be read as bytes")
    elif isinstance(private_key, str):
        text = private_key.strip()
        if text[:2] in ("0x", "0X"):
            text = text[2:]
        if len(text) != 64:
            return None, ValueError(
                f"private_key must be 64 hex digits (32 bytes), with or without 0x; got {len(text)} characters"
            )
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            return None, ValueError(
                "private_key must be 64 hex digits (32 bytes), with or without 0x; it has a character that is not hex"
            )
    else:
        return None, TypeError(f"private_key must be a hex str or 32 bytes, not {type(private_key).__name__}")
    if len(secret) != 32:
        return None, ValueError(f"private_key must be 32 bytes, got {len(secret)}")
    if not 0 < int.from_bytes(secret, "big") < _N:
        return None, ValueError("private_key is not a valid secp256k1 key (0 or not below the group order)")
    return secret, None


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


def _pick_backend(backend: object) -> tuple[Any, Any]:
    """The module and backend class ``backend`` names (None: the first installed)."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, not {backend!r}")
    for name in (backend,) if backend else BACKENDS:
        module = _load_coincurve() if name == "coincurve" else _load_ecdsa()
        if module is not None:
            return module, (_CoincurveBackend if name == "coincurve" else _EcdsaBackend)
    wanted = backend or "coincurve or ecdsa"
    raise ImportError(f"Signer needs {wanted}: pip install 'gonka-pool[gonka]'")


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

    The key stays inside: it is in no repr, log record or exception (nor in the
    frame locals of an error's traceback, nor in an exception chained to it), and
    a ``Signer`` refuses to be pickled or copied.  Safe to share between threads.
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
        # A traceback keeps the locals of each frame it passes through, and error
        # reporters record them (Sentry does by default): no error leaves here while
        # this frame, or a frame that the error holds, has the key.  So the other
        # arguments are checked first, and the key is dropped before any raise.
        try:
            module, backend_class = _pick_backend(backend)
            if requester_address is not None:
                requester_address = _check_address(requester_address, "requester_address")
            if isinstance(clock_offset_ns, bool) or not isinstance(clock_offset_ns, int):
                raise TypeError("clock_offset_ns must be an int")
        except BaseException:
            del private_key
            raise
        secret, refused = _parse_private_key(private_key)
        del private_key
        if refused is not None:
            raise refused  # made, never raised, by the parser: no traceback or context of its own
        try:
            self._backend: Any = backend_class(module, secret)
            failed = None
        except Exception as exc:  # noqa: BLE001 - re-raised below without its frames, which hold the key
            failed = type(exc).__name__
        del secret
        if failed is not None:
            raise RuntimeError(f"the {backend_class.name} backend refused the key ({failed})")
        self._public_key = self._backend.public_key()
        self._address = address_from_public_key(self._public_key) if requester_address is None else requester_address
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
