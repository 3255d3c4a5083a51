"""What ``gonka_pool.redis``'s two health channels share: the limits, the Lua
scripts that keep the hash, the key of a node, the event queue and the message
checks (``_Shared``), and the reconnect backoff.  ``RedisHealth`` (threads) and
``AsyncRedisHealth`` (tasks) in ``gonka_pool.redis`` each add their own loops."""

from __future__ import annotations

import json
import logging
import math
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
# The longest cooldown sent or stored whatever the pool's max_cooldown: each sender
# caps what it sends and stores at its own max_cooldown below this, each receiver
# caps what it applies at its own.
MAX_REMAINING_S = 86_400
# The largest share of a pool's nodes that remote events may hold in cooldown at
# once (Envoy's max_ejection_percent): a Redis writer alone never leaves fewer than
# the rest available.  Local failures cool nodes beyond it as always.
MAX_REMOTE_COOLING = 0.5
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
# KEYS[1] the hash; ARGV: channel, node, remaining ms, failures, message, cap ms (the
# sender's max_cooldown).  A deadline on the server's clock, never earlier than the
# one stored unless that one lies beyond now + cap: a deadline anyone wrote for
# years ahead is cut back, never kept over the honest ones.  The hash lives as long
# as its longest cooldown.
_COOLDOWN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = now + tonumber(ARGV[6])
local deadline = math.min(now + tonumber(ARGV[3]), cap)
local failures = tonumber(ARGV[4])
local old = redis.call('HGET', KEYS[1], ARGV[2])
if old then
  local d, f = string.match(old, '^(%d+):(%d+)$')
  if d and #d <= 15 and #f <= 6 and tonumber(d) > now then
    d = math.min(tonumber(d), cap)
    if d > deadline then deadline = d end
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

# KEYS[1] the hash; ARGV: cap ms (the loader's max_cooldown).  {clamped, node,
# remaining ms, failures, ...} for the cooldowns still running; entries past their
# deadline are deleted, malformed ones returned as they are (the caller ignores and
# counts them).  A deadline beyond now + cap is cut back to it in the hash too
# (``clamped`` counts them) and the hash expires with its longest cooldown left: an
# HSET of a deadline years ahead pins a node for at most one cap, not at every
# process start for years.
_LOAD_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local out = {0}
local longest = 0
for i = 1, #all, 2 do
  local d, f = string.match(all[i + 1], '^(%d+):(%d+)$')
  if d and (#d > 15 or #f > 6) then d = nil end
  if d and tonumber(d) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif d then
    local left = tonumber(d) - now
    if left > cap then
      left = cap
      out[1] = out[1] + 1
      redis.call('HSET', KEYS[1], all[i], string.format('%d:%s', now + cap, f))
    end
    if left > longest then longest = left end
    table.insert(out, all[i])
    table.insert(out, string.format('%d', left))
    table.insert(out, f)
  else
    table.insert(out, all[i])
    table.insert(out, '-1')
    table.insert(out, '-1')
  end
end
if longest > 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 or ttl > longest then redis.call('PEXPIRE', KEYS[1], longest) end
end
return out
"""

# KEYS[1] the hash; ARGV: channel, node, message.  The node's stored cooldown is
# dropped: discovery listed it again, so no process, running or yet to start,
# should go on skipping it.
_CLEAR_SCRIPT = """
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[1], ARGV[3])
return 1
"""


def node_key(endpoint: GonkaEndpoint) -> str:
    """The name of ``endpoint`` in Redis: ``"<base_url>;<address>"``."""
    return f"{endpoint.base_url};{endpoint.address}"


class _Shared:
    """What the thread and the asyncio variants share: the queue the pool's
    observer fills, the codec, and the rules for applying remote events."""

    def __init__(
        self, pool: Any, client: Any, channel: str, queue_size: int, subscribe: bool, max_remote_cooling: float
    ) -> None:
        if not isinstance(channel, str) or not channel:
            raise ValueError("channel must be a non-empty str")
        if not isinstance(subscribe, bool):
            raise TypeError(f"subscribe must be a bool, not {type(subscribe).__name__}")
        if type(queue_size) is not int or queue_size < 1:
            raise ValueError(f"queue_size must be an int >= 1, got {queue_size!r}")
        if isinstance(max_remote_cooling, bool) or not (
            isinstance(max_remote_cooling, (int, float)) and 0 <= max_remote_cooling <= 1
        ):
            raise ValueError(f"max_remote_cooling must be a number from 0 to 1, got {max_remote_cooling!r}")
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
            ("queued", "dropped", "sent", "received", "applied", "ignored", "refused", "clamped", "errors", "connects"),
            0,
        )
        # What is sent, stored and loaded is capped at this pool's max_cooldown.
        self._cap_ns: int = min(pool._max_ns, _MAX_REMAINING_NS)
        self._max_remote_cooling = max_remote_cooling
        # Node key -> monotonic deadline: the cooldowns remote events set here
        # (``_held``), and this process's own marks (``_local``, from the observer),
        # which a remote "cleared" must not end.  Both under ``_held_lock``: the
        # observer runs on the request threads, the rest on the listener.
        self._held: dict[str, int] = {}
        self._local: dict[str, int] = {}
        self._held_lock = threading.Lock()
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
            client.register_script(_CLEAR_SCRIPT),
        )

    # -- the request side: the pool's observer ------------------------------------

    def _observe(self, event: str, endpoint: GonkaEndpoint, remaining_ns: int, failures: int) -> None:
        """The pool's observer: queue the event; never blocks on Redis, never raises."""
        try:
            if event == "cooldown" or event == "cleared":
                self._note_local(event, node_key(endpoint), remaining_ns)
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

    # -- what remote events may cool ------------------------------------------------

    def _note_local(self, event: str, key: str, remaining_ns: int) -> None:
        """Record this process's own cooldown of ``key``, or forget both kinds when
        the pool cleared it (discovery listed the node again)."""
        until = time.monotonic_ns() + remaining_ns
        with self._held_lock:
            self._held.pop(key, None)
            if event == "cleared":
                self._local.pop(key, None)
            elif self._local.get(key, 0) < until:
                self._local[key] = until

    def _hold(self, key: str, remaining_ns: int) -> bool:
        """Whether a remote cooldown of ``remaining_ns`` may cool ``key``: yes when
        remote events hold it already or hold fewer than ``max_remote_cooling`` of
        the pool's nodes, counting it as held until its deadline."""
        now = time.monotonic_ns()
        until = now + min(remaining_ns, self._cap_ns)
        nodes = self._by_key
        with self._held_lock:
            held = self._held
            for stale in [k for k, deadline in held.items() if deadline <= now or k not in nodes]:
                del held[stale]
            if len(self._local) > 2 * len(nodes):
                for stale in [k for k, deadline in self._local.items() if deadline <= now]:
                    del self._local[stale]
            if key not in held and len(held) >= math.floor(len(nodes) * self._max_remote_cooling):
                return False
            held[key] = max(held.get(key, 0), until)
        return True

    def _release(self, key: str) -> bool:
        """Whether a remote "cleared" may end ``key``'s cooldown: only one that a
        remote event set, and no mark of this process's own still holds."""
        now = time.monotonic_ns()
        with self._held_lock:
            if self._held.get(key, 0) <= now or self._local.get(key, 0) > now:
                return False
            del self._held[key]
        return True

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
        cooldown, success, _, clear = self._scripts
        cap_ms = self._cap_ms()
        for _, event, endpoint, remaining_ns, failures, queued_at in batch:
            key = node_key(endpoint)
            if event == "cooldown":
                remaining_ns = min(remaining_ns, self._cap_ns) - (now - queued_at)
                if remaining_ns <= 0:
                    continue  # it ran out while Redis was away
                failures = min(failures, MAX_FAILURES)
                message = self._message("cooldown", key, remaining_ns, failures)
                remaining_ms = -(-remaining_ns // _NS_PER_MS)
                args = [self.channel, key, remaining_ms, failures, message, cap_ms]
                calls.append((cooldown, [self.hash_key], args))
            elif event == "cleared":
                message = self._message("cleared", key, 0, 0)
                calls.append((clear, [self.hash_key], [self.channel, key, message]))
            elif event == "success":
                message = self._message("success", key, 0, 0)
                calls.append((success, [self.hash_key], [self.channel, key, message]))
            # An event a newer pool reports and this module does not know: not sent.
        return calls

    def _cap_ms(self) -> int:
        """The scripts' cap on a stored deadline, now + this, in ms (rounded up, as
        the remaining durations sent are)."""
        return -(-self._cap_ns // _NS_PER_MS)

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

    def _endpoint(self, key: str) -> GonkaEndpoint | None:
        """This pool's endpoint named ``key``, or None."""
        nodes = self.pool.endpoints
        if nodes is not self._nodes:  # the same tuple until the pool's next update()
            self._by_key = {node_key(node): node for node in nodes}
            self._nodes = nodes
        return self._by_key.get(key)

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
        if not isinstance(key, str):
            raise ValueError
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
            if not self._hold(key, remaining_ns):
                self._counts["refused"] += 1
                return
            self.pool._apply_remote(endpoint, remaining_ns, min(failures, MAX_FAILURES))
        elif event == "cleared":
            # An explicit clear, which the pool's observer does not hear.
            if self._release(key):
                self.pool.mark_failed(endpoint, 0)
        else:
            raise ValueError
        self._counts["applied"] += 1

    def _load(self, rows: object) -> None:
        """Apply the hash's running cooldowns, as ``_LOAD_SCRIPT`` returns them."""
        if not isinstance(rows, list) or not rows or type(rows[0]) is not int:
            self._counts["ignored"] += 1
            return
        self._counts["clamped"] += rows[0]
        for i in range(1, len(rows) - 2, 3):
            try:
                key = rows[i].decode() if isinstance(rows[i], bytes) else rows[i]
                remaining_ms, failures = int(rows[i + 1]), int(rows[i + 2])
                if remaining_ms <= 0:
                    raise ValueError
                self._apply("cooldown", key, min(remaining_ms * _NS_PER_MS, _MAX_REMAINING_NS), failures)
            except (ValueError, TypeError, UnicodeError):
                self._counts["ignored"] += 1

    def _queue_local_state(self) -> None:
        """Queue this pool's running cooldowns: after a restart Redis knows none.
        Not those that only remote events hold: this process never passes on as its
        own what a Redis writer told it (a deadline loaded would go back refreshed)."""
        now = time.monotonic_ns()
        with self._held_lock:
            told = {key for key, until in self._held.items() if until > now and self._local.get(key, 0) <= now}
        for state in self.pool.snapshot():
            if not state.available and (not told or node_key(state.endpoint) not in told):
                remaining = state.cooldown_remaining
                remaining_ns = self._cap_ns if remaining == float("inf") else int(remaining * 1e9)
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
        ``refused`` (remote cooldowns not applied: remote events already held
        ``max_remote_cooling`` of the nodes), ``clamped`` (deadlines found in the
        hash beyond now + ``max_cooldown`` and cut back), ``errors``, ``connects``;
        and ``connected`` (the subscription is up; with ``subscribe=False``, the
        last send reached Redis), ``queue`` (events waiting) and ``remote_cooling``
        (nodes that remote events hold in cooldown now)."""
        now = time.monotonic_ns()
        with self._held_lock:
            held = sum(deadline > now for deadline in self._held.values())
        return {
            **self._counts,
            "connected": bool(self._connected),
            "queue": len(self._queue),
            "remote_cooling": held,
        }


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
