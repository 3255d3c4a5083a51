"""Node health shared between processes and hosts through Redis (or Valkey).

``RedisHealth(pool, client)`` joins a pool to every other pool that names the same
``channel`` on the same Redis: a node one process finds failing is skipped by all of
them within milliseconds, instead of each finding out with a failed request of its
own.  ``pip install gonka-pool[redis]`` brings redis-py; importing ``gonka_pool``
alone never imports it.

What is shared
    Each cooldown this process's marks enter (``mark_failed`` and the failover loop
    of ``call``/``acall``), with its remaining duration and consecutive-failure
    count, and each ``mark_success`` that resets a non-zero count.  Other processes
    apply them with their own pool's rules: a remote cooldown never shortens a
    running one, raises the consecutive count to at least the sender's, and is
    capped at the receiving pool's ``max_cooldown`` (a remote success resets the
    count and leaves a running cooldown to run, as ``mark_success`` does).  An
    explicit clear (``mark_failed(node, 0)``) and ``update()`` stay local; a node
    the pool clears because discovery listed it again (its "until cleared" state
    after a refusal, at ``refresh()``) is cleared in Redis too: its stored
    cooldown is deleted and the other processes end the cooldown that remote
    events set for it (never one of their own failures).

How
    Selection and marking never touch Redis.  The pool's observer hook (see
    ``EndpointPool._set_observer``) appends an event to a bounded queue (when full,
    the oldest is dropped and counted in ``stats()["dropped"]``); a sender thread
    runs one Lua script per event that stores the cooldown in the hash
    ``<channel>:cooldowns`` and publishes the event on ``channel``; a listener thread
    subscribed to ``channel`` applies the other processes' events.  Events carry
    remaining durations, and the hash stores deadlines on the Redis server's own
    clock (its ``TIME``, read inside the scripts), so hosts need no synchronized
    clocks.  A hash entry is dropped once its deadline passes (when a script next
    reads the hash), and the whole hash expires with its longest cooldown.  A node
    is named by ``"<base_url>;<address>"``, the ``GONKA_ENDPOINTS`` entry format:
    endpoint URLs cannot carry credentials, so nothing secret reaches Redis.

Startup, outages and restarts
    On start, and whenever the subscription (re)connects, the listener loads the
    hash (other processes' cooldowns still running) and queues this pool's own
    running cooldowns for sending, so that a Redis restarted empty converges again.
    Redis slow, down or restarted costs requests nothing: the queue absorbs events
    (dropping the oldest when full), the threads retry with exponential backoff
    (``RECONNECT_MIN_S`` doubling to ``RECONNECT_MAX_S``), and an event that waited
    is sent with the time it waited taken off its remaining duration.  Give the
    client a ``socket_timeout`` so a hung (not refused) server is noticed.

Untrusted data
    Anyone who can write to the channel or the hash is trusted with this much and
    no more.  Anything that is not a well-formed event about a node of this pool
    is ignored and counted (``stats()["ignored"]``): never raised, never logged
    with its content.  A well-formed remote cooldown is applied for at most the
    pool's ``max_cooldown``, and remote events hold at most ``max_remote_cooling``
    (default ``MAX_REMOTE_COOLING``, half) of the pool's nodes in cooldown at
    once, rounded down (Envoy's ``max_ejection_percent``): a cooldown that would
    cool one more node is refused and counted (``stats()["refused"]``;
    ``stats()["remote_cooling"]`` is how many nodes remote events hold now), so
    a writer that publishes cooldowns for every node steers traffic to no fewer
    than the other half.  This process's own failures cool nodes beyond that as
    always.  Deadlines are stored capped at now + the writer's ``max_cooldown``,
    and each load cuts back any that lies further ahead, in the hash too
    (``stats()["clamped"]``): a deadline written for years ahead pins a node for
    at most one ``max_cooldown``, not at every start.  What this process loaded
    or heard from others it never sends on as its own.  ``max_remote_cooling=1``
    trusts Redis with every node; ``0`` applies no remote cooldown at all.

With ``shared=`` pools (one machine's processes share one segment), one process
per machine subscribing is enough: the others pass ``subscribe=False`` and only
publish their own marks (no listener; they neither load the hash nor apply others'
events), since what the subscriber applies lands in the segment they all read.

``close()`` (or leaving a ``with`` block) stops observing the pool, sends what is
queued (for at most ``timeout`` seconds) and stops the threads.
``AsyncRedisHealth`` is the same over ``redis.asyncio``, with tasks instead of
threads: ``async with AsyncRedisHealth(pool, client):`` inside a running loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from ._redis_common import CLOSE_GRACE_S, MAX_REMOTE_COOLING, POLL_S, QUEUE_SIZE, _Backoff, _Shared
from ._redis_common import node_key as node_key

__all__ = ["AsyncRedisHealth", "RedisHealth"]

# The same logger as _redis_common's (one name): users configure "gonka_pool.redis".
logger = logging.getLogger("gonka_pool.redis")


class RedisHealth(_Shared):
    """Share ``pool``'s node health with every pool on ``channel`` through ``client``
    (a ``redis.Redis``, or a Valkey client with the same API), with two daemon
    threads: a sender and a listener.  See the module docstring for the rules.

    ``with RedisHealth(pool, redis.Redis(socket_timeout=1)):`` ... or call ``close()``.
    ``max_remote_cooling`` (0 to 1) is the largest share of the pool's nodes that
    remote events may hold in cooldown at once.
    """

    def __init__(
        self,
        pool: Any,
        client: Any,
        *,
        channel: str = "gonka_pool",
        queue_size: int = QUEUE_SIZE,
        subscribe: bool = True,
        max_remote_cooling: float = MAX_REMOTE_COOLING,
    ) -> None:
        super().__init__(pool, client, channel, queue_size, subscribe, max_remote_cooling)
        self._stop = threading.Event()
        self._flush_until = float("inf")
        self._queue_ready = threading.Condition(threading.Lock())
        self._reconnect = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name="gonka_pool.redis sender", daemon=True)
        self._listener = (
            threading.Thread(target=self._listen_loop, name="gonka_pool.redis listener", daemon=True)
            if subscribe
            else None
        )
        # First, so that a pool without the hook fails before a thread starts.
        pool._set_observer(self._observe)
        self._sender.start()
        if self._listener is not None:
            self._listener.start()

    def _wake(self) -> None:
        with self._queue_ready:
            self._queue_ready.notify()

    def _send_loop(self) -> None:
        backoff = _Backoff()
        while True:
            with self._queue_ready:
                while not self._queue and not self._stop.is_set():
                    self._queue_ready.wait()
            batch = self._take()
            if not batch:
                return  # stopped, nothing left
            try:
                calls = self._calls(batch)
                if calls:
                    pipe = self.client.pipeline(transaction=False)
                    for script, keys, args in calls:
                        script(keys=keys, args=args, client=pipe)
                    self._sent(pipe.execute(raise_on_error=False))
                self._forget(batch)
                if self._listener is None:  # publishing only: sending is the connection
                    self._connected = True
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive what a client raises
                self._lost(exc)
                left = self._flush_until - time.monotonic()
                if left <= 0:
                    return
                if self._stop.is_set():  # closing: retry until the flush deadline
                    time.sleep(min(backoff.next(), left))
                else:
                    self._stop.wait(backoff.next())

    def _listen_loop(self) -> None:
        backoff = _Backoff()
        while not self._stop.is_set():
            pubsub = connection = None
            try:
                pubsub = self.client.pubsub()
                pubsub.subscribe(self.channel)
                self._await_subscribed(pubsub)
                # redis-py reconnects a subscription by itself; each time it does,
                # Redis may have restarted empty: resynchronize then too.
                connection = pubsub.connection
                connection.register_connect_callback(self._on_reconnect)
                self._resync()
                backoff.reset()
                while not self._stop.is_set():
                    if self._reconnect.is_set():
                        self._reconnect.clear()
                        self._resync()
                    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message.get("data"))
            except Exception as exc:  # noqa: BLE001 - the thread must outlive what a client raises
                self._lost(exc)
            finally:
                if connection is not None:
                    connection.deregister_connect_callback(self._on_reconnect)
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # a broken connection may raise again
                        logger.debug("gonka_pool.redis: closing the subscription failed", exc_info=True)
            self._stop.wait(backoff.next())

    def _on_reconnect(self, _connection: object) -> None:
        self._reconnect.set()

    def _await_subscribed(self, pubsub: Any) -> None:
        """Wait for the subscription's confirmation, so that the hash is read only
        once no event published after it can be missed."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=POLL_S)
            if message is not None and message.get("type") == "subscribe":
                return
            if message is not None and message.get("type") == "message":
                self._on_message(message.get("data"))
        raise TimeoutError("no confirmation of the subscription")

    def _resync(self) -> None:
        try:
            self._load(self._scripts[2](keys=[self.hash_key], args=[self._cap_ms()]))
        except self._reply_error:
            self._counts["ignored"] += 1
        self._queue_local_state()
        self._counts["connects"] += 1
        self._connected = True

    def close(self, timeout: float = 5.0) -> None:
        """Stop observing the pool, send what is queued (for at most ``timeout``
        seconds while Redis is away) and stop both threads."""
        self.pool._set_observer(None)
        self._flush_until = time.monotonic() + timeout
        self._stop.set()
        self._wake()
        # The last try may still be on the wire when the flush time runs out.
        self._sender.join(timeout + CLOSE_GRACE_S)
        if self._listener is not None:
            self._listener.join(max(0.0, self._flush_until - time.monotonic()) + CLOSE_GRACE_S)
        self._connected = False

    def __enter__(self) -> RedisHealth:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRedisHealth(_Shared):
    """``RedisHealth`` over a ``redis.asyncio`` client, with two tasks on the running
    loop instead of threads: ``async with AsyncRedisHealth(pool, client):`` or
    ``await health.aclose()``.  The pool may still be marked from any thread."""

    def __init__(
        self,
        pool: Any,
        client: Any,
        *,
        channel: str = "gonka_pool",
        queue_size: int = QUEUE_SIZE,
        subscribe: bool = True,
        max_remote_cooling: float = MAX_REMOTE_COOLING,
    ) -> None:
        super().__init__(pool, client, channel, queue_size, subscribe, max_remote_cooling)
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._stopping = False
        self._flush_until = float("inf")
        self._reconnect = False
        pool._set_observer(self._observe)
        self._sender = self._loop.create_task(self._send_loop())
        self._listener = self._loop.create_task(self._listen_loop()) if subscribe else None

    def _wake(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # a thread without a loop
            running = None
        try:
            if running is self._loop:
                self._ready.set()
            else:
                self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is closed: nothing will send any more
            pass

    async def _send_loop(self) -> None:
        backoff = _Backoff()
        while True:
            while not self._queue and not self._stopping:
                self._ready.clear()
                if self._queue:
                    break
                await self._ready.wait()
            batch = self._take()
            if not batch:
                return
            try:
                calls = self._calls(batch)
                if calls:
                    pipe = self.client.pipeline(transaction=False)
                    for script, keys, args in calls:
                        await script(keys=keys, args=args, client=pipe)
                    self._sent(await pipe.execute(raise_on_error=False))
                self._forget(batch)
                if self._listener is None:  # publishing only: sending is the connection
                    self._connected = True
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - the task must outlive what a client raises
                self._lost(exc)
                if self._loop.time() >= self._flush_until:
                    return
                await asyncio.sleep(backoff.next())

    async def _listen_loop(self) -> None:
        backoff = _Backoff()
        while not self._stopping:
            pubsub = connection = None
            try:
                pubsub = self.client.pubsub()
                await pubsub.subscribe(self.channel)
                await self._await_subscribed(pubsub)
                connection = pubsub.connection
                connection.register_connect_callback(self._on_reconnect)
                await self._resync()
                backoff.reset()
                while not self._stopping:
                    if self._reconnect:
                        self._reconnect = False
                        await self._resync()
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the task must outlive what a client raises
                self._lost(exc)
            finally:
                if connection is not None:
                    connection.deregister_connect_callback(self._on_reconnect)
                if pubsub is not None:
                    try:
                        await pubsub.aclose()
                    except Exception:  # a broken connection may raise again
                        logger.debug("gonka_pool.redis: closing the subscription failed", exc_info=True)
            if not self._stopping:
                await asyncio.sleep(backoff.next())

    async def _on_reconnect(self, _connection: object) -> None:
        self._reconnect = True

    async def _await_subscribed(self, pubsub: Any) -> None:
        deadline = self._loop.time() + 5.0
        while self._loop.time() < deadline:
            message = await pubsub.get_message(timeout=POLL_S)
            if message is not None and message.get("type") == "subscribe":
                return
            if message is not None and message.get("type") == "message":
                self._on_message(message.get("data"))
        raise TimeoutError("no confirmation of the subscription")

    async def _resync(self) -> None:
        try:
            self._load(await self._scripts[2](keys=[self.hash_key], args=[self._cap_ms()]))
        except self._reply_error:
            self._counts["ignored"] += 1
        self._queue_local_state()
        self._counts["connects"] += 1
        self._connected = True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop observing the pool, send what is queued (for at most ``timeout``
        seconds while Redis is away) and stop both tasks."""
        self.pool._set_observer(None)
        self._flush_until = self._loop.time() + timeout
        self._stopping = True
        self._ready.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._sender), timeout)
        except Exception:  # noqa: BLE001 - a timeout, or the sender's end: flushed as far as Redis let it
            self._sender.cancel()
        tasks = [self._sender]
        if self._listener is not None:
            self._listener.cancel()
            tasks.append(self._listener)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._connected = False

    async def __aenter__(self) -> AsyncRedisHealth:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
