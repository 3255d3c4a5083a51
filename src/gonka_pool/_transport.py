"""Failover transports for the httpx family, written once over its shared transport API.

``gonka_pool.httpx2`` and ``gonka_pool.httpx`` subclass these with their library's
``BaseTransport`` and name the library in ``_http``; httpx2 kept httpx 0.28's
transport API (``Request``, ``Response``, ``handle_request``, the exception tree), so
nothing else differs.  The loop itself is ``_failover.failover_plan``.

Per attempt: the request goes to the selected node (its scheme, host and port, its
base path before the request's path, the ``Host`` header to match), ``on_request``
may add headers for that node, and the inner transport sends it.  The status line
and headers decide: failing over happens before any byte of the body reaches the
caller, never after.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, ClassVar

from ._endpoint import GonkaEndpoint
from ._failover import (
    DEFAULT_COOLDOWN,
    DEFAULT_TIMEOUT_COOLDOWN,
    Verdict,
    arun,
    check_attempts,
    check_cooldown,
    failover_plan,
    retry_after_seconds,
    run,
)

__all__ = ["DEFAULT_RETRY_STATUSES", "AsyncPoolTransportBase", "PoolTransportBase"]

# Too many requests, and every server error: the node's state, not the request's.
# Other 4xx (401, 403, 404, 422...) are the caller's to fix, and go back unmarked;
# the seed marks them too, which would let one bad API key cool the whole pool.
DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})
# Statuses whose Retry-After header lengthens the cooldown (RFC 9110, 6585).
RETRY_AFTER_STATUSES = frozenset({429, 503})
# Where the selected node is put on the response.
ENDPOINT_EXTENSION = "gonka_endpoint"


class _PoolTransportCommon:
    """Configuration and the per-attempt steps shared by the sync and async classes."""

    _http: ClassVar[ModuleType]  # httpx2 or httpx, set by the adapter module
    _default_transport: ClassVar[Callable[[], Any]]

    def __init__(
        self,
        pool: Any,
        *,
        transport: Any = None,
        attempts: int | None = None,
        cooldown: Any = DEFAULT_COOLDOWN,
        timeout_cooldown: Any = DEFAULT_TIMEOUT_COOLDOWN,
        retry_statuses: Iterable[int] = DEFAULT_RETRY_STATUSES,
        on_request: Callable[[Any, GonkaEndpoint], Any] | None = None,
    ) -> None:
        for method in ("next_indexed", "mark_failed", "__len__"):
            if not callable(getattr(pool, method, None)):
                raise TypeError(f"pool must be an EndpointPool, not {type(pool).__name__}")
        if on_request is not None and not callable(on_request):
            raise TypeError(f"on_request must be callable, not {type(on_request).__name__}")
        self._pool = pool
        self._attempts = check_attempts(pool, attempts)
        self._cooldown = check_cooldown("cooldown", cooldown)
        self._timeout_cooldown = check_cooldown("timeout_cooldown", timeout_cooldown)
        self._retry_statuses = _check_statuses(retry_statuses)
        self._on_request = on_request
        self._transport = self._default_transport() if transport is None else transport
        http = self._http
        # The node's fault: it could not be reached, answered garbage, or stalled.
        # Not: a full local connection pool (PoolTimeout; no node was contacted),
        # a request that httpx itself refuses to send, or any non-transport error.
        self._node_errors = (http.TransportError,)
        self._not_node_errors = (http.PoolTimeout, http.LocalProtocolError,
                                 http.UnsupportedProtocol)

    @property
    def pool(self) -> Any:
        return self._pool

    @property
    def attempts(self) -> int:
        return self._attempts

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self._pool!r}, attempts={self._attempts}, "
                f"cooldown={self._cooldown!r}, timeout_cooldown={self._timeout_cooldown!r})")

    def _plan(self):
        return failover_plan(self._pool, self._attempts, self._judge_error, self._judge_response)

    def _judge_error(self, exc: Exception) -> Verdict:
        if not isinstance(exc, self._node_errors) or isinstance(exc, self._not_node_errors):
            return None
        if isinstance(exc, self._http.TimeoutException):
            return self._timeout_cooldown, type(exc).__name__
        return self._cooldown, type(exc).__name__

    def _judge_response(self, response: Any) -> Verdict:
        status = response.status_code
        if status not in self._retry_statuses:
            return None
        cooldown = self._cooldown
        if status in RETRY_AFTER_STATUSES:
            asked = retry_after_seconds(response.headers.get("Retry-After"))
            if asked is not None and asked > cooldown:
                cooldown = asked
        return cooldown, f"HTTP {status}"

    def _request_for(self, request: Any, endpoint: GonkaEndpoint) -> Any:
        """A copy of ``request`` (already read) addressed to ``endpoint``."""
        http = self._http
        # raw_path is the request's path and query, already percent-encoded.
        url = http.URL(endpoint.base_url.rstrip("/") + request.url.raw_path.decode("ascii"))
        headers = request.headers.copy()
        headers["Host"] = url.netloc.decode("ascii")
        attempt = http.Request(request.method, url, headers=headers, stream=request.stream,
                               extensions=request.extensions)
        attempt.read()  # a replayable ByteStream: makes attempt.content readable
        return attempt


def _check_statuses(statuses: object) -> frozenset[int]:
    if isinstance(statuses, (str, bytes)) or not isinstance(statuses, Iterable):
        raise TypeError("retry_statuses must be an iterable of int status codes")
    codes = frozenset(statuses)
    if not all(type(code) is int and 100 <= code <= 599 for code in codes):
        raise ValueError(f"retry_statuses must be HTTP status codes (100-599), got {sorted(codes, key=str)!r}")
    return codes


class PoolTransportBase(_PoolTransportCommon):
    """The sync transport; see ``gonka_pool.httpx2.PoolTransport``."""

    def handle_request(self, request: Any) -> Any:
        # Buffered once, so every attempt can resend it and on_request can sign it.
        request.read()

        def send(idx: int, endpoint: GonkaEndpoint) -> Any:
            attempt = self._request_for(request, endpoint)
            if self._on_request is not None:
                self._on_request(attempt, endpoint)
            response = self._transport.handle_request(attempt)
            response.extensions[ENDPOINT_EXTENSION] = endpoint
            return response

        return run(self._plan(), send, discard=_close)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self):
        self._transport.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._transport.__exit__(*exc_info)


class AsyncPoolTransportBase(_PoolTransportCommon):
    """The async transport; see ``gonka_pool.httpx2.AsyncPoolTransport``.

    ``on_request`` may be a plain function or a coroutine function.
    """

    async def handle_async_request(self, request: Any) -> Any:
        await request.aread()

        async def send(idx: int, endpoint: GonkaEndpoint) -> Any:
            attempt = self._request_for(request, endpoint)
            if self._on_request is not None:
                signed = self._on_request(attempt, endpoint)
                if inspect.isawaitable(signed):
                    await signed
            response = await self._transport.handle_async_request(attempt)
            response.extensions[ENDPOINT_EXTENSION] = endpoint
            return response

        return await arun(self._plan(), send, discard=_aclose)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self):
        await self._transport.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._transport.__aexit__(*exc_info)


# A response the plan moved past is closed unread: its node is already marked, and
# reading an error body from a failing node could itself stall.
def _close(response: Any) -> None:
    response.close()


async def _aclose(response: Any) -> None:
    await response.aclose()
