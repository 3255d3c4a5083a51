"""The one-call clients: ``openai_client()`` / ``async_openai_client()`` put
signing, discovery, refreshing and the judge together, reading gonka-openai's
environment variables.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from .._endpoint import GonkaEndpoint
from ._addresses import allow_private_from
from ._discovery import pool_from_gonka
from ._refresh import DEFAULT_REFRESH_INTERVAL, Refresher
from ._signing import Signer

ENV_PRIVATE_KEY = "GONKA_PRIVATE_KEY"
ENV_ADDRESS = "GONKA_ADDRESS"
ENV_ENDPOINTS = "GONKA_ENDPOINTS"
ENV_SOURCE_URL = "GONKA_SOURCE_URL"
# The whole request's deadline unless the caller gives one (None: none).  Without
# it, a request over stalling nodes could take three of the SDK's 600 s timeouts;
# 300 s still leaves a long non-streamed answer time to finish.  No attempt starts
# after it, and each attempt's timeouts are cut to the time left.
DEFAULT_DEADLINE = 300.0


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
) -> tuple[Any, Signer, Refresher | None, bool]:
    """The pool, the signer, the refresher (discovered nodes only) and whether the
    transport may connect to private addresses."""
    from .. import EndpointPool

    try:
        if "on_request" in options:
            raise TypeError(f"gonka_pool.gonka.{builder}() signs every attempt itself; on_request is taken")
        if private_key is None:
            private_key = os.environ.get(ENV_PRIVATE_KEY) or None
            if private_key is None:
                raise ValueError(f"{builder}() needs private_key= or {ENV_PRIVATE_KEY}")
        signer = Signer(private_key, requester_address=os.environ.get(ENV_ADDRESS) or None)
    finally:
        # In no frame that an error passes through, as in Signer: error reporters
        # record frames' locals, and the key may have come from the environment.
        del private_key
    pool_options = options.pop("pool_options", None) or {}
    discovery_timeout = options.pop("discovery_timeout", 10.0)
    refresh_interval = options.pop("refresh_interval", DEFAULT_REFRESH_INTERVAL)
    allow_private = options.pop("allow_private", None)
    # Nodes the user names are where the user sends requests; only discovered ones
    # are a third party's word, checked unless the user allows private addresses.
    named = True if allow_private is None else allow_private_from(allow_private)
    if endpoints is not None:
        return EndpointPool(_endpoints_from(endpoints), **pool_options), signer, None, named
    if source_url is None and os.environ.get(ENV_ENDPOINTS):
        return (EndpointPool(_endpoints_from(os.environ[ENV_ENDPOINTS]), **pool_options), signer, None, named)
    source_url = source_url or os.environ.get(ENV_SOURCE_URL) or None
    if source_url is None:
        raise ValueError(
            f"{builder}() needs endpoints=, source_url=, or {ENV_ENDPOINTS} / {ENV_SOURCE_URL} in the environment"
        )
    allow_private = allow_private_from(allow_private)
    pool = pool_from_gonka(source_url, timeout=discovery_timeout, allow_private=allow_private, **pool_options)
    refresher = (
        None
        if refresh_interval is None
        else Refresher(
            pool, source_url, interval=refresh_interval, timeout=discovery_timeout, allow_private=allow_private
        )
    )
    return pool, signer, refresher, allow_private


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
    ``discovery_timeout=`` to ``discover`` (a bound on the whole discovery); when
    the nodes were discovered, a ``Refresher`` re-discovers every
    ``refresh_interval=`` seconds (600; None for never).  Discovered nodes on this
    machine or a private network, by their URL or by what their name resolves to
    when connecting, are refused unless ``allow_private=True`` (None:
    ``GONKA_ALLOW_PRIVATE=1``); nodes named in ``endpoints`` or
    ``GONKA_ENDPOINTS`` are the user's own choice and not checked, unless
    ``allow_private=False``.  The rest go as to ``gonka_pool.openai.client``
    (transport keywords such as ``deadline``, ``attempts``; SDK keywords such as
    ``timeout``), but a request's ``deadline`` is 300 s unless given
    (``deadline=None``: none).  A request tries at most 8 nodes unless
    ``attempts=`` says otherwise.
    ``client.gonka_pool`` is the pool, ``client.gonka_refresher`` the refresher
    (or None); it stops when the client is garbage-collected, or at exit.
    """
    try:
        return _openai_client(private_key, source_url, endpoints, openai_kwargs, asynchronous=False)
    finally:
        del private_key  # see _pool_and_signer


def async_openai_client(
    private_key: str | bytes | None = None,
    *,
    source_url: str | None = None,
    endpoints: object = None,
    **openai_kwargs: Any,
) -> Any:
    """The ``openai.AsyncOpenAI`` ``openai_client`` builds (discovery, when asked
    for, runs here, before the client exists)."""
    try:
        return _openai_client(private_key, source_url, endpoints, openai_kwargs, asynchronous=True)
    finally:
        del private_key  # see _pool_and_signer


def _openai_client(
    private_key: str | bytes | None,
    source_url: str | None,
    endpoints: object,
    openai_kwargs: dict[str, Any],
    *,
    asynchronous: bool,
) -> Any:
    """``openai_client`` or ``async_openai_client``: the pool, the signer and the
    client over a Gonka transport."""
    from ..openai import _build
    from ._judge import AsyncGonkaPoolTransport, GonkaPoolTransport

    caller = "async_openai_client" if asynchronous else "openai_client"
    try:
        pool, signer, refresher, allow_private = _pool_and_signer(
            private_key, source_url, endpoints, openai_kwargs, caller
        )
    finally:
        del private_key  # see _pool_and_signer
    openai_kwargs.setdefault("deadline", DEFAULT_DEADLINE)
    transport = functools.partial(
        AsyncGonkaPoolTransport if asynchronous else GonkaPoolTransport, allow_private=allow_private
    )
    built = _build(
        pool,
        {**openai_kwargs, "on_request": signer},
        "async_client" if asynchronous else "client",
        transport,
        asynchronous=asynchronous,
    )
    return _attach(built, pool, refresher)
