"""Discovery: the participants of an epoch as a Gonka node reports them, less
the excluded ones and those off the chain's transfer-agent allowlist; the bounds
on what a source may send; the check that keeps a source from steering requests
to this machine or a private network (``_addresses``); the pool built from them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .._endpoint import GonkaEndpoint, redact
from ._addresses import ENV_ALLOW_PRIVATE, allow_private_from, ascii_host, host_name_or_literal
from ._addresses import internal_host as _internal_host
from ._fetch import DeadlinePassed, FetchError, TooManyValues, fetch, parse_json

log = logging.getLogger("gonka_pool")


class DiscoveryError(RuntimeError):
    """Discovery found no usable node, or could not read the network's answer."""


@dataclass(frozen=True)
class Participant:
    """One active participant of an epoch: its node, PoC weight and models."""

    endpoint: GonkaEndpoint
    weight: int
    models: tuple[str, ...]


# Bounds on what a source may send: a participants list is tens of KB today.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_PARTICIPANTS = 10_000
MAX_MODELS = 256
MAX_TEXT = 2048  # an address, URL or model name longer than this is refused
# JSON values (objects, arrays, strings, numbers) one answer may build: about 12
# per participant today, 32 per participant at MAX_PARTICIPANTS.  The parse stops
# past it, before the document exists whole: with the body's bound, what one
# answer costs stays under 64 MiB however it nests (test_discovery_trust.py).
MAX_JSON_VALUES = 32 * MAX_PARTICIPANTS
# Skipped entries logged one by one, then counted: a hostile source cannot flood the log.
MAX_LOGGED_SKIPS = 10
PARTICIPANTS_PATH = "/v1/epochs/{epoch}/participants"
PARAMS_PATH = "/chain-api/productscience/inference/inference/params"


def _source_root(source_url: object) -> str:
    if not isinstance(source_url, str):
        raise TypeError(f"source_url must be a str, not {type(source_url).__name__}")
    parts = urlsplit(source_url.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
    ):
        raise ValueError(
            f"source_url must be an http(s) URL of a Gonka node, without "
            f"credentials or query, got {redact(source_url)!r}"
        )
    root = parts.scheme + "://" + parts.netloc + parts.path.rstrip("/")
    # gonka-openai takes the node's root; a /v1 base URL is accepted too.
    return root[:-3] if root.endswith("/v1") else root


def _get_json(url: str, deadline: float) -> Any:
    """GET ``url`` as JSON by ``deadline`` (a ``time.monotonic()`` instant), within
    the bounds above: the one network boundary of discovery (``_fetch``)."""
    try:
        body = fetch(url, deadline, MAX_RESPONSE_BYTES)
    except DeadlinePassed:
        raise DiscoveryError(f"GET {url} did not answer in time") from None
    except FetchError as exc:
        raise DiscoveryError(f"GET {url} {exc}") from None
    try:
        return parse_json(body, MAX_JSON_VALUES)
    except TooManyValues as exc:
        raise DiscoveryError(f"GET {url} sent {exc}") from None
    except ValueError:
        raise DiscoveryError(f"GET {url} did not answer JSON") from None


class _Skips:
    def __init__(self, source: str) -> None:
        self.source = source
        self.count = 0

    def skip(self, position: int, reason: str) -> None:
        self.count += 1
        if self.count <= MAX_LOGGED_SKIPS:
            log.warning("gonka discovery: skipped participant %d from %s: %s", position, self.source, reason)

    def summary(self) -> None:
        if self.count > MAX_LOGGED_SKIPS:
            log.warning("gonka discovery: skipped %d participants from %s in all", self.count, self.source)


def _text(value: object) -> str | None:
    return value if type(value) is str and 0 < len(value) <= MAX_TEXT else None


def _connected_url(url: str) -> str:
    """``url`` with its host as the HTTP client connects to it: a non-ASCII host
    IDNA-mapped to ASCII (``127。0。0。1`` becomes ``127.0.0.1``), so that the pool
    holds, and the check reads, the very host a request goes to."""
    parts = urlsplit(url)
    host = parts.hostname
    if host is None or host.isascii():
        return url
    mapped = ascii_host(host)
    if not host_name_or_literal(mapped):
        raise ValueError(f"host {mapped[:60]!r} is no DNS name or IP address")
    netloc = mapped if parts.port is None else f"{mapped}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def _participant(
    entry: object, excluded: set[str], skips: _Skips, position: int, allow_private: bool
) -> Participant | None:
    if not isinstance(entry, dict):
        skips.skip(position, f"not an object ({type(entry).__name__})")
        return None
    address, url = _text(entry.get("index")), _text(entry.get("inference_url"))
    if address is None or url is None:
        skips.skip(position, "no index (address) or inference_url string")
        return None
    if address in excluded:
        return None  # excluded by the network: not an error
    url = url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    try:
        GonkaEndpoint(url, address)  # the URL as sent, checked before it is mapped
        endpoint = GonkaEndpoint(_connected_url(url), address)
    except (TypeError, ValueError) as exc:
        skips.skip(position, str(exc))
        return None
    if not allow_private and _internal_host(urlsplit(endpoint.base_url).hostname):
        # A participant is a third party: it must not steer this server's requests
        # (and signatures) to its own machine, its private network or a cloud
        # metadata address, wherever the source runs, unless the user says so.
        skips.skip(
            position,
            f"inference_url {redact(url)!r} is on a private network or this machine "
            f"(allow_private=True or {ENV_ALLOW_PRIVATE}=1 allows it)",
        )
        return None
    weight = entry.get("weight", 0)
    # isascii: "²".isdigit() is True, and int("²") raises.
    if isinstance(weight, str) and weight.isascii() and weight.isdigit() and len(weight) <= 30:
        weight = int(weight)  # protobuf JSON sends int64 as a string
    if type(weight) is not int or not 0 <= weight < 1 << 63:
        skips.skip(position, f"weight {redact(str(weight))[:40]!r} is not a non-negative integer")
        return None
    models = entry.get("models") or []
    if not isinstance(models, list) or len(models) > MAX_MODELS:
        skips.skip(position, "models is not a list (of at most 256)")
        return None
    names = tuple(m for m in models if _text(m) is not None)
    return Participant(endpoint, weight, names)


def _allowed_addresses(root: str, deadline: float) -> frozenset[str] | None:
    """The chain's transfer-agent allowlist, or None when it restricts nothing
    (empty or absent: the node then lets every transfer agent serve)."""
    payload = _get_json(root + PARAMS_PATH, deadline)
    params = payload.get("params") if isinstance(payload, dict) else None
    if not isinstance(params, dict):
        raise DiscoveryError(f"{root}{PARAMS_PATH} has no params object")
    access = params.get("transfer_agent_access_params")
    allowed = access.get("allowed_transfer_addresses") if isinstance(access, dict) else None
    if not allowed:
        return None
    if not isinstance(allowed, list) or len(allowed) > MAX_PARTICIPANTS:
        raise DiscoveryError(f"{root}{PARAMS_PATH}: allowed_transfer_addresses is not a list")
    return frozenset(a for a in allowed if _text(a) is not None)


def discover(
    source_url: str,
    *,
    epoch: str | int = "current",
    allowlist: bool = True,
    timeout: float = 10.0,
    allow_private: bool | None = None,
) -> list[Participant]:
    """The active participants of ``epoch`` as ``source_url`` (any Gonka node)
    reports them: ``GET {source_url}/v1/epochs/{epoch}/participants``, less the
    excluded ones and, with ``allowlist``, less those the chain's
    transfer-agent allowlist leaves out (``GET {source_url}/chain-api/...params``).

    Every entry is checked (a string address, an http(s) URL, a non-negative
    integer weight, a list of model names); bad ones are skipped and logged (the
    first ``MAX_LOGGED_SKIPS``, then a count), never aborting the rest, as are nodes
    on this machine or a private network (``localhost``, ``10.0.0.5``,
    ``169.254.169.254``, ``127。0。0。1``, ``[64:ff9b::a9fe:a9fe]``), wherever the
    source runs, unless ``allow_private`` is True (None: ``GONKA_ALLOW_PRIVATE=1``
    says so).  A non-ASCII host is kept IDNA-mapped, as the client connects to it.

    ``timeout`` bounds the whole discovery, both requests from connect to the last
    byte, however slowly the source sends (name resolution aside, which the system
    resolver bounds); no redirect is followed.  Raises ``DiscoveryError`` when
    nothing usable remains or the source cannot be read in time; never returns an
    empty list.  The ICS23 proof is not checked (as gonka-openai by default).
    """
    root = _source_root(source_url)
    if isinstance(epoch, bool) or not (
        epoch == "current" or (type(epoch) is int and epoch >= 0) or (isinstance(epoch, str) and epoch.isdigit())
    ):
        raise ValueError(f"epoch must be 'current' or an epoch number, not {epoch!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    allow_private = allow_private_from(allow_private)
    deadline = time.monotonic() + timeout
    url = root + PARTICIPANTS_PATH.format(epoch=quote(str(epoch), safe=""))
    found, counts = participants_in(_get_json(url, deadline), url, allow_private)
    return usable(found, counts, url, root if allowlist else None, deadline)


def usable(found: list[Participant], counts: str, where: str, root: str | None, deadline: float) -> list[Participant]:
    """``found`` less those off the chain's transfer-agent allowlist (asked of the
    node at ``root`` by ``deadline``; None: not asked); a ``DiscoveryError`` rather
    than an empty list."""
    if root is not None and found:
        allowed = _allowed_addresses(root, deadline)
        if allowed is not None:  # empty: the node lets every transfer agent serve
            found = [p for p in found if p.endpoint.address in allowed]
            if not found:
                raise DiscoveryError(
                    f"none of the participants {where} lists is on the chain's transfer-agent allowlist"
                )
    if not found:
        raise DiscoveryError(f"{where} lists no usable participant ({counts})")
    return found


def participants_in(payload: Any, where: str, allow_private: bool) -> tuple[list[Participant], str]:
    """The usable participants of a participants answer (``discover``'s rules:
    excluded, malformed, private unless ``allow_private``, and repeated entries
    left out, each bad one skipped and counted), and the counts for an error
    when none is; the answer's shape is a ``DiscoveryError``.  ``GonkaOpenAI``'s
    file sources and checked proofs come here with the answer in hand."""
    if not isinstance(payload, dict):
        raise DiscoveryError(f"{where} did not answer a JSON object")
    active = payload.get("active_participants")
    entries = active.get("participants") if isinstance(active, dict) else None
    if not isinstance(entries, list):
        raise DiscoveryError(f"{where} has no active_participants.participants list")
    if len(entries) > MAX_PARTICIPANTS:
        raise DiscoveryError(f"{where} lists {len(entries)} participants, more than {MAX_PARTICIPANTS}")
    excluded_entries = payload.get("excluded_participants") or []
    excluded = (
        {
            e["address"]
            for e in excluded_entries[:MAX_PARTICIPANTS]
            if isinstance(e, dict) and _text(e.get("address")) is not None
        }
        if isinstance(excluded_entries, list)
        else set()
    )
    skips = _Skips(where)
    found: list[Participant] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        try:
            participant = _participant(entry, excluded, skips, position, allow_private)
        except Exception as exc:  # noqa: BLE001 - one hostile entry never aborts the others
            skips.skip(position, f"unreadable ({type(exc).__name__})")
            continue
        if participant is None:
            continue
        if participant.endpoint.address in seen:
            skips.skip(position, "a second entry for the same address")
            continue
        seen.add(participant.endpoint.address)
        found.append(participant)
    skips.summary()
    return found, f"{len(entries)} entries, {skips.count} skipped, {len(excluded)} excluded"


def pool_weights(participants: Iterable[Participant]) -> list[int]:
    """The participants' weights as an ``EndpointPool`` takes them: as they are (a
    pool takes any positive weights, at the network's scale), 0 raised to 1 (a
    participant of weight 0 still serves)."""
    return [max(1, p.weight) for p in participants]


def pool_from_gonka(
    source_url: str,
    *,
    epoch: str | int = "current",
    allowlist: bool = True,
    timeout: float = 10.0,
    allow_private: bool | None = None,
    pool_class: Any = None,
    **pool_options: Any,
) -> Any:
    """An ``EndpointPool`` of the participants ``discover`` finds, weighted by
    their weights (``pool_weights``); ``pool_options`` go to ``EndpointPool``
    (``weights=`` there replaces the discovered ones).  ``pool_class`` builds it
    instead of ``gonka_pool.EndpointPool`` (``EndpointPool.from_gonka`` passes
    ``cls``)."""
    if pool_class is None:
        from .. import EndpointPool as pool_class

    participants = discover(source_url, epoch=epoch, allowlist=allowlist, timeout=timeout, allow_private=allow_private)
    pool_options.setdefault("weights", pool_weights(participants))
    return pool_class([p.endpoint for p in participants], **pool_options)
