"""Failover transports for legacy httpx 0.28 clients (``openai`` accepts them too).

The same ``PoolTransport`` / ``AsyncPoolTransport`` as ``gonka_pool.httpx2``, with
the same arguments and behaviour, over ``httpx.HTTPTransport``:

    import httpx
    from gonka_pool import EndpointPool
    from gonka_pool.httpx import PoolTransport
    client = httpx.Client(transport=PoolTransport(EndpointPool.from_env()), trust_env=False)
    client.post("http://gonka/chat/completions", json=...)   # goes to a node

Install with ``pip install gonka-pool[httpx]``.
"""

from __future__ import annotations

try:
    import httpx as _http  # the top-level httpx package, not this module
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    # Still a ModuleNotFoundError naming the missing package, so that pytest.importorskip
    # and other callers tell an extra not installed from a broken install (which raises as is).
    raise ModuleNotFoundError("gonka_pool.httpx needs httpx: pip install 'gonka-pool[httpx]'", name=exc.name) from exc

from ._transport import (
    DEFAULT_ORIGIN,
    DEFAULT_RETRY_STATUSES,
    AsyncPoolTransportBase,
    PoolTransportBase,
    RoutingError,
)

__all__ = [
    "DEFAULT_ORIGIN",
    "DEFAULT_RETRY_STATUSES",
    "AsyncPoolTransport",
    "PoolTransport",
    "RoutingError",
]


class PoolTransport(PoolTransportBase, _http.BaseTransport):
    """An ``httpx`` transport that fails over across an ``EndpointPool``."""

    _http = _http
    _default_transport = _http.HTTPTransport


class AsyncPoolTransport(AsyncPoolTransportBase, _http.AsyncBaseTransport):
    """The async ``PoolTransport``, for ``httpx.AsyncClient`` and ``openai.AsyncOpenAI``."""

    _http = _http
    _default_transport = _http.AsyncHTTPTransport
