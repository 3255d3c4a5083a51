"""Failover transports for httpx2, the HTTP client under the openai SDK since 3.x.

    import httpx2
    from gonka_pool import EndpointPool
    from gonka_pool.httpx2 import PoolTransport
    pool = EndpointPool.from_env()                      # GONKA_ENDPOINTS
    client = httpx2.Client(transport=PoolTransport(pool), trust_env=False)
    client.post("http://gonka/chat/completions", json=...)   # goes to a node

For the openai SDK, ``gonka_pool.openai.client(pool)`` builds this for you.

``PoolTransport(pool, *, transport=None, attempts=None, cooldown=None,
timeout_cooldown=None, retry_statuses=DEFAULT_RETRY_STATUSES, on_request=None,
origin="http://gonka", max_retry_after=300.0, deadline=None)`` sends each request
for ``origin`` to the node ``pool.acquire()`` picks (by the pool's ``balance=``
policy; each attempt's lease is settled when its status line and headers arrive):
the node's scheme, host and port,
and its base path before the request's path (``/chat/completions`` becomes
``https://node/v1/chat/completions`` for a node at ``https://node/v1``).

- A request to any other origin raises ``RoutingError`` and sends nothing; so does
  a path that already begins with the node's base path (a client base URL with a
  path).  To share one client with other APIs, mount the transport:
  ``httpx2.Client(mounts={"http://gonka": PoolTransport(pool)})``.
- ``on_request(request, endpoint)`` is called on every attempt, with the body
  readable as ``request.content``, to add headers for that node (a Gonka signature
  for ``endpoint.address``).  ``AsyncPoolTransport`` also awaits it if it returns an
  awaitable.
- A connection error or any other transport error, a timeout, or a status in
  ``retry_statuses`` (429 and 5xx) marks the node: for the pool's backoff with
  ``cooldown=None`` (the default), else for ``cooldown`` seconds; a timeout for
  ``timeout_cooldown`` when given (never less than ``cooldown``); longer where a
  429/503 asks so with ``Retry-After``, up to ``max_retry_after`` seconds.  A 429
  without ``Retry-After`` (a node at capacity) is load: the node rests 0.25-0.75 s,
  its backoff level untouched (``lease.overloaded()``).  Then
  a node this request has not tried is tried next: with ``attempts=None`` (the
  default) until 8 nodes (or every node) have been tried or three attempts have
  timed out (fast failures do not count against the three), with ``attempts=N`` at
  most N (``len(pool)``: every node); with ``deadline`` seconds,
  none is started after it (each attempt's timeouts are cut to the time left).  Any other
  answer goes back to the caller: a 2xx or 3xx marks its node a success, a 401 or
  other 4xx neither (``lease.answered()``: not the node's fault, nor its speed).
- When the attempts run out the last outcome stands: its transport error is
  raised, or its response returned.
- Only the status line and headers decide: once a response is handed back its
  body is the caller's, so a stream never fails over after its first byte.
- ``Set-Cookie`` never reaches the client; a redirect ``Location`` under the
  answering node's base URL is rewritten to the origin, any other is left alone.
- ``response.extensions["gonka_endpoint"]`` is the node that answered.
- ``transport`` is the inner transport (default ``httpx2.HTTPTransport()``); give
  it your TLS, limits and proxy settings, since an ``httpx2.Client`` given a
  transport does not configure it.

Install with ``pip install gonka-pool[httpx2]``.
"""

from __future__ import annotations

try:
    import httpx2 as _http
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    # Still a ModuleNotFoundError naming the missing package, so that pytest.importorskip
    # and other callers tell an extra not installed from a broken install (which raises as is).
    raise ModuleNotFoundError(
        "gonka_pool.httpx2 needs httpx2: pip install 'gonka-pool[httpx2]'", name=exc.name
    ) from exc

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
    """An ``httpx2`` transport that fails over across an ``EndpointPool``."""

    _http = _http
    _default_transport = _http.HTTPTransport


class AsyncPoolTransport(AsyncPoolTransportBase, _http.AsyncBaseTransport):
    """The async ``PoolTransport``, for ``httpx2.AsyncClient`` and ``openai.AsyncOpenAI``."""

    _http = _http
    _default_transport = _http.AsyncHTTPTransport
