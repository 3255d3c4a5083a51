"""Speak Gonka: sign every attempt for the node it goes to, discover the network's
nodes, and read the network's own refusals.

    from gonka_pool.gonka import openai_client

    # GONKA_PRIVATE_KEY, and GONKA_SOURCE_URL (discovery) or GONKA_ENDPOINTS
    client = openai_client()
    reply = client.chat.completions.create(model=..., messages=[...])

- ``Signer(private_key)`` signs as gonka-openai's ``gonka_signature`` does, byte
  for byte: secp256k1 ECDSA, RFC 6979 deterministic, low-S, base64 of ``r || s``,
  over ``hex(sha256(body)) + str(timestamp_ns) + transfer_address``.  With
  coincurve (libsecp256k1, which releases the GIL) where it is installed, the
  ``ecdsa`` package otherwise.  Called as ``on_request(request, endpoint)`` it sets
  ``Authorization``, ``X-Requester-Address`` and ``X-Timestamp`` for
  ``endpoint.address`` with a fresh, strictly increasing timestamp.
- ``discover(source_url)`` reads ``/v1/epochs/current/participants`` and the
  chain's transfer-agent allowlist, within one deadline, following no redirect;
  ``pool_from_gonka(source_url)`` builds an ``EndpointPool`` weighted by the
  participants' weights.  Participants on this machine or a private network are
  skipped, and the transports refuse to connect to such an address, unless the
  user allows it: ``allow_private=True`` or ``GONKA_ALLOW_PRIVATE=1``.
- ``GonkaPoolTransport`` / ``AsyncGonkaPoolTransport`` (httpx2) judge the
  network's refusals: 403 "Transfer Agent not allowed" keeps the node out, a 400
  for a reused signature or a timestamp outside the window fails over to a
  freshly signed attempt without marking the node, 429 fails over as usual.
- ``Refresher`` / ``AsyncRefresher`` re-discover every few minutes and
  ``pool.update()`` the membership.
- ``openai_client()`` / ``async_openai_client()`` put it all together, reading
  gonka-openai's environment variables.
- ``GonkaOpenAI`` / ``AsyncGonkaOpenAI`` are gonka-openai's ``GonkaOpenAI``
  as a drop-in (its arguments, variables and precedence; its delegate transfer
  agents, ``file://`` sources and proof check); ``Endpoint`` is its endpoint
  (docs/migrating.md).

Install with ``pip install 'gonka-pool[gonka]'``.

One module per concern: ``_signing`` (the key, the two backends, addresses),
``_discovery`` (participants, the allowlist, the bounds), ``_fetch`` (the one
bounded GET discovery makes), ``_addresses`` (what is this machine or a private
network, at discovery and at connect time), ``_refresh`` (the refreshers),
``_judge`` (the network's refusals and the transports that read them),
``_clients`` (the one-call clients), ``_proof`` (the ICS23 proof check),
``_sources`` (gonka-openai's sources and delegates), ``_compat`` (the drop-in
clients).  This module only gathers their public names.
"""

from __future__ import annotations

from ._addresses import ENV_ALLOW_PRIVATE as ENV_ALLOW_PRIVATE
from ._clients import ENV_ADDRESS as ENV_ADDRESS
from ._clients import ENV_ENDPOINTS as ENV_ENDPOINTS
from ._clients import ENV_PRIVATE_KEY as ENV_PRIVATE_KEY
from ._clients import ENV_SOURCE_URL as ENV_SOURCE_URL
from ._clients import async_openai_client, openai_client
from ._discovery import MAX_JSON_VALUES as MAX_JSON_VALUES
from ._discovery import MAX_LOGGED_SKIPS as MAX_LOGGED_SKIPS
from ._discovery import MAX_MODELS as MAX_MODELS
from ._discovery import MAX_PARTICIPANTS as MAX_PARTICIPANTS
from ._discovery import MAX_RESPONSE_BYTES as MAX_RESPONSE_BYTES
from ._discovery import MAX_TEXT as MAX_TEXT
from ._discovery import PARAMS_PATH as PARAMS_PATH
from ._discovery import PARTICIPANTS_PATH as PARTICIPANTS_PATH
from ._discovery import DiscoveryError, Participant, discover, pool_from_gonka, pool_weights
from ._judge import MAX_JUDGED_BODY as MAX_JUDGED_BODY
from ._judge import NOT_ALLOWED as NOT_ALLOWED
from ._judge import REUSED as REUSED
from ._judge import TIMESTAMP as TIMESTAMP
from ._judge import TIMESTAMP_AGE_WORDS as TIMESTAMP_AGE_WORDS
from ._refresh import CLOSE_SLACK as CLOSE_SLACK
from ._refresh import DEFAULT_REFRESH_INTERVAL as DEFAULT_REFRESH_INTERVAL
from ._refresh import EXIT_WAIT as EXIT_WAIT
from ._refresh import AsyncRefresher, Refresher, refresh
from ._signing import ADDRESS_PREFIX, Signer, verify_signature
from ._signing import BACKENDS as BACKENDS
from ._signing import address_from_public_key as address_from_public_key
from ._sources import ENV_VERIFY_PROOF as ENV_VERIFY_PROOF
from ._sources import Endpoint

__all__ = [
    "ADDRESS_PREFIX",
    "AsyncRefresher",
    "DiscoveryError",
    "Endpoint",
    "Participant",
    "Refresher",
    "Signer",
    "discover",
    "openai_client",
    "async_openai_client",
    "pool_from_gonka",
    "pool_weights",
    "refresh",
    "verify_signature",
]


try:  # the transports need httpx2; signing and discovery do not
    from ._judge import AsyncGonkaPoolTransport, GonkaPoolTransport
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:
    __all__ += ["AsyncGonkaPoolTransport", "GonkaPoolTransport"]

try:  # the drop-in clients need the openai SDK too
    from ._compat import AsyncGonkaOpenAI, GonkaOpenAI
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:
    __all__ += ["AsyncGonkaOpenAI", "GonkaOpenAI"]
