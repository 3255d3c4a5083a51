"""A small Gonka network on 127.0.0.1, for tests (the project's and its users') and the demo.

``LocalGonkaNetwork`` holds what the chain would: the requesters' public keys, the
transfer-agent allowlist, the participants of the current epoch (with excluded
and malformed entries when a test asks for them).  Each ``LocalGonkaNode`` is a
transfer agent that checks a chat request the way a real node does
(gonka-ai/gonka ``decentralized-api``, ``post_chat_handler.go``), in its order:

1. its own address on the allowlist (when the allowlist is not empty), else
   403 "Transfer Agent not allowed";
2. an ``Authorization`` header and a known ``X-Requester-Address``, else 401;
3. the signature: low-S secp256k1 over ``hex(sha256(body)) + X-Timestamp +
   <this node's address>`` by the requester's key, else 401;
4. the timestamp within ``window_s`` of the node's clock (``clock_offset_ns``
   models a chain that lags), else 400 "Request timestamp is too old" / "... in
   the future";
5. the signature not seen before, else 400 "AuthKey has already been used for a
   transfer request";
6. capacity (``at_capacity``), else 429 "Transfer Agent capacity reached. Try
   another TA from <url>/v1/epochs/current/participants".

Then it answers "hello from <name>".  Every node also serves the network's
``/v1/epochs/current/participants``, the chain params
(``/chain-api/productscience/inference/inference/params``) and, when its
``delegate_ta`` is set, ``/v1/identity`` naming its delegate transfer agents
(``{"data": {"delegate_ta": {url: address}}}``, as gonka-openai reads it).  A
delegate is a node added with ``listed=False`` and ``delegate_for=`` the
participant it serves: it checks signatures made for that participant's address.  Errors are echo's
JSON, ``{"message": "..."}``.  Standard library only, except the signature check,
which uses ``gonka_pool.gonka.verify_signature`` (the ``ecdsa`` package of the
``[gonka]`` extra): a curve is not written by hand here either.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LocalGonkaNetwork", "LocalGonkaNode"]

PARTICIPANTS_PATH = "/v1/epochs/current/participants"
PARAMS_PATH = "/chain-api/productscience/inference/inference/params"
IDENTITY_PATH = "/v1/identity"
CHAT_PATH = "/v1/chat/completions"


class LocalGonkaNetwork:
    """The chain's view: accounts, allowlist, epoch participants; and its nodes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.public_keys: dict[str, bytes] = {}  # requester address -> compressed key
        self.allowlist: list[str] = []  # empty: every transfer agent allowed
        self.nodes: list[LocalGonkaNode] = []
        self.excluded: list[str] = []  # addresses in excluded_participants
        self.extra_entries: list[Any] = []  # raw entries appended (malformed ones)
        self.participants_override: Any = None  # a whole payload to serve instead
        self.epoch_id = 1

    def register(self, signer: Any) -> None:
        """Make ``signer``'s account known to the chain (its public key)."""
        with self._lock:
            self.public_keys[signer.address] = signer.public_key

    def add_node(
        self,
        name: str,
        address: str,
        *,
        weight: int = 10,
        models: tuple[str, ...] = ("local",),
        listed: bool = True,
        delegate_for: str | None = None,
    ) -> LocalGonkaNode:
        """A new node of this network (listed among the participants unless
        ``listed=False``: a delegate transfer agent, which checks signatures made
        for ``delegate_for``); started with the network, or by its own
        ``start()`` once the network runs."""
        node = LocalGonkaNode(self, name, address, weight=weight, models=models, delegate_for=delegate_for)
        node.listed = listed
        self.nodes.append(node)
        return node

    def start(self) -> LocalGonkaNetwork:
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalGonkaNetwork:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def source_url(self) -> str:
        """A node's root URL, as gonka-openai's GONKA_SOURCE_URL takes it."""
        return self.nodes[0].root_url

    def participants_payload(self) -> Any:
        if self.participants_override is not None:
            return self.participants_override
        entries: list[Any] = [
            {
                "index": node.address,
                "validator_key": base64.b64encode(bytes(32)).decode(),
                "weight": node.weight,
                "inference_url": node.root_url,  # no /v1, as the chain stores it
                "models": list(node.models),
                "seed": None,
            }
            for node in self.nodes
            if node.listed
        ]
        entries.extend(self.extra_entries)
        return {
            "active_participants": {"participants": entries, "epoch_id": self.epoch_id},
            "addresses": [node.address for node in self.nodes if node.listed],
            "excluded_participants": [{"address": a, "reason": "test"} for a in self.excluded],
            "block": {"app_hash": ""},
        }

    def params_payload(self) -> Any:
        return {"params": {"transfer_agent_access_params": {"allowed_transfer_addresses": list(self.allowlist)}}}


class LocalGonkaNode:
    """One transfer agent of a ``LocalGonkaNetwork``."""

    def __init__(
        self,
        network: LocalGonkaNetwork,
        name: str,
        address: str,
        *,
        weight: int = 10,
        models: tuple[str, ...] = ("local",),
        window_s: float = 10.0,
        delegate_for: str | None = None,
    ) -> None:
        self.network = network
        self.name = name
        self.address = address
        self.weight = weight
        self.models = models
        self.window_s = window_s
        self.listed = True  # among the epoch's participants
        self.delegate_for = delegate_for  # the participant whose requests it serves as delegate
        # What /v1/identity names as this node's delegate transfer agents
        # ({url: address}); None: no such route (404), as nodes before delegates.
        self.delegate_ta: dict[str, str] | None = None
        self.clock_offset_ns = 0  # the node's (chain's) clock minus the wall clock
        self.at_capacity = False
        self.port = 0
        self._lock = threading.Lock()
        self._used: set[str] = set()
        self.statuses: Counter[int] = Counter()
        self.refusals: Counter[str] = Counter()
        self.served = 0
        # (lower-case headers, body) of every POST it read, in order.
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The node's base URL, as a ``GonkaEndpoint`` takes it."""
        return self.root_url + "/v1"

    def reset(self) -> None:
        """Clear the counters (not the behaviour: ``at_capacity``, the clock)."""
        with self._lock:
            self.statuses.clear()
            self.refusals.clear()
            self.served = 0
            self.requests.clear()

    def start(self) -> LocalGonkaNode:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.node = self
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=f"LocalGonkaNode {self.name}", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __repr__(self) -> str:
        return f"<LocalGonkaNode {self.name} {self.address} {self.url}>"

    def check(self, headers: Any, body: bytes) -> tuple[int, str] | None:
        """The refusal a real node gives this request, or None to serve it."""
        from ..gonka import verify_signature

        network = self.network
        if network.allowlist and self.address not in network.allowlist:
            return 403, "Transfer Agent not allowed"
        signature = headers.get("Authorization") or ""
        requester = headers.get("X-Requester-Address") or ""
        if not signature:
            return 401, "Authorization is required"
        public_key = network.public_keys.get(requester)
        if public_key is None:
            return 401, f"unknown requester {requester[:64]}"
        try:
            timestamp = int(headers.get("X-Timestamp") or "")
        except ValueError:
            return 400, "X-Timestamp must be an integer"
        signed_for = self.delegate_for or self.address
        if not verify_signature(public_key, body, timestamp, signed_for, signature):
            return 401, "Unable to validate request against PubKey:invalid signature"
        offset = time.time_ns() + self.clock_offset_ns - timestamp
        window = int(self.window_s * 1e9)
        if offset > window:
            return 400, "Request timestamp is too old"
        if offset < -window:
            return 400, "Request timestamp is in the future"
        with self._lock:
            if signature in self._used:
                return 400, "AuthKey has already been used for a transfer request"
            self._used.add(signature)
        if self.at_capacity:
            return 429, (f"Transfer Agent capacity reached. Try another TA from {self.root_url}{PARTICIPANTS_PATH}")
        return None

    def _record(self, status: int, refusal: str | None = None) -> None:
        with self._lock:
            self.statuses[status] += 1
            if refusal is not None:
                self.refusals[refusal] += 1
            elif status == 200:
                self.served += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    node: LocalGonkaNode


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def do_GET(self) -> None:
        self._body()
        path = self.path.partition("?")[0]
        network = self.server.node.network
        if path == PARTICIPANTS_PATH:
            self._json(200, network.participants_payload())
        elif path == PARAMS_PATH:
            self._json(200, network.params_payload())
        elif path == IDENTITY_PATH and self.server.node.delegate_ta is not None:
            node = self.server.node
            self._json(200, {"data": {"address": node.address, "delegate_ta": dict(node.delegate_ta or {})}})
        else:
            self._json(404, {"message": "Not Found"})

    def do_POST(self) -> None:
        node = self.server.node
        body = self._body()
        with node._lock:
            node.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
        if self.path.partition("?")[0] != CHAT_PATH:
            self._json(404, {"message": "Not Found"})
            return
        refusal = node.check(self.headers, body)
        if refusal is not None:
            status, message = refusal
            self._json(status, {"message": message}, refusal=message)
            return
        model = "local"
        try:
            model = str(json.loads(body or b"{}").get("model", model))
        except (ValueError, AttributeError):
            pass
        self._json(
            200,
            {
                "id": "chatcmpl-gonka-local",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"hello from {node.name}"},
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            },
        )

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self, status: int, payload: Any, *, refusal: str | None = None) -> None:
        data = json.dumps(payload).encode()
        if self.command == "POST":  # before the client can read the answer
            self.server.node._record(status, refusal)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
