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
- nothing from the environment reaches a node, since nodes are third parties:
  ``api_key`` defaults to a placeholder, never ``OPENAI_API_KEY``; the SDK's
  other environment variables (``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``,
  ``OPENAI_ADMIN_KEY``, ``OPENAI_CUSTOM_HEADERS``, which may carry an
  ``Authorization`` header) are ignored, in copies made by ``with_options`` too;
  pass ``organization=``, ``project=`` or ``default_headers=`` to send them;
- the transport's keywords (``attempts``, ``cooldown``, ``timeout_cooldown``,
  ``retry_statuses``, ``on_request``, ``origin``, ``max_retry_after``, ``deadline``,
  ``transport``) go to ``PoolTransport``; every other keyword to the SDK's client
  (``timeout``, ``default_headers``, ``max_retries``...).

Install with ``pip install gonka-pool[openai]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import httpx2 as _httpx2
    import openai as _openai  # the SDK, not this module
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    # Still a ModuleNotFoundError naming the missing package, so that pytest.importorskip
    # and other callers tell an extra not installed from a broken install (which raises as is).
    raise ModuleNotFoundError(
        "gonka_pool.openai needs the openai SDK: pip install 'gonka-pool[openai]'", name=exc.name
    ) from exc

from .httpx2 import AsyncPoolTransport, PoolTransport

__all__ = ["API_KEY_PLACEHOLDER", "TRANSPORT_OPTIONS", "async_client", "client"]

# What the SDK sends as its bearer token unless the caller gives one.
API_KEY_PLACEHOLDER = "gonka-pool"
TRANSPORT_OPTIONS = frozenset(
    {
        "attempts",
        "cooldown",
        "timeout_cooldown",
        "retry_statuses",
        "on_request",
        "origin",
        "max_retry_after",
        "deadline",
        "transport",
    }
)


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


def _build(
    pool: Any, kwargs: dict[str, Any], builder: str, transport_class: Callable[..., Any], *, asynchronous: bool
) -> Any:
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
        transport=transport, trust_env=False, follow_redirects=True, timeout=_openai.DEFAULT_TIMEOUT
    )
    sdk_client = _AsyncOpenAI if asynchronous else _OpenAI
    return sdk_client(base_url=transport.origin, http_client=http_client, **sdk)


# The SDK fills what the caller leaves out from the environment: OPENAI_ORG_ID and
# OPENAI_PROJECT_ID become headers, OPENAI_CUSTOM_HEADERS adds any header (an
# Authorization with the caller's real key included), and every with_options() copy
# reads them again.  These subclasses keep only what was passed, after each
# construction, copies included (copy() builds self.__class__).  _custom_headers is
# the SDK's private name for the headers it sends; the test that sets every such
# variable and reads the headers a node receives fails if that name ever changes.
def _forget_environment(sdk: Any, given: dict[str, Any]) -> None:
    sdk.organization = given.get("organization")
    sdk.project = given.get("project")
    sdk.admin_api_key = given.get("admin_api_key")
    sdk._custom_headers = dict(given.get("default_headers") or {})
    sdk._ambient_authorizations = frozenset()


class _OpenAI(_openai.OpenAI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _forget_environment(self, kwargs)


class _AsyncOpenAI(_openai.AsyncOpenAI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _forget_environment(self, kwargs)
