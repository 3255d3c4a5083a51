"""Failover transports for httpx2, the HTTP client under the openai SDK since 3.x.

    import httpx2, openai
    from gonka_pool import EndpointPool
    from gonka_pool.httpx2 import PoolTransport
    pool = EndpointPool.from_env()                      # GONKA_ENDPOINTS
    client = openai.OpenAI(
        base_url="http://gonka",                        # a placeholder: each request goes to a node
        api_key="unused",
        http_client=httpx2.Client(transport=PoolTransport(pool), trust_env=False),
    )

``PoolTransport(pool, *, transport=None, attempts=None, cooldown=30.0,
timeout_cooldown=60.0, retry_statuses=DEFAULT_RETRY_STATUSES, on_request=None)``
sends each request to the pool's next healthy node: the node's scheme, host and
port, and its base path before the request's path (``/chat/completions`` becomes
``https://node/v1/chat/completions`` for a node at ``https://node/v1``).

- ``on_request(request, endpoint)`` is called on every attempt, with the body
  readable as ``request.content``, to add headers for that node (a Gonka signature
  for ``endpoint.address``).  ``AsyncPoolTransport`` also awaits it if it returns an
  awaitable.
- A connection error or any other transport error marks the node for ``cooldown``
  seconds, a timeout for ``timeout_cooldown``, a status in ``retry_statuses`` (429
  and 5xx) for ``cooldown``, or longer where a 429/503 asks so with
  ``Retry-After``; then the next node is tried, at most ``attempts`` in all
  (default ``min(len(pool), 3)``).  Other statuses, 401 included, go back to the
  caller and mark nothing.
- When the attempts run out the last outcome stands: its transport error is
  raised, or its response returned.
- Only the status line and headers decide: once a response is handed back its
  body is the caller's, so a stream never fails over after its first byte.
- ``response.extensions["gonka_endpoint"]`` is the node that answered.
- ``transport`` is the inner transport (default ``httpx2.HTTPTransport()``); give
  it your TLS, limits and proxy settings, since an ``httpx2.Client`` given a
  transport does not configure it.

Install with ``pip install gonka-pool[httpx2]``.
"""

from __future__ import annotations

try:
    import httpx2 as _http
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "gonka_pool.httpx2 needs httpx2: pip install 'gonka-pool[httpx2]'"
    ) from exc

from ._transport import DEFAULT_RETRY_STATUSES, AsyncPoolTransportBase, PoolTransportBase

__all__ = ["DEFAULT_RETRY_STATUSES", "AsyncPoolTransport", "PoolTransport"]


class PoolTransport(PoolTransportBase, _http.BaseTransport):
    """An ``httpx2`` transport that fails over across an ``EndpointPool``."""

    _http = _http
    _default_transport = _http.HTTPTransport


class AsyncPoolTransport(AsyncPoolTransportBase, _http.AsyncBaseTransport):
    """The async ``PoolTransport``, for ``httpx2.AsyncClient`` and ``openai.AsyncOpenAI``."""

    _http = _http
    _default_transport = _http.AsyncHTTPTransport
