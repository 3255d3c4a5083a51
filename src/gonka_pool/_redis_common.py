"""What ``gonka_pool.redis``'s two health channels share: the limits, the Lua
scripts that keep the hash, the key of a node, the event queue and the message
checks (``_Shared``), and the reconnect backoff.  ``RedisHealth`` (threads) and
``AsyncRedisHealth`` (tasks) in ``gonka_pool.redis`` each add their own loops."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import deque
from typing import Any

from ._endpoint import GonkaEndpoint, redact

logger = logging.getLogger("gonka_pool.redis")

# Events waiting for the sender; past this the oldest is dropped and counted.
QUEUE_SIZE = 10_000
# Backoff between tries while Redis is away: doubles from the first to the last.
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0
# The longest cooldown sent or stored: "until cleared" (and any longer mark) is sent
# as this, and each receiver caps it again at its own max_cooldown.
MAX_REMAINING_S = 86_400
# Consecutive counts beyond this add nothing (the backoff reached its cap long before).
MAX_FAILURES = 64
# A channel message longer than this is not an event of ours.
MAX_MESSAGE_BYTES = 4096
# How long the listener waits for one message before checking that it should stop.
POLL_S = 0.1
# What close() waits for a thread beyond its flush time: a try already started.
CLOSE_GRACE_S = 1.0

_NS_PER_MS = 1_000_000
_MAX_REMAINING_NS = MAX_REMAINING_S * 1_000_000_000

# Values in the hash are "<deadline ms on the server's clock>:<failures>"; a value
# with more digits than those can have is garbage (ignored, and replaced by the next
# event about its node), kept out of Lua's number formatting.
# KEYS[1] the hash; ARGV: channel, node, remaining ms, failures, message.  A deadline
# on the server's clock, never earlier than the one stored; the hash lives as long as
# its longest cooldown.
_COOLDOWN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local remaining = tonumber(ARGV[3])
local deadline = now + remaining
local failures = tonumber(ARGV[4])
local old = redis.call('HGET', KEYS[1], ARGV[2])
if old then
  local d, f = string.match(old, '^(%d+):(%d+)$')
  if d and #d <= 15 and #f <= 6 and tonumber(d) > now then
    if tonumber(d) > deadline then deadline = tonumber(d) end
    if tonumber(f) > failures then failures = tonumber(f) end
  end
end
redis.call('HSET', KEYS[1], ARGV[2], string.format('%d:%d', deadline, failures))
if redis.call('PTTL', KEYS[1]) < deadline - now then
  redis.call('PEXPIRE', KEYS[1], deadline - now)
end
redis.call('PUBLISH', ARGV[1], ARGV[5])
return 1
"""

# KEYS[1] the hash; ARGV: channel, node, message.  The count resets; the cooldown
# stored, like a local one, runs on.
_SUCCESS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('HGET', KEYS[1], ARGV[2])
if old then
  local d = string.match(old, '^(%d+):%d+$')
  if d and #d <= 15 and tonumber(d) > now then
    redis.call('HSET', KEYS[1], ARGV[2], string.format('%d:0', tonumber(d)))
  else
    redis.call('HDEL', KEYS[1], ARGV[2])
  end
end
redis.call('PUBLISH', ARGV[1], ARGV[3])
return 1
"""

# KEYS[1] the hash.  {node, remaining ms, failures, ...} for the cooldowns still
# running; entries past their deadline are deleted, malformed ones returned as they
# are (the caller ignores and counts them).
_LOAD_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local d, f = string.match(all[i + 1], '^(%d+):(%d+)$')
  if d and (#d > 15 or #f > 6) then d = nil end
  if d and tonumber(d) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif d then
    table.insert(out, all[i])
    table.insert(out, string.format('%d', tonumber(d) - now))
    table.insert(out, f)
  else
    table.insert(out, all[i])
    table.insert(out, '-1')
    table.insert(out, '-1')
  end
end
return out
"""


def node_key(endpoint: GonkaEndpoint) -> str:
    """The name of ``endpoint`` in Redis: ``"<base_url>;<address>"``."""
    return f"{endpoint.base_url};{endpoint.address}"


class _Shared:
    """What the thread and the asyncio variants share: the queue the pool's
    observer fills, the codec, and the rules for applying remote events."""

    def __init__(self, pool: Any, client: Any, channel: str, queue_size: int, subscribe: bool) -> None:
        if not isinstance(channel, str) or not channel:
            raise ValueError("channel must be a non-empty str")
        if not isinstance(subscribe, bool):
            raise TypeError(f"subscribe must be a bool, not {type(subscribe).__name__}")
        if type(queue_size) is not int or queue_size < 1:
            raise ValueError(f"queue_size must be an int >= 1, got {queue_size!r}")
        self.pool = pool
        self.client = client
        self.channel = channel
        self.hash_key = f"{channel}:cooldowns"
        # Tells this instance's own events from others' on the channel.
        self._source = os.urandom(8).hex()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._queue_size = queue_size
        self._queue_lock = threading.Lock()
        self._sequence = 0  # numbers the queued events
        self._nodes: tuple[GonkaEndpoint, ...] = ()
        self._by_key: dict[str, GonkaEndpoint] = {}
        self._counts = dict.fromkeys(
            ("queued", "dropped", "sent", "received", "applied", "ignored", "errors", "connects"), 0
        )
        self._connected: bool | None = None  # None: not yet tried
        try:
            from redis.exceptions import ResponseError  # the client's own package
        except ImportError:  # a client of another package with redis-py's API
            ResponseError = ()  # type: ignore[assignment,misc]
        # An error reply (e.g. WRONGTYPE: another program owns the hash's key): the
        # hash is unreadable, the channel still works.
        self._reply_error: Any = ResponseError
        self._scripts = (
            client.register_script(_COOLDOWN_SCRIPT),
            client.register_script(_SUCCESS_SCRIPT),
            client.register_script(_LOAD_SCRIPT),
        )

    # -- the request side: the pool's observer ------------------------------------

    def _observe(self, event: str, endpoint: GonkaEndpoint, remaining_ns: int, failures: int) -> None:
        """The pool's observer: queue the event; never blocks on Redis, never raises."""
        try:
            self._enqueue(event, endpoint, remaining_ns, failures)
        except Exception:  # noqa: BLE001 - a bug here must not fail a request
            self._counts["errors"] += 1

    def _enqueue(self, event: str, endpoint: GonkaEndpoint, remaining_ns: int, failures: int) -> None:
        # An event leaves the queue only once sent (``_forget``), so the bound covers
        # the batch the sender is trying too.
        with self._queue_lock:
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self._counts["dropped"] += 1
            self._sequence += 1
            self._queue.append((self._sequence, event, endpoint, remaining_ns, failures, time.monotonic_ns()))
            self._counts["queued"] += 1
        self._wake()

    def _wake(self) -> None:
        raise NotImplementedError

    def _take(self) -> list[Any]:
        """What the queue holds, left in it until sent."""
        with self._queue_lock:
            return list(self._queue)

    def _forget(self, batch: list[Any]) -> None:
        """Remove the sent ``batch`` (or what the bound has not dropped of it yet)."""
        last = batch[-1][0]
        with self._queue_lock:
            while self._queue and self._queue[0][0] <= last:
                self._queue.popleft()

    # -- the wire --------------------------------------------------------------------

    def _calls(self, batch: list[Any]) -> list[Any]:
        """(script, keys, args) for each event still worth sending."""
        now = time.monotonic_ns()
        calls = []
        cooldown, success, _ = self._scripts
        for _, event, endpoint, remaining_ns, failures, queued_at in batch:
            key = node_key(endpoint)
            if event == "cooldown":
                remaining_ns = min(remaining_ns, _MAX_REMAINING_NS) - (now - queued_at)
                if remaining_ns <= 0:
                    continue  # it ran out while Redis was away
                failures = min(failures, MAX_FAILURES)
                message = self._message("cooldown", key, remaining_ns, failures)
                remaining_ms = -(-remaining_ns // _NS_PER_MS)
                calls.append((cooldown, [self.hash_key], [self.channel, key, remaining_ms, failures, message]))
            else:
                message = self._message("success", key, 0, 0)
                calls.append((success, [self.hash_key], [self.channel, key, message]))
        return calls

    def _sent(self, results: list[Any]) -> None:
        """Count a pipeline's results.  A connection error has already raised; an
        error reply (a script that failed on what another party left in the hash)
        would fail again: it is counted, not retried."""
        failed = sum(isinstance(result, Exception) for result in results)
        self._counts["sent"] += len(results) - failed
        self._counts["errors"] += failed

    def _message(self, event: str, key: str, remaining_ns: int, failures: int) -> str:
        return json.dumps(
            {
                "v": 1,
                "src": self._source,
                "event": event,
                "node": key,
                "remaining_ns": remaining_ns,
                "failures": failures,
            },
            separators=(",", ":"),
        )

    def _endpoint(self, key: object) -> GonkaEndpoint | None:
        """This pool's endpoint named ``key``, or None."""
        nodes = self.pool.endpoints
        if nodes is not self._nodes:  # the same tuple until the pool's next update()
            self._by_key = {node_key(node): node for node in nodes}
            self._nodes = nodes
        return self._by_key.get(key) if isinstance(key, str) else None

    def _on_message(self, data: object) -> None:
        """Apply one channel message from another process; count anything else."""
        self._counts["received"] += 1
        try:
            if isinstance(data, bytes):
                if len(data) > MAX_MESSAGE_BYTES:
                    raise ValueError
                data = data.decode()
            if not isinstance(data, str) or len(data) > MAX_MESSAGE_BYTES:
                raise ValueError
            message = json.loads(data)
            if type(message) is not dict or message.get("v") != 1:
                raise ValueError
            if message.get("src") == self._source:
                return
            self._apply(message.get("event"), message.get("node"), message.get("remaining_ns"), message.get("failures"))
        except (ValueError, UnicodeError, RecursionError):
            self._counts["ignored"] += 1

    def _apply(self, event: object, key: object, remaining_ns: object, failures: object) -> None:
        """Apply one remote event by the local rules, or raise ValueError."""
        endpoint = self._endpoint(key)
        if endpoint is None:
            raise ValueError
        if event == "success":
            self.pool._apply_remote_success(endpoint)
        elif event == "cooldown":
            if (
                type(remaining_ns) is not int
                or type(failures) is not int
                or not 0 < remaining_ns <= _MAX_REMAINING_NS
                or failures < 0
            ):
                raise ValueError
            self.pool._apply_remote(endpoint, remaining_ns, min(failures, MAX_FAILURES))
        else:
            raise ValueError
        self._counts["applied"] += 1

    def _load(self, rows: object) -> None:
        """Apply the hash's running cooldowns, as ``_LOAD_SCRIPT`` returns them."""
        if not isinstance(rows, list):
            self._counts["ignored"] += 1
            return
        for i in range(0, len(rows) - 2, 3):
            try:
                key = rows[i].decode() if isinstance(rows[i], bytes) else rows[i]
                remaining_ms, failures = int(rows[i + 1]), int(rows[i + 2])
                if remaining_ms <= 0:
                    raise ValueError
                self._apply("cooldown", key, min(remaining_ms * _NS_PER_MS, _MAX_REMAINING_NS), failures)
            except (ValueError, TypeError, UnicodeError):
                self._counts["ignored"] += 1

    def _queue_local_state(self) -> None:
        """Queue this pool's running cooldowns: after a restart Redis knows none."""
        for state in self.pool.snapshot():
            if not state.available:
                remaining = state.cooldown_remaining
                remaining_ns = _MAX_REMAINING_NS if remaining == float("inf") else int(remaining * 1e9)
                if remaining_ns > 0:
                    self._enqueue("cooldown", state.endpoint, remaining_ns, state.consecutive_failures)

    def _lost(self, exc: BaseException) -> None:
        self._counts["errors"] += 1
        if self._connected is not False:
            # redis-py's errors name the server, not its password; redact() all the
            # same, as every other message of the package quotes what it did not write.
            logger.warning(
                "gonka_pool.redis: lost Redis (%s: %s); retrying with backoff", type(exc).__name__, redact(str(exc))
            )
        self._connected = False

    def stats(self) -> dict[str, Any]:
        """Counters since start: ``queued``, ``dropped`` (queue full), ``sent``,
        ``received``, ``applied``, ``ignored`` (malformed or unknown node),
        ``errors``, ``connects``; and ``connected`` (the subscription is up; with
        ``subscribe=False``, the last send reached Redis)."""
        return {**self._counts, "connected": bool(self._connected), "queue": len(self._queue)}


class _Backoff:
    """Exponential backoff with jitter, from RECONNECT_MIN_S to RECONNECT_MAX_S."""

    def __init__(self) -> None:
        self.delay = RECONNECT_MIN_S

    def reset(self) -> None:
        self.delay = RECONNECT_MIN_S

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, RECONNECT_MAX_S)
        return delay * random.uniform(0.5, 1.0)
