"""The refusal judge: how a Gonka node's own refusals are read (403 "Transfer
Agent not allowed" keeps the node out, a 400 for a reused signature or a
timestamp outside the window fails over without marking the node), and the
httpx2 transports that apply it, connecting only to public addresses unless
told otherwise (``_addresses``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from .._failover import PASS, Verdict
from ._addresses import allow_private_from, guard_transport

# The node's own messages (gonka-ai/gonka decentralized-api, post_chat_handler.go).
NOT_ALLOWED = "transfer agent not allowed"
REUSED = "authkey has already been used"
# "Request timestamp is too old", "... is in the future", and the chain's own
# timestamp validation: about the timestamp's age, not the node.  A 400 that names
# the timestamp without one of these words (a malformed header) is the answer.
TIMESTAMP = "timestamp"
TIMESTAMP_AGE_WORDS = ("old", "future", "expired", "advance", "window", "stale")
# Error bodies read to judge them: an echo JSON error is tens of bytes.
MAX_JUDGED_BODY = 4096


def _message(response: Any) -> str:
    try:
        content = response.content
    except Exception:  # noqa: BLE001 - unread (too large or streamed): nothing to judge
        return ""
    return content[:MAX_JUDGED_BODY].decode("utf-8", "replace").lower()


class _GonkaJudge:
    """``_judge_response`` for Gonka nodes, over the transport's own rules; and
    the connect-time check of every node's address."""

    _read_body_statuses: ClassVar[frozenset[int]] = frozenset({400, 403})
    _read_body_limit: ClassVar[int] = MAX_JUDGED_BODY

    def __init__(self, pool: Any, *, allow_private: bool | None = None, **options: Any) -> None:
        super().__init__(pool, **options)  # type: ignore[call-arg]
        self.allow_private = allow_private_from(allow_private)
        if not self.allow_private:
            # The nodes are usually discovery's, a third party's word: a name that
            # resolves to this machine or a private network is refused when the
            # connection is made (a ConnectError: the node cools, the request
            # fails over), whatever discovery saw.
            guard_transport(self._transport)  # type: ignore[attr-defined]

    def _judge_response(self, response: Any) -> Verdict:
        status = response.status_code
        if status == 403 and NOT_ALLOWED in _message(response):
            # Off the chain's allowlist: out until cleared or dropped by the next
            # discovery (which leaves it out of the membership anyway).
            return math.inf, 0.0, "HTTP 403 Transfer Agent not allowed", False
        if status == 400:
            message = _message(response)
            if REUSED in message or (TIMESTAMP in message and any(word in message for word in TIMESTAMP_AGE_WORDS)):
                # Not the node's fault: the next attempt is signed afresh.
                reason = "signature reused" if REUSED in message else "timestamp outside the window"
                return PASS, 0.0, f"HTTP 400 {reason}", False
        return super()._judge_response(response)  # type: ignore[misc]


try:  # the transports need httpx2; signing and discovery do not
    from ..httpx2 import AsyncPoolTransport as _AsyncPoolTransport
    from ..httpx2 import PoolTransport as _PoolTransport
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:

    class GonkaPoolTransport(_GonkaJudge, _PoolTransport):
        """``gonka_pool.httpx2.PoolTransport`` that judges Gonka nodes' refusals
        (see ``_GonkaJudge``); give it ``on_request=Signer(...)``.

        It connects only to public addresses: its inner ``httpx2.HTTPTransport``
        (the default one, or one given without a proxy) resolves each node's name
        and refuses any address on this machine or a private network, unless
        ``allow_private=True`` (None: ``GONKA_ALLOW_PRIVATE=1``).  Another kind of
        inner transport (a proxy's, a custom one) is used as it is."""

    class AsyncGonkaPoolTransport(_GonkaJudge, _AsyncPoolTransport):
        """The async ``GonkaPoolTransport``."""
