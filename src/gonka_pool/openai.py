"""The openai SDK over a pool, built the right way: one call.

    from gonka_pool import EndpointPool
    from gonka_pool.openai import client

    openai_client = client(EndpointPool.from_env(), deadline=30.0)
    reply = openai_client.chat.completions.create(model=..., messages=[...])

``client(pool, **kwargs)`` and ``async_client(pool, **kwargs)`` return an
``openai.OpenAI`` / ``openai.AsyncOpenAI`` whose requests go through
``gonka_pool.httpx2.PoolTransport``:

- the base URL is the transport's placeholder origin (``http://gonka``; set
  ``origin=`` to change it), so every request is routed by the pool;
- ``max_retries=0``: the pool fails over across nodes, and the SDK's own retries
  would multiply its attempts (3 x 3 requests against three stalled nodes);
- ``api_key`` defaults to a placeholder, never the environment's
  ``OPENAI_API_KEY``: nodes are third parties;
- the transport's keywords (``attempts``, ``cooldown``, ``timeout_cooldown``,
  ``retry_statuses``, ``on_request``, ``origin``, ``max_retry_after``, ``deadline``,
  ``transport``) go to ``PoolTransport``; every other keyword to the SDK's client
  (``timeout``, ``default_headers``, ``max_retries``...).

Install with ``pip install gonka-pool[openai]``.
"""

from __future__ import annotations

from typing import Any

try:
    import httpx2 as _httpx2
    import openai as _openai  # the SDK, not this module
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "gonka_pool.openai needs the openai SDK: pip install 'gonka-pool[openai]'"
    ) from exc

from .httpx2 import AsyncPoolTransport, PoolTransport

__all__ = ["API_KEY_PLACEHOLDER", "TRANSPORT_OPTIONS", "async_client", "client"]

# What the SDK sends as its bearer token unless the caller gives one.
API_KEY_PLACEHOLDER = "gonka-pool"
TRANSPORT_OPTIONS = frozenset({
    "attempts", "cooldown", "timeout_cooldown", "retry_statuses", "on_request",
    "origin", "max_retry_after", "deadline", "transport",
})


def _split(kwargs: dict[str, Any], builder: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for taken in ("base_url", "http_client"):
        if taken in kwargs:
            hint = "origin=" if taken == "base_url" else "transport= (the inner transport)"
            raise TypeError(f"gonka_pool.openai.{builder}() sets {taken} itself; use {hint}")
    transport = {k: v for k, v in kwargs.items() if k in TRANSPORT_OPTIONS}
    sdk = {k: v for k, v in kwargs.items() if k not in TRANSPORT_OPTIONS}
    sdk.setdefault("max_retries", 0)
    sdk.setdefault("api_key", API_KEY_PLACEHOLDER)
    return transport, sdk


def client(pool: Any, **kwargs: Any) -> _openai.OpenAI:
    """An ``openai.OpenAI`` that fails over across ``pool`` (see the module)."""
    built: _openai.OpenAI = _build(pool, kwargs, "client", PoolTransport, asynchronous=False)
    return built


def async_client(pool: Any, **kwargs: Any) -> _openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` that fails over across ``pool`` (see the module)."""
    built: _openai.AsyncOpenAI = _build(pool, kwargs, "async_client", AsyncPoolTransport, asynchronous=True)
    return built


def _build(pool: Any, kwargs: dict[str, Any], builder: str, transport_class: type,
          *, asynchronous: bool) -> Any:
    """The SDK client over ``transport_class(pool, ...)`` (a ``PoolTransport`` or a
    subclass, such as ``gonka_pool.gonka``'s), with ``kwargs`` split as the module
    says; ``builder`` names the public function in error messages."""
    options, sdk = _split(kwargs, builder)
    if options.get("transport") is None:
        inner = _httpx2.AsyncHTTPTransport if asynchronous else _httpx2.HTTPTransport
        options["transport"] = inner(limits=_openai.DEFAULT_CONNECTION_LIMITS)
    transport = transport_class(pool, **options)
    # Any: the SDK's client class and this one are paired by `asynchronous`, which mypy cannot follow.
    http_client: Any = (_httpx2.AsyncClient if asynchronous else _httpx2.Client)(
        transport=transport, trust_env=False, follow_redirects=True,
        timeout=_openai.DEFAULT_TIMEOUT)
    sdk_client = _openai.AsyncOpenAI if asynchronous else _openai.OpenAI
    return sdk_client(base_url=transport.origin, http_client=http_client, **sdk)
