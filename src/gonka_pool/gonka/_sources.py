"""Where ``GonkaOpenAI`` finds its nodes, as gonka-openai 0.2.6 does: a source
URL (a node's ``http(s)`` root, or a ``file://`` participants answer), the ICS23
proof when ``GONKA_VERIFY_PROOF=1``, and the delegate transfer agents each
participant names at ``/v1/identity``.

An ``http(s)`` source without a proof check is read by ``discover`` itself; a
``file://`` source or a checked proof needs the answer in hand, so it is read
here and its entries go through the same per-entry rule (``_participant``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .._endpoint import GonkaEndpoint, redact
from ._addresses import internal_host as _internal_host
from ._discovery import (
    MAX_RESPONSE_BYTES,
    MAX_TEXT,
    PARTICIPANTS_PATH,
    DiscoveryError,
    Participant,
    _get_json,
    _source_root,
    discover,
    participants_in,
    usable,
)
from ._proof import verify_participants_proof

log = logging.getLogger("gonka_pool")

ENV_VERIFY_PROOF = "GONKA_VERIFY_PROOF"
IDENTITY_PATH = "/v1/identity"
FILE_SCHEME = "file://"
# Delegates read from one node's identity: a node names one or two.
MAX_DELEGATES = 16
# Identity lookups at once, and each one's timeout: a node that lacks the route
# answers 404 at once; one that stalls must not hold the client's construction.
IDENTITY_WORKERS = 16
IDENTITY_TIMEOUT = 5.0


def verify_proof_from_env() -> bool:
    """Whether ``GONKA_VERIFY_PROOF`` asks for the proof check (``"1"``, as in gonka-openai)."""
    return os.environ.get(ENV_VERIFY_PROOF) == "1"


def check_source(source_url: object) -> str:
    """``source_url`` if it is a ``file://`` path or a node's http(s) URL."""
    if isinstance(source_url, str) and source_url.startswith(FILE_SCHEME):
        return source_url
    _source_root(source_url)
    return source_url  # type: ignore[return-value]  # _source_root refused anything but a str


def _read_file(source_url: str) -> Any:
    # As gonka-openai reads it: the rest of the URL is the path, relative to the
    # working directory unless absolute.
    path = os.path.abspath(source_url[len(FILE_SCHEME) :])
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_RESPONSE_BYTES + 1)
    except OSError as exc:
        raise DiscoveryError(f"cannot read {redact(source_url)}: {type(exc).__name__}: {exc.strerror}") from None
    if len(data) > MAX_RESPONSE_BYTES:
        raise DiscoveryError(f"{redact(source_url)} holds more than {MAX_RESPONSE_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise DiscoveryError(f"{redact(source_url)} is not JSON") from None


def participants_from(source_url: str, *, verify_proof: bool, timeout: float, allow_private: bool) -> list[Participant]:
    """The participants ``source_url`` lists: ``discover``'s, from an http(s)
    source; from a ``file://`` answer (the caller's own file, so nodes on this
    machine are allowed; no chain to ask for the allowlist), and with the ICS23
    proof checked first when ``verify_proof``.  Within ``timeout`` for the whole
    of it, as ``discover``.  Raises ``DiscoveryError`` (or its ``ProofError``)
    rather than return nothing."""
    is_file = source_url.startswith(FILE_SCHEME)
    if not is_file and not verify_proof:
        return discover(source_url, timeout=timeout, allow_private=allow_private)
    deadline = time.monotonic() + timeout
    if is_file:
        where = redact(source_url)
        payload = _read_file(source_url)
    else:
        root = _source_root(source_url)
        where = root + PARTICIPANTS_PATH.format(epoch="current")
        payload = _get_json(where, deadline)
    if verify_proof:
        verify_participants_proof(payload)
    found, counts = participants_in(payload, where, is_file or allow_private)
    return usable(found, counts, where, None if is_file else root, deadline)


# -- delegate transfer agents -------------------------------------------------------------


def _with_v1(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _node_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[:-3] if root.endswith("/v1") else root


def delegates_of(
    endpoint: GonkaEndpoint, timeout: float = IDENTITY_TIMEOUT, allow_private: bool = False
) -> list[GonkaEndpoint]:
    """The delegate transfer agents ``endpoint``'s node names at ``/v1/identity``,
    each as an endpoint at the delegate's URL (with ``/v1``) under the
    participant's address, which requests to it are signed for (gonka-openai's
    rule).  Empty when the node names none or cannot say; a delegate on this
    machine or a private network is left out unless ``allow_private`` (a node is
    a third party: where it runs decides nothing, as for discovery)."""
    url = _node_root(endpoint.base_url) + IDENTITY_PATH
    try:
        payload = _get_json(url, time.monotonic() + timeout)
    except DiscoveryError as exc:  # a node from before delegates: 404
        log.debug("gonka identity of %s: %s", redact(endpoint.base_url), exc)
        return []
    data = payload.get("data") if isinstance(payload, dict) else None
    named = data.get("delegate_ta") if isinstance(data, dict) else None
    if not isinstance(named, dict):
        return []
    found: list[GonkaEndpoint] = []
    for delegate_url in list(named)[:MAX_DELEGATES]:
        if type(delegate_url) is not str or not 0 < len(delegate_url) <= MAX_TEXT:
            continue
        try:
            delegate = GonkaEndpoint(_with_v1(delegate_url), endpoint.address)
        except (TypeError, ValueError) as exc:
            log.warning("gonka identity of %s: skipped a delegate: %s", redact(endpoint.base_url), exc)
            continue
        if not allow_private and _internal_host(urlsplit(delegate.base_url).hostname):
            log.warning(
                "gonka identity of %s: skipped delegate %r, on a private network or this machine",
                redact(endpoint.base_url),
                redact(delegate.base_url),
            )
            continue
        found.append(delegate)
    return found


class Delegates:
    """Where each participant's requests go: its delegate transfer agent when its
    node names one, else the participant itself.  ``learn`` asks every node (at
    most ``IDENTITY_WORKERS`` at once); ``route`` is a dictionary read."""

    def __init__(self, timeout: float = IDENTITY_TIMEOUT, allow_private: bool = False) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.timeout = float(timeout)
        self.allow_private = allow_private
        # Replaced whole, never changed in place: readers in any thread see one
        # complete mapping.
        self._routes: dict[GonkaEndpoint, GonkaEndpoint] = {}

    def learn(self, endpoints: Any) -> None:
        unique = list(dict.fromkeys(endpoints))
        if not unique:
            return
        with ThreadPoolExecutor(min(IDENTITY_WORKERS, len(unique)), thread_name_prefix="gonka_pool identity") as pool:
            named = list(pool.map(lambda e: delegates_of(e, self.timeout, self.allow_private), unique))
        # One delegate per participant, chosen at random as gonka-openai chooses
        # among them; the next learn() may choose another.
        self._routes = {e: random.choice(found) for e, found in zip(unique, named, strict=True) if found}

    def route(self, endpoint: GonkaEndpoint) -> GonkaEndpoint:
        return self._routes.get(endpoint, endpoint)

    @property
    def routes(self) -> dict[GonkaEndpoint, GonkaEndpoint]:
        """A copy of the participants that have a delegate, and where they go."""
        return dict(self._routes)


# -- gonka-openai's Endpoint --------------------------------------------------------------


@dataclass
class Endpoint:
    """gonka-openai's ``Endpoint`` (``gonka_openai.utils.Endpoint``), field for
    field: a node's URL, used as given, and its address.  What an
    ``endpoint_selection_strategy`` is shown for nodes that were not given as
    ``endpoints=``, and one of the forms ``endpoints=`` takes."""

    url: str
    address: str

    @classmethod
    def parse(cls, endpoint_str: str) -> Endpoint:
        """``"url;address"``, as gonka-openai parses a ``GONKA_ENDPOINTS`` entry."""
        parts = endpoint_str.split(";", 1)
        if len(parts) != 2:
            raise ValueError("Endpoint must be in the format 'url;address'")
        url, address = parts[0].strip(), parts[1].strip()
        if not address:
            raise ValueError("Transfer address is required and cannot be empty")
        return cls(url=url, address=address)
