"""Discovery: the participants of an epoch as a Gonka node reports them, less
the excluded ones and those off the chain's transfer-agent allowlist; the bounds
on what a source may send; the check that keeps a public source from steering
requests to this machine or a private network; the pool built from them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .._endpoint import GonkaEndpoint, redact

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


def _get_json(url: str, timeout: float) -> Any:
    """GET ``url`` as JSON: the standard library, so discovery needs no HTTP
    client installed; bounded in time and size; no proxy from the environment
    (as the transports use trust_env=False)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "gonka-pool"})
    try:
        with opener.open(request, timeout=timeout) as response:
            data = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        # It holds the response's body; closed here, not left to the collector (3.14
        # warns when it is).
        exc.close()
        raise DiscoveryError(f"GET {url} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise DiscoveryError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
    if len(data) > MAX_RESPONSE_BYTES:
        raise DiscoveryError(f"GET {url} sent more than {MAX_RESPONSE_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
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


def _internal_host(host: str | None) -> bool:
    """Whether ``host`` names this machine or a private network by itself: a
    ``localhost`` name or an IP literal that is not global (loopback, private,
    link-local such as 169.254.169.254, shared, reserved), in any spelling a
    resolver takes (``127.1``, ``2130706433``, ``0x7f000001``, ``::ffff:10.0.0.1``).
    A DNS name is not resolved: what it points at can change after discovery."""
    if not host:
        return False
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        try:  # the forms inet_aton accepts, as getaddrinfo does
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global


def _participant(
    entry: object, excluded: set[str], skips: _Skips, position: int, internal_allowed: bool = True
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
        endpoint = GonkaEndpoint(url, address)
    except (TypeError, ValueError) as exc:
        skips.skip(position, str(exc))
        return None
    if not internal_allowed and _internal_host(urlsplit(url).hostname):
        # A participant is a third party: from a public source it must not steer
        # this server's requests (and signatures) to its own machine, its private
        # network or a cloud metadata address.
        skips.skip(
            position, f"inference_url {redact(url)!r} is on a private network or this machine, and the source is not"
        )
        return None
    weight = entry.get("weight", 0)
    if isinstance(weight, str) and weight.isdigit() and len(weight) <= 30:
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


def _allowed_addresses(root: str, timeout: float) -> frozenset[str] | None:
    """The chain's transfer-agent allowlist, or None when it restricts nothing
    (empty or absent: the node then lets every transfer agent serve)."""
    payload = _get_json(root + PARAMS_PATH, timeout)
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
    source_url: str, *, epoch: str | int = "current", allowlist: bool = True, timeout: float = 10.0
) -> list[Participant]:
    """The active participants of ``epoch`` as ``source_url`` (any Gonka node)
    reports them: ``GET {source_url}/v1/epochs/{epoch}/participants``, less the
    excluded ones and, with ``allowlist``, less those the chain's
    transfer-agent allowlist leaves out (``GET {source_url}/chain-api/...params``).

    Every entry is checked (a string address, an http(s) URL, a non-negative
    integer weight, a list of model names); bad ones are skipped and logged, as
    are nodes on this machine or a private network (``localhost``, ``10.0.0.5``,
    ``169.254.169.254``) unless ``source_url`` is itself on one.
    Raises ``DiscoveryError`` when nothing usable remains or the source cannot be
    read; never returns an empty list.  The ICS23 proof is not checked (as
    gonka-openai by default).
    """
    root = _source_root(source_url)
    if isinstance(epoch, bool) or not (
        epoch == "current" or (type(epoch) is int and epoch >= 0) or (isinstance(epoch, str) and epoch.isdigit())
    ):
        raise ValueError(f"epoch must be 'current' or an epoch number, not {epoch!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    url = root + PARTICIPANTS_PATH.format(epoch=quote(str(epoch), safe=""))
    payload = _get_json(url, timeout)
    if not isinstance(payload, dict):
        raise DiscoveryError(f"{url} did not answer a JSON object")
    active = payload.get("active_participants")
    entries = active.get("participants") if isinstance(active, dict) else None
    if not isinstance(entries, list):
        raise DiscoveryError(f"{url} has no active_participants.participants list")
    if len(entries) > MAX_PARTICIPANTS:
        raise DiscoveryError(f"{url} lists {len(entries)} participants, more than {MAX_PARTICIPANTS}")
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
    skips = _Skips(root)
    found: list[Participant] = []
    seen: set[str] = set()
    # A chain on this machine or a private network (a local testnet) may list nodes
    # there; a public one may not.
    internal_allowed = _internal_host(urlsplit(root).hostname)
    for position, entry in enumerate(entries):
        participant = _participant(entry, excluded, skips, position, internal_allowed)
        if participant is None:
            continue
        if participant.endpoint.address in seen:
            skips.skip(position, "a second entry for the same address")
            continue
        seen.add(participant.endpoint.address)
        found.append(participant)
    skips.summary()
    if allowlist and found:
        allowed = _allowed_addresses(root, timeout)
        if allowed is not None:
            found = [p for p in found if p.endpoint.address in allowed]
            if not found:
                raise DiscoveryError(f"none of the participants {url} lists is on the chain's transfer-agent allowlist")
    if not found:
        raise DiscoveryError(
            f"{url} lists no usable participant "
            f"({len(entries)} entries, {skips.count} skipped, "
            f"{len(excluded)} excluded)"
        )
    return found


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

    participants = discover(source_url, epoch=epoch, allowlist=allowlist, timeout=timeout)
    pool_options.setdefault("weights", pool_weights(participants))
    return pool_class([p.endpoint for p in participants], **pool_options)
