"""Refreshing: re-discover every few minutes and ``pool.update()`` the
membership, from a daemon thread (``Refresher``) or an asyncio task
(``AsyncRefresher``).

Stopping never waits on the source: a refresh is bounded by its discovery
``timeout`` (one deadline for the whole discovery), and once a refresher is
closed the pool is never updated by it again, even by a discovery still under
way, so closing need not wait for one (``AsyncRefresher``'s exit and
interpreter exit do not).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .._endpoint import redact
from ._addresses import allow_private_from
from ._discovery import Participant, _source_root, discover, pool_weights

log = logging.getLogger("gonka_pool")


# How often a Refresher re-discovers by default: epochs last about a day, and the
# allowlist can change at any block; one small GET per node set every 10 minutes.
DEFAULT_REFRESH_INTERVAL = 600.0
# How long interpreter exit waits for every Refresher's thread, all together: the
# threads are daemons and update nothing once stopped, so nothing is lost.
EXIT_WAIT = 1.0
# What Refresher.close() waits beyond the discovery timeout (the resolver, a lock).
CLOSE_SLACK = 1.0


def refresh(
    pool: Any,
    source_url: str,
    *,
    epoch: str | int = "current",
    allowlist: bool = True,
    timeout: float = 10.0,
    allow_private: bool | None = None,
) -> list[Participant]:
    """Re-discover and ``pool.update()`` to the participants found, weighted.

    Nodes that stay keep their state, except that a cooldown "until cleared" (a 403
    "Transfer Agent not allowed") ends: discovery listing the node means the chain
    admits it.  It ends in a ``shared=`` segment too, for every pool on it, and the
    pool's observer hears ``"cleared"`` (``RedisHealth`` passes it on).  Raises what
    ``discover`` raises, and leaves the pool as it was.
    """
    participants = discover(source_url, epoch=epoch, allowlist=allowlist, timeout=timeout, allow_private=allow_private)
    update_membership(pool, participants)
    return participants


def update_membership(pool: Any, participants: list[Participant]) -> None:
    """``pool.update()`` to ``participants``, weighted, as ``refresh`` does: then
    every node still cooling "until cleared" is readmitted (``pool._readmit``)."""
    pool.update([p.endpoint for p in participants], pool_weights(participants))
    for state in pool.snapshot():
        if state.cooldown_remaining == math.inf:
            pool._readmit(state.endpoint)


class _RefresherBase:
    def __init__(
        self,
        pool: Any,
        source_url: str,
        interval: float,
        epoch: str | int,
        allowlist: bool,
        timeout: float,
        allow_private: bool | None,
    ) -> None:
        _source_root(source_url)  # a bad URL fails here, not in the background
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < math.inf:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.pool = pool
        self.source_url = source_url
        self.interval = float(interval)
        self._discovery: dict[str, Any] = {
            "epoch": epoch,
            "allowlist": allowlist,
            "timeout": timeout,
            # Read once: the choice stays what it was when the refresher started.
            "allow_private": allow_private_from(allow_private),
        }
        self._failing = False
        self.refreshes = 0  # successful refreshes so far
        self.failures = 0
        # Set under _apply_lock: once stopped, no discovery still under way updates the pool.
        self._stop = threading.Event()
        self._apply_lock = threading.Lock()

    def _stop_updates(self) -> None:
        with self._apply_lock:
            self._stop.set()

    def _participants(self) -> list[Participant]:
        """Re-discover (gonka_pool.gonka.GonkaOpenAI's refresher discovers its own
        way: file sources, proofs)."""
        return discover(self.source_url, **self._discovery)

    def refresh_now(self) -> bool:
        """One refresh, now, in this thread: True when the pool was updated; a
        failure keeps the membership and is logged once per outage."""
        return self._refresh(stoppable=False)

    def _refresh(self, *, stoppable: bool) -> bool:
        try:
            participants = self._participants()
            with self._apply_lock:
                if stoppable and self._stop.is_set():
                    return False
                update_membership(self.pool, participants)
        except Exception as exc:  # noqa: BLE001 - the refresher must outlive any error
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "gonka refresh from %s failed (%s: %s); keeping the current %d nodes until it succeeds",
                    redact(self.source_url),
                    type(exc).__name__,
                    exc,
                    len(self.pool),
                )
            return False
        self.refreshes += 1
        if self._failing:
            self._failing = False
            log.warning("gonka refresh from %s succeeded again: %d nodes", redact(self.source_url), len(self.pool))
        return True


_live_refreshers: weakref.WeakSet[Refresher] = weakref.WeakSet()


@atexit.register
def _close_refreshers() -> None:
    refreshers = list(_live_refreshers)
    for refresher in refreshers:
        refresher._stop_updates()
    end = time.monotonic() + EXIT_WAIT
    for refresher in refreshers:
        refresher.close(timeout=max(0.0, end - time.monotonic()))


class Refresher(_RefresherBase):
    """Keep ``pool`` at the network's current participants: a daemon thread that
    calls ``refresh`` every ``interval`` seconds (the first time after one
    interval: the pool is assumed fresh).

        pool = pool_from_gonka(source_url)
        with Refresher(pool, source_url):
            ...

    A failed refresh keeps the current membership and logs one WARNING per
    outage (and one when it recovers).  ``close()`` stops the thread and waits
    for it, at most the discovery ``timeout`` plus ``CLOSE_SLACK``; a refresher
    still running at interpreter exit is closed then, the exit waiting at most
    ``EXIT_WAIT`` (1 s) for all of them.  Once closed, it never updates the pool.
    """

    def __init__(
        self,
        pool: Any,
        source_url: str,
        *,
        interval: float = DEFAULT_REFRESH_INTERVAL,
        epoch: str | int = "current",
        allowlist: bool = True,
        timeout: float = 10.0,
        allow_private: bool | None = None,
    ) -> None:
        super().__init__(pool, source_url, interval, epoch, allowlist, timeout, allow_private)
        self._thread = threading.Thread(target=self._run, name="gonka_pool Refresher", daemon=True)
        _live_refreshers.add(self)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh(stoppable=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Stop refreshing: the pool is not updated by this refresher after this
        returns.  Waits for a refresh in progress at most ``timeout`` seconds
        (None: the discovery timeout plus ``CLOSE_SLACK``, which bound it)."""
        self._stop_updates()
        if timeout is None:
            timeout = self._discovery["timeout"] + CLOSE_SLACK
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        _live_refreshers.discard(self)

    def __enter__(self) -> Refresher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Refresher({redact(self.source_url)!r}, interval={self.interval}, running={self.running})"


class AsyncRefresher(_RefresherBase):
    """``Refresher`` as an asyncio task: discovery runs in a daemon thread of its
    own, so the event loop never waits on the network, and neither its exit nor
    ``asyncio.run()``'s (which joins the default executor's threads) waits on a
    discovery under way: that one ends within its ``timeout`` and updates nothing.

        async with AsyncRefresher(pool, source_url):
            ...
    """

    def __init__(
        self,
        pool: Any,
        source_url: str,
        *,
        interval: float = DEFAULT_REFRESH_INTERVAL,
        epoch: str | int = "current",
        allowlist: bool = True,
        timeout: float = 10.0,
        allow_private: bool | None = None,
    ) -> None:
        super().__init__(pool, source_url, interval, epoch, allowlist, timeout, allow_private)
        self._task: Any = None

    def start(self) -> AsyncRefresher:
        """Start the task on the running loop (``async with`` does this)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await _in_daemon_thread(lambda: self._refresh(stoppable=True))

    async def aclose(self) -> None:
        """Stop refreshing, at once: the pool is not updated by this refresher after this."""
        self._stop_updates()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> AsyncRefresher:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _in_daemon_thread(work: Callable[[], object]) -> None:
    """Run ``work`` in a daemon thread and wait for it; cancelling the wait leaves
    the thread to finish alone (``asyncio.to_thread`` would make the loop's
    shutdown wait for it)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            work()
        finally:
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop closed meanwhile: nobody waits
                pass

    threading.Thread(target=run, name="gonka_pool AsyncRefresher", daemon=True).start()
    await done
