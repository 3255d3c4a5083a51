"""A small OpenAI-compatible HTTP node on 127.0.0.1, for tests (the project's and its users') and the demo.

``LocalNode`` answers ``POST /v1/chat/completions`` (plain JSON, or server-sent
events when the body asks for ``"stream": true``) with "hello from <name>", and
can be switched at any time to misbehave the ways real nodes do.  It records every
request it reads.  Standard library only; one thread per connection; HTTP/1.0, so
each connection carries one request and stopping a node really takes it away.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["BEHAVIOURS", "LocalNode", "SeenRequest", "free_port"]

BEHAVIOURS = (
    "ok",  # 200 with a chat completion
    "unavailable",  # 503 with Retry-After: <retry_after>
    "rate-limited",  # 429 with Retry-After: <retry_after>
    "unauthorized",  # 401, as a node does for a bad signature
    "stall",  # reads the request, then answers nothing for stall_seconds
    "broken-stream",  # 200 and the first event of a stream, then hangs up mid-body
    "redirect",  # <redirect_status> with Location: <location>
)


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (a node that refuses at once,
    or where a local server is about to start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SeenRequest:
    """One request as a ``LocalNode`` read it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class LocalNode:
    """One fake inference node; ``behaviour`` may be changed while it runs."""

    def __init__(
        self,
        name: str,
        behaviour: str = "ok",
        *,
        retry_after: int | str = 120,
        stall_seconds: float = 5.0,
        location: str = "/",
        redirect_status: int = 307,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.name = name
        self.behaviour = behaviour
        self.retry_after = retry_after  # sent as is: a hostile node may send anything
        self.stall_seconds = stall_seconds
        self.location = location
        self.redirect_status = redirect_status
        # Extra headers on every response (Set-Cookie, say), repeated names allowed.
        self.headers: list[tuple[str, str]] = list(headers or ())
        self.port = 0  # chosen by the first start(), kept by later ones
        self._lock = threading.Lock()
        self._seen: list[SeenRequest] = []
        self._statuses: Counter[int] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()

    @property
    def behaviour(self) -> str:
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: str) -> None:
        if value not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}, not {value!r}")
        self._behaviour = value

    @property
    def url(self) -> str:
        """The node's base URL, as a ``GonkaEndpoint`` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def seen(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._seen)

    @property
    def statuses(self) -> Counter[int]:
        """How many responses of each status it sent."""
        with self._lock:
            return Counter(self._statuses)

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()
            self._statuses.clear()

    def start(self) -> LocalNode:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.node = self
        self.port = server.server_address[1]
        self._stopping.clear()
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=f"LocalNode {self.name}", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Close the port; a stalled request in flight is released at once."""
        server, self._server = self._server, None
        if server is not None:
            self._stopping.set()
            server.shutdown()
            server.server_close()

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<LocalNode {self.name} {self.url} {self.behaviour} {state}>"

    def _record(self, seen: SeenRequest | None = None, status: int | None = None) -> None:
        with self._lock:
            if seen is not None:
                self._seen.append(seen)
            if status is not None:
                self._statuses[status] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops SYNs when a few client threads
    # connect at once (one request per connection): the healthy node then looks
    # like one that stalls, with a 1 s SYN retransmit.
    request_queue_size = 128
    block_on_close = False  # stop() must not wait for a stalled handler
    node: LocalNode


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # an idle client cannot hold a handler thread for long

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # quiet: the demo and the tests print what matters

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        node = self.server.node
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        node._record(SeenRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        behaviour = node.behaviour
        if behaviour == "stall":
            node._stopping.wait(node.stall_seconds)
            self.close_connection = True
            return
        if behaviour == "unavailable":
            self._json(503, _error("node is overloaded", "server_error"), {"Retry-After": str(node.retry_after)})
            return
        if behaviour == "rate-limited":
            self._json(429, _error("rate limit reached", "rate_limit_error"), {"Retry-After": str(node.retry_after)})
            return
        if behaviour == "redirect":
            self._json(node.redirect_status, _error("moved", "redirect"), {"Location": node.location})
            return
        if behaviour == "unauthorized":
            self._json(401, _error("invalid signature", "invalid_request_error"))
            return
        if self.command == "GET" and self.path.partition("?")[0].rstrip("/").endswith("/models"):
            self._json(
                200,
                {"object": "list", "data": [{"id": "local", "object": "model", "created": 0, "owned_by": node.name}]},
            )
            return
        if self.command != "POST" or not self.path.partition("?")[0].endswith("/chat/completions"):
            self._json(404, _error(f"no route for {self.command} {self.path}", "not_found"))
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            self._json(400, _error("body is not JSON", "invalid_request_error"))
            return
        model = str(request.get("model", "local"))
        if request.get("stream") or behaviour == "broken-stream":
            self._stream(model, broken=behaviour == "broken-stream")
        else:
            self._json(200, _completion(node.name, model))

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        for name, value in self.server.node.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.server.node._record(status=status)

    def _stream(self, model: str, *, broken: bool) -> None:
        node = self.server.node
        words = ["hello ", "from ", node.name]
        events = [_chunk(model, {"role": "assistant", "content": word}, None) for word in words]
        events.append(_chunk(model, {}, "stop"))
        payload = [f"data: {json.dumps(event)}\n\n".encode() for event in events]
        payload.append(b"data: [DONE]\n\n")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if broken:
            # Promise more than is sent, so the client sees a truncated body.
            self.send_header("Content-Length", str(sum(map(len, payload)) + 1000))
        self.end_headers()
        node._record(status=200)
        for part in payload[:1] if broken else payload:
            self.wfile.write(part)
            self.wfile.flush()
        self.close_connection = True


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _completion(name: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"hello from {name}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }


def _chunk(model: str, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
