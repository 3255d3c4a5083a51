"""Failover transports for the httpx family, written once over its shared transport API.

``gonka_pool.httpx2`` and ``gonka_pool.httpx`` subclass these with their library's
``BaseTransport`` and name the library in ``_http``; httpx2 kept httpx 0.28's
transport API (``Request``, ``Response``, ``handle_request``, the exception tree), so
nothing else differs.  The loop itself is ``_failover.failover_plan``.

The rules, for a transport built with ``origin="http://gonka"`` (the default):

- Only requests to the origin (scheme, host and port) are routed; any other is
  refused with ``RoutingError`` before a byte is sent anywhere, so a client shared
  with other APIs never hands their credentials to a node.  The origin has no path:
  each attempt goes to the selected node's scheme, host and port, with the node's
  base path before the request's path (``/chat/completions`` becomes
  ``/v1/chat/completions`` for a node at ``https://node/v1``); a request path that
  already begins with that base path is refused (the client's base URL carries a
  path it should not).
- ``on_request(request, endpoint)`` may add headers for that node; the status line
  and headers decide, so failing over happens before any byte of the body reaches
  the caller, never after.
- A ``Location`` under the answering node's base URL is rewritten into the
  origin's space, so a followed redirect reaches the same path through the pool;
  any other ``Location`` is left as it is, and following it meets the origin rule.
- ``Set-Cookie`` is dropped from every response: nodes are stateless APIs, and one
  client jar behind one origin would hand one node's cookies to every other.
- A 429 or 503 with a usable ``Retry-After`` is a failure cooled at least that
  long, by at most ``max_retry_after`` seconds.  A 429 without one (Gonka's
  "Transfer Agent capacity reached") is load, not failure: the node is left
  alone for a short jittered moment (``lease.overloaded()``), its backoff level
  untouched, and the request fails over all the same.
- Each attempt holds a lease on its node (``pool.acquire()``), settled as soon as
  the status line and headers have been judged: the latency the pool learns is
  the time to the headers, so a stream counts its time to the first byte.  A
  response handed back settles its lease before its body is read: a success for a
  2xx or 3xx, ``answered()`` for an error status that is not retried (the
  caller's, which says nothing of the node's health or speed).
- ``deadline`` bounds the whole request: no attempt starts after it, and each
  attempt's timeouts are cut to the time left.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Generator, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from ._convert import check_attempts, check_cooldown, check_deadline
from ._endpoint import GonkaEndpoint, redact
from ._failover import (
    DEFAULT_MAX_RETRY_AFTER,
    NEUTRAL,
    Cooldowns,
    Step,
    Verdict,
    arun,
    expiry,
    failover_plan,
    load_verdict,
    remaining,
    retry_after_seconds,
    run,
)

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11+

__all__ = [
    "DEFAULT_ORIGIN",
    "DEFAULT_RETRY_STATUSES",
    "AsyncPoolTransportBase",
    "PoolTransportBase",
    "RoutingError",
]

# Too many requests, and every server error: the node's state, not the request's.
# Other 4xx (401, 403, 404, 422...) are the caller's to fix, and go back unmarked;
# the seed marks them too, which would let one bad API key cool the whole pool.
DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})
# Statuses whose Retry-After header lengthens the cooldown (RFC 9110, 6585).
RETRY_AFTER_STATUSES = frozenset({429, 503})
# Where the selected node is put on the response.
ENDPOINT_EXTENSION = "gonka_endpoint"
# The placeholder a client addresses the pool by (its base URL).
DEFAULT_ORIGIN = "http://gonka"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_COOKIE_HEADERS = ("set-cookie", "set-cookie2")


class RoutingError(ValueError):
    """A request the pool transport will not route: another origin than the pool's,
    or a path that would double the node's base path.  Raised before anything is
    sent; never retried, and no node is marked."""


def _origin_key(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    scheme = scheme.lower()
    return scheme, host.lower(), _DEFAULT_PORTS.get(scheme, -1) if port is None else port


def _check_origin(origin: object) -> tuple[str, tuple[str, str, int]]:
    """``origin`` as ``scheme://host[:port]`` and its comparison key."""
    if not isinstance(origin, str):
        raise TypeError(f"origin must be a str such as {DEFAULT_ORIGIN!r}, not {type(origin).__name__}")
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        raise ValueError(f"origin must be scheme://host[:port] such as {DEFAULT_ORIGIN!r}") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        raise ValueError(f"origin must be http(s)://host[:port] such as {DEFAULT_ORIGIN!r}, without credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"origin {redact(origin)!r} has a path, query or fragment; each request already gets "
            "its node's base path (e.g. /v1): use "
            f"origin={parts.scheme + '://' + parts.netloc!r}, and the same as the client's base URL"
        )
    return parts.scheme + "://" + parts.netloc, _origin_key(parts.scheme, parts.hostname, port)


class _PoolTransportCommon:
    """Configuration and the per-attempt steps shared by the sync and async classes."""

    # Not ClassVar: mypy reads the adapter's `_http = _http` (a module) as an instance variable.
    _http: ModuleType  # httpx2 or httpx, set by the adapter module
    _default_transport: ClassVar[type[Any]]
    _inner_base: ClassVar[str]  # the name of the library class an inner transport extends
    # Statuses whose body is read before the response is judged, when it declares a
    # Content-Length of at most _read_body_limit bytes, so that a subclass's
    # _judge_response can read a node's error message (gonka_pool.gonka's 400/403).
    # None here: the base judges on the status line and headers alone.
    _read_body_statuses: ClassVar[frozenset[int]] = frozenset()
    _read_body_limit: ClassVar[int] = 0

    def __init__(
        self,
        pool: Any,
        *,
        transport: Any = None,
        attempts: int | None = None,
        cooldown: Any = None,
        timeout_cooldown: Any = None,
        retry_statuses: Iterable[int] = DEFAULT_RETRY_STATUSES,
        on_request: Callable[[Any, GonkaEndpoint], Any] | None = None,
        origin: str = DEFAULT_ORIGIN,
        max_retry_after: Any = DEFAULT_MAX_RETRY_AFTER,
        deadline: Any = None,
    ) -> None:
        # What the failover loop calls (acquire's leases settle the attempts).
        for method in ("acquire", "__len__"):
            if not callable(getattr(pool, method, None)):
                raise TypeError(f"pool must be an EndpointPool, not {type(pool).__name__}")
        if on_request is not None and not callable(on_request):
            raise TypeError(f"on_request must be callable, not {type(on_request).__name__}")
        self._pool = pool
        self._attempts = check_attempts(attempts)
        self._cooldowns = Cooldowns(cooldown, timeout_cooldown)
        self._retry_statuses = _check_statuses(retry_statuses)
        self._on_request = on_request
        self._origin, self._origin_key = _check_origin(origin)
        max_after = check_cooldown("max_retry_after", max_retry_after, allow_none=False)
        if max_after == math.inf:
            raise ValueError("max_retry_after must be finite: a node may not take itself out until cleared")
        self._max_retry_after = float(max_after)
        self._deadline = check_deadline(deadline)
        self._check_inner(transport)
        self._transport = self._default_transport() if transport is None else transport
        http = self._http
        # The node's fault: it could not be reached, answered garbage, or stalled.
        # Not: a full local connection pool (PoolTimeout; no node was contacted),
        # a request that httpx itself refuses to send, or any non-transport error.
        self._node_errors = (http.TransportError,)
        self._not_node_errors = (http.PoolTimeout, http.LocalProtocolError, http.UnsupportedProtocol)
        # Each node's base path, percent-encoded as request paths are.
        self._base_paths: dict[GonkaEndpoint, str] = {}

    def _check_inner(self, transport: Any) -> None:
        if transport is None:
            return
        library = type(transport).__module__.partition(".")[0]
        mine = self._http.__name__
        if library in ("httpx", "httpx2") and library != mine:
            raise TypeError(
                f"{type(self).__module__}.{type(self).__name__} needs a {mine} transport, "
                f"got {library}.{type(transport).__name__}: use gonka_pool.{library}."
                f"{type(self).__name__} with {library} clients and transports"
            )
        expected = getattr(self._http, self._inner_base)
        other = getattr(self._http, "BaseTransport" if self._inner_base != "BaseTransport" else "AsyncBaseTransport")
        if isinstance(transport, other) and not isinstance(transport, expected):
            raise TypeError(
                f"{type(self).__name__} needs a {mine}.{self._inner_base} as its inner "
                f"transport, got {type(transport).__name__}"
            )

    def _check_request(self, request: Any) -> None:
        """The origin rule, before anything is read or sent."""
        if not isinstance(request, self._http.Request):
            library = type(request).__module__.partition(".")[0]
            raise TypeError(
                f"{type(self).__module__}.{type(self).__name__} is a {self._http.__name__} "
                f"transport but got a {library} request: with {library} clients use "
                f"gonka_pool.{library}.{type(self).__name__}"
            )
        url = request.url
        if _origin_key(url.scheme, url.host, url.port) != self._origin_key:
            port = "" if url.port is None else f":{url.port}"
            raise RoutingError(
                f"{type(self).__name__} routes only requests to {self._origin}; refused a "
                f"request to {url.scheme}://{url.host}{port} and sent nothing.  To share the "
                f"client with other hosts, mount the transport for the pool's origin only: "
                f"Client(mounts={{{self._origin!r}: transport}})"
            )

    @property
    def pool(self) -> Any:
        return self._pool

    @property
    def attempts(self) -> int | None:
        """The most attempts per request, or None: at most 8 nodes and three timeouts."""
        return self._attempts

    @property
    def origin(self) -> str:
        return self._origin

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._pool!r}, origin={self._origin!r}, "
            f"attempts={self._attempts}, {self._cooldowns!r}, "
            f"max_retry_after={self._max_retry_after!r}, deadline={self._deadline!r})"
        )

    def _plan(self, expires: float | None) -> Generator[Step, Any, Any]:
        return failover_plan(self._pool, self._attempts, self._judge_error, self._judge_response, expires)

    def _judge_error(self, exc: Exception) -> Verdict:
        if not isinstance(exc, self._node_errors) or isinstance(exc, self._not_node_errors):
            return None
        if isinstance(exc, self._http.TimeoutException):
            return self._cooldowns.for_timeout(type(exc).__name__)
        return self._cooldowns.for_error(type(exc).__name__)

    def _judge_response(self, response: Any) -> Verdict:
        status = response.status_code
        if status not in self._retry_statuses:
            # An error status not retried is the caller's answer, but neither the
            # node's success nor its speed: a node that answered every request
            # with an instant 4xx would otherwise draw them all.
            return NEUTRAL if status >= 400 else None
        if status not in RETRY_AFTER_STATUSES:
            return self._cooldowns.for_error(f"HTTP {status}")
        asked = retry_after_seconds(response.headers.get("Retry-After"), limit=self._max_retry_after)
        if asked is None and status == 429:
            # Busy, not broken: the node's answer to a burst.  Cooling it for the
            # backoff would cascade the burst over the others (issue 20).
            return load_verdict(f"HTTP {status}")
        return self._cooldowns.for_error(f"HTTP {status}", asked or 0.0)

    def _body_to_judge(self, response: Any) -> bool:
        """Whether to read ``response``'s (small) body before judging it."""
        if response.status_code not in self._read_body_statuses:
            return False
        length = response.headers.get("content-length", "")
        # The node's header: ASCII digits ("²".isdigit() is True) short enough for int().
        return length.isascii() and length.isdigit() and len(length) <= 20 and int(length) <= self._read_body_limit

    def _base_path(self, endpoint: GonkaEndpoint) -> str:
        path = self._base_paths.get(endpoint)
        if path is None:
            path = self._http.URL(endpoint.base_url).raw_path.decode("ascii").rstrip("/")
            if len(self._base_paths) > 4096:  # bounded: memberships change over time
                self._base_paths.clear()
            self._base_paths[endpoint] = path
        return path

    def _request_for(self, request: Any, endpoint: GonkaEndpoint, expires: float | None) -> Any:
        """A copy of ``request`` (already read) addressed to ``endpoint``."""
        http = self._http
        base_path = self._base_path(endpoint)
        # raw_path is the request's path and query, already percent-encoded.
        raw_path = request.url.raw_path.decode("ascii")
        path = raw_path.partition("?")[0]
        if base_path and (path == base_path or path.startswith(base_path + "/")):
            raise RoutingError(
                f"the request path {path!r} already begins with the node's base path "
                f"{base_path!r}, which the transport adds itself: give the client the base "
                f"URL {self._origin!r} (no path), e.g. openai.OpenAI(base_url={self._origin!r})"
            )
        url = http.URL(endpoint.base_url.rstrip("/") + raw_path)
        headers = request.headers.copy()
        headers["Host"] = url.netloc.decode("ascii")
        extensions = request.extensions
        left = remaining(expires)
        if left is not None and isinstance(extensions.get("timeout"), dict):
            # Each phase's timeout cut to what the whole request has left.
            extensions = {
                **extensions,
                "timeout": {
                    phase: left if value is None else min(value, left) for phase, value in extensions["timeout"].items()
                },
            }
        attempt = http.Request(request.method, url, headers=headers, stream=request.stream, extensions=extensions)
        attempt.read()  # a replayable ByteStream: makes attempt.content readable
        return attempt

    def _clean_response(self, response: Any, attempt: Any, endpoint: GonkaEndpoint) -> None:
        """What of a node's response may reach the client: no cookies, and redirects
        into the pool's space only."""
        headers = response.headers
        for name in _COOKIE_HEADERS:
            if name in headers:
                del headers[name]
        response.extensions[ENDPOINT_EXTENSION] = endpoint
        if 300 <= response.status_code < 400 and "location" in headers:
            rewritten = self._location_in_pool(headers["location"], attempt, endpoint)
            if rewritten is not None:
                headers["Location"] = rewritten

    def _location_in_pool(self, location: str, attempt: Any, endpoint: GonkaEndpoint) -> str | None:
        http = self._http
        try:
            target = attempt.url.join(location)
        except Exception:  # noqa: BLE001 - an unparseable Location is left for the client to refuse
            return None
        node = attempt.url
        if _origin_key(target.scheme, target.host, target.port) != _origin_key(node.scheme, node.host, node.port):
            return None
        base_path = self._base_path(endpoint)
        raw = target.raw_path.decode("ascii")
        path = raw.partition("?")[0]
        if base_path and not (path == base_path or path.startswith(base_path + "/")):
            return None
        rest = raw[len(base_path) :]
        if not rest.startswith("/"):
            rest = "/" + rest
        fragment = f"#{target.fragment}" if target.fragment else ""
        return str(http.URL(self._origin + rest + fragment))


def _check_statuses(statuses: object) -> frozenset[int]:
    if isinstance(statuses, (str, bytes)) or not isinstance(statuses, Iterable):
        raise TypeError("retry_statuses must be an iterable of int status codes")
    codes = frozenset(statuses)
    if not all(type(code) is int and 100 <= code <= 599 for code in codes):
        raise ValueError(f"retry_statuses must be HTTP status codes (100-599), got {sorted(codes, key=str)!r}")
    return codes


class PoolTransportBase(_PoolTransportCommon):
    """The sync transport; see ``gonka_pool.httpx2.PoolTransport``."""

    _inner_base = "BaseTransport"

    def handle_request(self, request: Any) -> Any:
        self._check_request(request)
        expires = expiry(self._deadline)
        # Buffered once, so every attempt can resend it and on_request can sign it.
        request.read()

        def send(idx: int, endpoint: GonkaEndpoint) -> Any:
            attempt = self._request_for(request, endpoint, expires)
            if self._on_request is not None:
                self._on_request(attempt, endpoint)
            response = self._transport.handle_request(attempt)
            self._clean_response(response, attempt, endpoint)
            if self._read_body_statuses and self._body_to_judge(response):
                response.read()
            return response

        return run(self._plan(expires), send, discard=_close)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Self:
        self._transport.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._transport.__exit__(*exc_info)


class AsyncPoolTransportBase(_PoolTransportCommon):
    """The async transport; see ``gonka_pool.httpx2.AsyncPoolTransport``.

    ``on_request`` may be a plain function or a coroutine function.
    """

    _inner_base = "AsyncBaseTransport"

    async def handle_async_request(self, request: Any) -> Any:
        self._check_request(request)
        expires = expiry(self._deadline)
        await request.aread()

        async def send(idx: int, endpoint: GonkaEndpoint) -> Any:
            attempt = self._request_for(request, endpoint, expires)
            if self._on_request is not None:
                signed = self._on_request(attempt, endpoint)
                if inspect.isawaitable(signed):
                    await signed
            response = await self._transport.handle_async_request(attempt)
            self._clean_response(response, attempt, endpoint)
            if self._read_body_statuses and self._body_to_judge(response):
                await response.aread()
            return response

        return await arun(self._plan(expires), send, discard=_aclose)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        await self._transport.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._transport.__aexit__(*exc_info)


# A response the plan moved past is closed unread: its lease is already settled, and
# reading an error body from a failing node could itself stall.
def _close(response: Any) -> None:
    response.close()


async def _aclose(response: Any) -> None:
    await response.aclose()
