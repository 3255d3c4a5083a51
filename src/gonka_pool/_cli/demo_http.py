"""``python -m gonka_pool demo``, second part: failover across three local HTTP nodes.

Three OpenAI-compatible nodes (``LocalNode``) listen on 127.0.0.1; several threads
share one official ``openai.OpenAI`` client built by ``gonka_pool.openai.client``
(its ``httpx2.Client`` sends through ``PoolTransport``).  Midway node2 is stopped and node3 starts answering 503 with
``Retry-After``; then both are restored.  It prints who answered in each phase,
every cooldown the transport took (from the ``gonka_pool`` logger), and whether
any request failed.  Needs ``pip install gonka-pool[openai]``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from .. import EndpointPool, GonkaEndpoint
from ..testing import LocalNode

__all__ = ["demo_http"]

THREADS = 4
# Short cooldowns, so that recovery shows within a few seconds.
COOLDOWN = 0.5
RETRY_AFTER = 1


class _Cooldowns(logging.Handler):
    """Collects the cooldown records of the ``gonka_pool`` logger (one per node
    that entered a cooldown)."""

    def __init__(self, start: float) -> None:
        super().__init__(logging.WARNING)
        self.start = start
        self.taken: list[tuple[float, GonkaEndpoint, str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "gonka_cooldown"):
            fields = vars(record)  # log_cooldown's extra= fields, unknown to LogRecord's type
            self.taken.append(
                (
                    record.created - self.start,
                    fields["gonka_endpoint"],
                    fields["gonka_reason"] or "marked",
                    fields["gonka_cooldown"],
                )
            )


def demo_http(phase_seconds: float = 0.6, out: Callable[[str], object] = print) -> int:
    """Run the demo; returns how many requests failed (0 is the point)."""
    try:
        import openai

        from ..openai import client as openai_client
    except ImportError:
        out("failover over HTTP: skipped, needs the openai SDK (pip install 'gonka-pool[openai]')")
        return 0

    nodes = [LocalNode(f"node{i}", retry_after=RETRY_AFTER).start() for i in (1, 2, 3)]
    _, node2, node3 = nodes
    pool = EndpointPool(GonkaEndpoint(node.url, f"gonka1{node.name}") for node in nodes)
    # base URL http://gonka (the transport picks the node), no SDK retries on top
    # of the pool's failover, a placeholder API key.
    client = openai_client(pool, cooldown=COOLDOWN, timeout=5.0, deadline=10.0)

    def stop_and_overload() -> None:
        node2.stop()
        node3.behaviour = "unavailable"

    def restore() -> None:
        node2.start()
        node3.behaviour = "ok"

    phases: list[tuple[str, Callable[[], None]]] = [
        ("all three nodes healthy", lambda: None),
        (f"node2 stopped, node3 503 (Retry-After: {RETRY_AFTER})", stop_and_overload),
        ("node2 restarted, node3 healthy again", restore),
    ]
    current = [0]
    answered: Counter[tuple[int, str]] = Counter()
    failed: Counter[int] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    done = threading.Event()

    def ask() -> str:
        reply = client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}])
        return (reply.choices[0].message.content or "").removeprefix("hello from ")

    def worker() -> None:
        while not done.is_set():
            phase = current[0]  # a request counts in the phase it started in
            try:
                name = ask()
                with lock:
                    answered[phase, name] += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported below
                with lock:
                    failed[phase] += 1
                    errors.append(exc)
            time.sleep(0.01)

    # One request before the threads start: openai 3.3 with pydantic 2.12 (what
    # resolves on 3.13t) builds its response models lazily, and concurrent first
    # uses of a fresh client can raise PydanticUserError, with or without the GIL.
    ask()
    logger = logging.getLogger("gonka_pool")
    start = time.monotonic()
    cooldowns = _Cooldowns(time.time())
    saved_level = logger.level
    logger.addHandler(cooldowns)
    logger.setLevel(logging.WARNING)
    workers = [threading.Thread(target=worker, name=f"demo worker {k}") for k in range(THREADS)]
    try:
        for phase, (_, change) in enumerate(phases):
            change()
            current[0] = phase
            if phase == 0:
                for thread in workers:
                    thread.start()
            time.sleep(phase_seconds)
        done.set()
        for thread in workers:
            thread.join()
    finally:
        done.set()
        logger.removeHandler(cooldowns)
        logger.setLevel(saved_level)
        client.close()
        for node in nodes:
            node.stop()
    elapsed = time.monotonic() - start

    out("")
    out(
        f"failover over HTTP: {len(nodes)} OpenAI-compatible nodes on 127.0.0.1, "
        f"{THREADS} threads sharing one openai {openai.__version__} client over "
        f"httpx2 + PoolTransport (cooldown {COOLDOWN} s)"
    )
    width = max(len(label) for label, _ in phases)
    out(f"  {'answered by':<{width}}  " + "  ".join(f"{n.name:>5}" for n in nodes) + "  failed")
    for phase, (label, _) in enumerate(phases):
        counts = "  ".join(f"{answered[phase, n.name]:>5}" for n in nodes)
        out(f"  {label:<{width}}  {counts}  {failed[phase]:>6}")
    out("  cooldowns taken:")
    names = {endpoint: node.name for endpoint, node in zip(pool.endpoints, nodes, strict=True)}
    for at, endpoint, reason, seconds in cooldowns.taken:
        out(f"    +{at:.2f} s  {names.get(endpoint, endpoint.base_url)}  {reason:<22} skipped for {seconds:g} s")
    total = sum(answered.values()) + sum(failed.values())
    if errors:
        out(f"  {len(errors)} of {total} requests FAILED, first: {errors[0]!r}")
    else:
        out(f"  no request failed: {total} of {total} answered in {elapsed:.1f} s")
    return len(errors)
