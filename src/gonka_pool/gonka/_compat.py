"""gonka-openai 0.2.6's ``GonkaOpenAI``, as a drop-in: the same constructor
arguments and environment variables, with the pool underneath.

    from gonka_pool.gonka import GonkaOpenAI      # was: from gonka_openai import GonkaOpenAI

Where gonka-openai picks one node at construction and sends every request there,
signed for that node, this client sends each request through an
``EndpointPool`` of every node (signing each attempt afresh for the node it goes
to, failing over, re-discovering every 10 minutes).  What gonka-openai decides
per client is decided here per request, by the same rules:

- the nodes: ``endpoints=`` (gonka-openai's ``Endpoint`` objects, anything with
  ``url`` and ``address``, ``GonkaEndpoint`` or ``"url;address"``), else
  ``GONKA_ENDPOINTS``, else discovery from ``source_url=``, else from
  ``GONKA_SOURCE_URL`` (an http(s) node, or a ``file://`` participants answer);
  ``GONKA_VERIFY_PROOF=1`` checks the answer's ICS23 proof first;
- ``endpoint_selection_strategy(nodes)`` chooses the node each request tries
  first, among the nodes not cooling down; failover continues over the others;
- unless the nodes were given as ``endpoints=``, each node is asked for its
  delegate transfer agents (``/v1/identity``): its requests go to its delegate's
  URL, signed for the node's own address;
- ``http_client=`` (an httpx2 or httpx client) is wrapped, not replaced: the pool
  is mounted on it for the placeholder origin, and the attempts go out through
  the client's own transports (its proxies, TLS, limits);
- ``with_options()`` / ``copy()`` return clients over the same pool and signer.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx2 as _httpx2
import openai as _openai

from .. import httpx2 as _pool_httpx2
from .._endpoint import GonkaEndpoint
from .._failover import failover_plan
from .._transport import DEFAULT_ORIGIN, _check_origin, _origin_key
from ..openai import TRANSPORT_OPTIONS, _AsyncOpenAI, _OpenAI
from ._addresses import allow_private_from
from ._clients import DEFAULT_DEADLINE, ENV_ADDRESS, ENV_ENDPOINTS, ENV_PRIVATE_KEY, ENV_SOURCE_URL
from ._discovery import pool_weights
from ._judge import _GonkaJudge
from ._refresh import DEFAULT_REFRESH_INTERVAL, Refresher
from ._signing import Signer
from ._sources import (
    FILE_SCHEME,
    Delegates,
    Endpoint,
    check_source,
    participants_from,
    verify_proof_from_env,
)

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("gonka_pool")

# What gonka-openai sends as the SDK's key unless given (the signature replaces the
# Authorization header anyway; never OPENAI_API_KEY, which is for OpenAI).
DEFAULT_API_KEY = "mock-api-key"
# Strategy views built for discovered nodes, kept until the membership has moved on.
_MAX_SHOWN = 4096

# The network a copy() shares with the client it copies: the SDK's copy() calls the
# class with the SDK's own arguments only, so the rest travels beside them.
_COPYING: contextvars.ContextVar[_Network | None] = contextvars.ContextVar("gonka_pool_copying", default=None)


def _as_endpoint(entry: object) -> GonkaEndpoint:
    if isinstance(entry, GonkaEndpoint):
        return entry
    if isinstance(entry, str):
        return GonkaEndpoint.parse(entry)
    url = getattr(entry, "url", None)
    if url is None:
        url = getattr(entry, "base_url", None)
    address = getattr(entry, "address", None)
    if url is None or address is None:
        raise TypeError(
            "endpoints entries must be gonka-openai Endpoints (or anything with url and address), "
            f"GonkaEndpoints or 'url;address' strings, not {type(entry).__name__}"
        )
    return GonkaEndpoint(url, address)


class _Refresher(Refresher):
    """The ``Refresher`` of a ``GonkaOpenAI``: discovers as it did (the proof
    checked when asked), then asks the nodes for their delegates again."""

    def __init__(
        self, pool: Any, source_url: str, *, interval: float, timeout: float, verify_proof: bool, allow_private: bool
    ) -> None:
        self.verify_proof = verify_proof
        self.delegates = Delegates(allow_private=allow_private)
        super().__init__(pool, source_url, interval=interval, timeout=timeout, allow_private=allow_private)

    def _participants(self) -> list[Any]:
        participants = participants_from(
            self.source_url,
            verify_proof=self.verify_proof,
            timeout=self._discovery["timeout"],
            allow_private=self._discovery["allow_private"],
        )
        # Before the update, and outside the lock that close() takes: a node's
        # delegate is known before the node serves, and closing never waits on
        # the nodes' identity lookups.
        self.delegates.learn([p.endpoint for p in participants])
        return participants


class _Network:
    """What a client and its copies share: the pool, the signer, the refresher,
    the delegates, the strategy, and the transport's options."""

    def __init__(
        self,
        pool: Any,
        signer: Signer,
        refresher: Refresher | None,
        delegates: Delegates,
        strategy: Callable[[list[Any]], Any] | None,
        listed: tuple[Any, ...] | None,
        transport_options: dict[str, Any],
    ) -> None:
        self.pool = pool
        self.signer = signer
        self.refresher = refresher
        self.delegates = delegates
        self.strategy = strategy
        self.listed = listed  # the caller's own endpoints= objects, in pool order
        self.transport_options = transport_options
        self.origin = _check_origin(transport_options.get("origin", DEFAULT_ORIGIN))[0]
        self._shown: dict[GonkaEndpoint, Endpoint] = {}
        self._warned = False
        if refresher is not None:
            # The refresher's thread holds the pool, not the clients: once the last
            # client (and copy) is gone, stop it, without waiting.
            weakref.finalize(self, refresher._stop.set)

    def shown(self, index: int, endpoint: GonkaEndpoint) -> Any:
        """The node as the strategy sees it: the caller's object, else an ``Endpoint``."""
        if self.listed is not None and index < len(self.listed):
            return self.listed[index]
        view = self._shown.get(endpoint)
        if view is None:
            if len(self._shown) > _MAX_SHOWN:
                self._shown.clear()
            view = self._shown[endpoint] = Endpoint(url=endpoint.base_url, address=endpoint.address)
        return view

    def first_choice(self) -> int | None:
        """The pool index of the node the strategy chooses among those not cooling
        down (all of them when every one is), or None: the pool's own pick."""
        strategy = self.strategy
        if strategy is None:
            return None
        states = self.pool.snapshot()
        indexes = [i for i, state in enumerate(states) if state.available] or list(range(len(states)))
        shown = [self.shown(i, states[i].endpoint) for i in indexes]
        chosen = strategy(shown)
        for index, candidate in zip(indexes, shown, strict=True):
            if candidate is chosen:
                return index
        url = getattr(chosen, "url", None) or getattr(chosen, "base_url", None)
        address = getattr(chosen, "address", None)
        for index in indexes:
            endpoint = states[index].endpoint
            if endpoint.base_url == url and endpoint.address == address:
                return index
        if not self._warned:
            self._warned = True
            log.warning(
                "endpoint_selection_strategy chose %r, which is not one of the nodes it was shown; "
                "the pool picks instead (logged once)",
                chosen,
            )
        return None


class _FirstPick:
    """The pool as one request's failover loop sees it: its first ``acquire()``
    takes the strategy's node, the rest are the pool's own."""

    __slots__ = ("_pool", "_index")

    def __init__(self, pool: Any, index: int) -> None:
        self._pool = pool
        self._index: int | None = index

    def acquire(self) -> Any:
        index, self._index = self._index, None
        if index is not None:
            try:
                return self._pool._acquire_index(index)
            except IndexError:  # an update() shrank the membership meanwhile
                pass
        return self._pool.acquire()

    def _acquire_index(self, index: int) -> Any:
        return self._pool._acquire_index(index)

    @property
    def endpoints(self) -> Any:
        return self._pool.endpoints

    def __len__(self) -> int:
        return len(self._pool)


class _Routing(_GonkaJudge):
    """The transport's part: the strategy's first pick, and each participant's
    requests sent to its delegate (signed, by ``on_request``, for the participant)."""

    _network: _Network

    def _plan(self, expires: float | None) -> Any:
        index = self._network.first_choice()
        pool = self._pool if index is None else _FirstPick(self._pool, index)  # type: ignore[attr-defined]
        return failover_plan(pool, self._attempts, self._judge_error, self._judge_response, expires)  # type: ignore[attr-defined]

    def _request_for(self, request: Any, endpoint: GonkaEndpoint, expires: float | None) -> Any:
        return super()._request_for(request, self._network.delegates.route(endpoint), expires)  # type: ignore[misc]

    def _clean_response(self, response: Any, attempt: Any, endpoint: GonkaEndpoint) -> None:
        super()._clean_response(response, attempt, self._network.delegates.route(endpoint))  # type: ignore[misc]


class _Transport(_Routing, _pool_httpx2.PoolTransport):
    pass


class _AsyncTransport(_Routing, _pool_httpx2.AsyncPoolTransport):
    pass


def _legacy_transport_class(asynchronous: bool) -> type:
    """The same transports for a caller's httpx 0.28 client (openai accepts those too)."""
    from .. import httpx as pool_httpx

    base = pool_httpx.AsyncPoolTransport if asynchronous else pool_httpx.PoolTransport
    return type("_LegacyAsyncTransport" if asynchronous else "_LegacyTransport", (_Routing, base), {})


class _ClientsOwnTransports:
    """The inner transport of a pool wrapped around a caller's client: each
    attempt goes out through the transport that client would use for the node's
    URL (its proxies, TLS settings, limits).  The client closes those itself."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def handle_request(self, request: Any) -> Any:
        return self._client._transport_for_url(request.url).handle_request(request)

    async def handle_async_request(self, request: Any) -> Any:
        return await self._client._transport_for_url(request.url).handle_async_request(request)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def __enter__(self) -> _ClientsOwnTransports:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    async def __aenter__(self) -> _ClientsOwnTransports:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


def _transport_of(network: _Network, inner: Any, transport_class: type) -> Any:
    options = {**network.transport_options, "on_request": network.signer}
    if inner is not None:
        options["transport"] = inner
    transport = transport_class(network.pool, **options)
    transport._network = network
    return transport


def _http_client(network: _Network, given: Any, asynchronous: bool) -> Any:
    """The SDK's http_client: a new one over the pool, or ``given`` with the pool
    mounted on it for the origin (kept as it is when it carries this pool already)."""
    if given is None:
        inner = network.transport_options.get("transport")
        if inner is None:
            inner = (_httpx2.AsyncHTTPTransport if asynchronous else _httpx2.HTTPTransport)(
                limits=_openai.DEFAULT_CONNECTION_LIMITS
            )
        transport = _transport_of(network, inner, _AsyncTransport if asynchronous else _Transport)
        return (_httpx2.AsyncClient if asynchronous else _httpx2.Client)(
            transport=transport, trust_env=False, follow_redirects=True, timeout=_openai.DEFAULT_TIMEOUT
        )
    library_name = type(given).__module__.partition(".")[0]
    if library_name == "httpx2":
        library: Any = _httpx2
    elif library_name == "httpx":
        import httpx as library
    else:
        library = None
    wanted = "AsyncClient" if asynchronous else "Client"
    if library is None or not isinstance(given, getattr(library, wanted)):
        raise TypeError(f"http_client must be an httpx2.{wanted} or httpx.{wanted}, not {type(given).__name__}")
    carried = given._transport_for_url(library.URL(network.origin + "/"))
    if isinstance(carried, _Routing):
        if carried._network is network:
            return given  # a copy() handing on its own client
        raise ValueError("this http_client already carries another Gonka client's pool: give each client its own")
    if "transport" in network.transport_options:
        raise TypeError("pass http_client= or transport=, not both: the pool sends through the client's transports")
    if library is _httpx2:
        transport_class: type = _AsyncTransport if asynchronous else _Transport
    else:
        transport_class = _legacy_transport_class(asynchronous)
    transport = _transport_of(network, _ClientsOwnTransports(given), transport_class)
    # The client's own routing table (httpx's private _mounts, sorted most
    # specific first as the client sorts it): the pool answers for its origin only.
    pattern = importlib.import_module(library.__name__ + "._utils").URLPattern(network.origin)
    given._mounts = dict(sorted({**given._mounts, pattern: transport}.items()))
    return given


def _check_base_url(base_url: object, origin: str) -> None:
    if base_url is None or isinstance(base_url, _openai.NotGiven):
        return
    url = _httpx2.URL(str(base_url))
    if _origin_key(url.scheme, url.host, url.port) != _check_origin(origin)[1] or url.path not in ("", "/"):
        raise TypeError(
            "GonkaOpenAI sends each request to a Gonka node, so base_url is the pool's "
            f"placeholder origin {origin!r}; name the nodes with endpoints= or source_url="
        )


def _network(
    builder: str,
    private_key: str | bytes | None,
    address: str | None,
    endpoints: object,
    strategy: object,
    source_url: str | None,
    options: dict[str, Any],
) -> _Network:
    from .. import EndpointPool

    if "on_request" in options:
        raise TypeError(f"{builder} signs every attempt itself; on_request is taken")
    if strategy is not None and not callable(strategy):
        raise TypeError(f"endpoint_selection_strategy must be callable, not {type(strategy).__name__}")
    try:
        private_key = private_key or os.environ.get(ENV_PRIVATE_KEY) or None
        if private_key is None:
            raise ValueError(f"{builder} needs gonka_private_key= or {ENV_PRIVATE_KEY}")
        signer = Signer(private_key, requester_address=address or os.environ.get(ENV_ADDRESS) or None)
    finally:
        # In no frame an error passes through: error reporters record frames' locals.
        del private_key
    pool_options = options.pop("pool_options", None) or {}
    discovery_timeout = options.pop("discovery_timeout", 10.0)
    refresh_interval = options.pop("refresh_interval", DEFAULT_REFRESH_INTERVAL)
    transport_options = {name: options.pop(name) for name in list(options) if name in TRANSPORT_OPTIONS}
    # As openai_client(): a request ends within DEFAULT_DEADLINE unless told otherwise.
    transport_options.setdefault("deadline", DEFAULT_DEADLINE)
    allow_private = options.pop("allow_private", None)
    # As openai_client(): nodes the user names (endpoints=, GONKA_ENDPOINTS, a
    # file) are where the user sends requests; discovered ones, and every
    # delegate a node names, are a third party's word, checked unless the user
    # allows private addresses (allow_private=True or GONKA_ALLOW_PRIVATE=1).
    checked = allow_private_from(allow_private)
    transport_options["allow_private"] = True if allow_private is None else checked
    delegates = Delegates(allow_private=checked)
    listed: tuple[Any, ...] | None = None
    refresher: Refresher | None = None
    # gonka-openai's order: endpoints=, GONKA_ENDPOINTS, source_url=, GONKA_SOURCE_URL.
    if endpoints:
        if isinstance(endpoints, str):
            entries: list[Any] = [Endpoint.parse(e) for e in endpoints.split(",") if e.strip()]
        elif isinstance(endpoints, Iterable) and not isinstance(endpoints, Mapping):
            entries = list(endpoints)
        else:
            raise TypeError(f"endpoints must be a list of endpoints, not {type(endpoints).__name__}")
        listed = tuple(entries)
        pool = EndpointPool([_as_endpoint(e) for e in entries], **pool_options)
    elif os.environ.get(ENV_ENDPOINTS):
        entries = [Endpoint.parse(e) for e in os.environ[ENV_ENDPOINTS].split(",") if e.strip()]
        pool = EndpointPool([_as_endpoint(e) for e in entries], **pool_options)
        delegates.learn(pool.endpoints)
    else:
        source = source_url or os.environ.get(ENV_SOURCE_URL) or None
        if source is None:
            raise ValueError(
                f"{builder} needs endpoints=, {ENV_ENDPOINTS}, source_url= or {ENV_SOURCE_URL} (gonka-openai's order)"
            )
        check_source(source)
        verify_proof = verify_proof_from_env()
        participants = participants_from(
            source, verify_proof=verify_proof, timeout=discovery_timeout, allow_private=checked
        )
        if not source.startswith(FILE_SCHEME):
            transport_options["allow_private"] = checked
        pool_options.setdefault("weights", pool_weights(participants))
        pool = EndpointPool([p.endpoint for p in participants], **pool_options)
        if refresh_interval is not None and not source.startswith(FILE_SCHEME):
            refresher = _Refresher(
                pool,
                source,
                interval=refresh_interval,
                timeout=discovery_timeout,
                verify_proof=verify_proof,
                allow_private=checked,
            )
            delegates = refresher.delegates
        delegates.learn(pool.endpoints)
    return _Network(pool, signer, refresher, delegates, strategy, listed, transport_options)


def _sdk_options(
    builder: str,
    private_key: str | bytes | None,
    gonka: dict[str, Any],
    options: dict[str, Any],
    asynchronous: bool,
) -> tuple[_Network, dict[str, Any]]:
    """The network (new, or the one a copy() hands on) and the SDK's arguments."""
    network = _COPYING.get()
    if network is not None:
        _COPYING.set(None)  # only this construction is the copy
    else:
        network = _network(builder, private_key, options=options, **gonka)
    _check_base_url(options.pop("base_url", None), network.origin)
    options["http_client"] = _http_client(network, options.pop("http_client", None), asynchronous)
    options["base_url"] = network.origin
    options.setdefault("api_key", DEFAULT_API_KEY)
    # The pool fails over across nodes; the SDK's own retries would multiply its attempts.
    options.setdefault("max_retries", 0)
    return network, options


class _GonkaClient:
    """The attributes gonka-openai users read, and what a copy shares."""

    _gonka_network: _Network
    _asynchronous: ClassVar[bool]

    def __init__(
        self,
        *,
        gonka_private_key: str | bytes | None = None,
        gonka_address: str | None = None,
        endpoints: Any = None,
        endpoint_selection_strategy: Callable[[list[Any]], Any] | None = None,
        source_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        gonka = {
            "address": gonka_address,
            "endpoints": endpoints,
            "strategy": endpoint_selection_strategy,
            "source_url": source_url,
        }
        name = f"{type(self).__name__}()"
        try:
            network, options = _sdk_options(name, gonka_private_key, gonka, kwargs, asynchronous=self._asynchronous)
        finally:
            del gonka_private_key
        super().__init__(**options)  # the SDK's client, next in the MRO
        self._gonka_network = network

    @property
    def gonka_address(self) -> str:
        """The requester address sent with every request (``X-Requester-Address``)."""
        return self._gonka_network.signer.address

    @property
    def private_key(self) -> str:
        raise AttributeError(
            "gonka_pool's GonkaOpenAI never exposes the private key (gonka-openai's private_key "
            "property): keep your own reference to it"
        )

    @property
    def gonka_pool(self) -> Any:
        """The ``EndpointPool`` every request goes through."""
        return self._gonka_network.pool

    @property
    def gonka_refresher(self) -> Refresher | None:
        """The refresher re-discovering the nodes, or None (nodes given, or a file)."""
        return self._gonka_network.refresher

    @property
    def gonka_delegates(self) -> dict[GonkaEndpoint, GonkaEndpoint]:
        """The participants that named a delegate transfer agent, and where their
        requests go (the delegate's URL, the participant's address)."""
        return self._gonka_network.delegates.routes

    def copy(self, **options: Any) -> Self:
        """The SDK's ``copy()`` (and ``with_options()``), over the same pool and signer."""
        token = _COPYING.set(self._gonka_network)
        try:
            return super().copy(**options)  # type: ignore[misc]  # the SDK's, next in the MRO
        finally:
            _COPYING.reset(token)

    with_options = copy


class GonkaOpenAI(_GonkaClient, _OpenAI):
    """gonka-openai's ``GonkaOpenAI`` (0.2.6) over the pool: its arguments
    (``gonka_private_key``, ``gonka_address``, ``endpoints``,
    ``endpoint_selection_strategy``, ``source_url``) and environment variables,
    with failover, discovery, refresh and per-attempt signing; see the module.

    Every ``openai.OpenAI`` argument is taken (``base_url`` only as the pool's
    origin); ``max_retries`` is 0 unless given.  Also ``pool_options={...}``
    (``EndpointPool``), ``discovery_timeout=``, ``refresh_interval=`` (600 s;
    None for never) and the transport's keywords (``deadline``, ``attempts``,
    ``cooldown``...), as ``openai_client`` takes them.
    """

    _asynchronous = False


class AsyncGonkaOpenAI(_GonkaClient, _AsyncOpenAI):
    """``GonkaOpenAI`` as an ``openai.AsyncOpenAI`` (gonka-openai has none);
    discovery and the delegates' lookups run in the constructor, before the
    client exists, as in ``GonkaOpenAI``."""

    _asynchronous = True
