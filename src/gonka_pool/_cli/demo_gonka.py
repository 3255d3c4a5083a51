"""``python -m gonka_pool demo``, Gonka part: discovery, then signed requests with
failover while nodes refuse.

A local Gonka network (``_gonka_local``) of three nodes listens on 127.0.0.1; each
verifies every request's signature, timestamp and single use as a real node does.
``gonka_pool.gonka.openai_client`` discovers them from the participants endpoint
and signs every attempt for the node it goes to.  Midway node2 reaches capacity
(429) and node3 falls off the chain's transfer-agent allowlist (403); a refresh
then drops node3 from the membership.  It prints who answered and what each node
refused, and returns how many requests failed.  Needs ``pip install
'gonka-pool[gonka]'``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

__all__ = ["demo_gonka"]

# A demo key (never a real account's): the local chain knows its public key.
DEMO_KEY = "0x" + "42" * 32
REQUESTS_PER_PHASE = 6
# A short cooldown, so that node2's recovery shows within the demo.
COOLDOWN = 0.5


def demo_gonka(out: Callable[[str], object] = print) -> int:
    """Run the demo; returns how many requests failed (0 is the point)."""
    try:
        from ..gonka import Signer, discover, openai_client, refresh
    except ImportError:
        out("gonka: skipped, needs pip install 'gonka-pool[gonka]'")
        return 0
    try:
        import openai
    except ImportError:
        out("gonka: skipped, needs the openai SDK (pip install 'gonka-pool[gonka]')")
        return 0
    from ..testing import LocalGonkaNetwork

    network = LocalGonkaNetwork()
    for i in (1, 2, 3):
        key = format(0x4200 + i, "064x")
        network.add_node(f"node{i}", Signer(key, backend="ecdsa").address, weight=10 * i)
    signer = Signer(DEMO_KEY)
    network.register(signer)
    failed = 0
    with network:
        # The local network is on 127.0.0.1: private addresses are allowed, by choice.
        found = discover(network.source_url, allow_private=True)
        out(
            f"gonka: discovered {len(found)} nodes from {network.source_url}"
            f"{'/v1/epochs/current/participants'}: "
            + ", ".join(f"{p.endpoint.address[:12]}... weight {p.weight}" for p in found)
        )
        out(f"gonka: signing as {signer.address} with {signer.backend}")
        client = openai_client(
            DEMO_KEY,
            source_url=network.source_url,
            allow_private=True,
            # Round robin, so that each phase's few requests, one after another, visit
            # every node and show its refusal: the default, peak_ewma, sends them to
            # whichever node answers soonest and may never meet node2's 429.
            pool_options={"balance": "round_robin"},
            refresh_interval=None,
            cooldown=COOLDOWN,
            deadline=10.0,
            timeout=5.0,
        )

        def phase(title: str) -> None:
            nonlocal failed
            answered: Counter[str] = Counter()
            for node in network.nodes:
                node.reset()
            for _ in range(REQUESTS_PER_PHASE):
                try:
                    reply = client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}])
                    answered[reply.choices[0].message.content.rpartition(" ")[2]] += 1
                except openai.APIError as exc:
                    failed += 1
                    answered[f"failed ({type(exc).__name__})"] += 1
            refused = {node.name: dict(node.refusals) for node in network.nodes if node.refusals}
            out(
                f"gonka: {title}: answered by {dict(sorted(answered.items()))}"
                + (f"; refused: {refused}" if refused else "")
            )

        phase("all nodes serve")
        network.nodes[1].at_capacity = True
        network.allowlist = [network.nodes[0].address, network.nodes[1].address]
        phase("node2 at capacity (429), node3 off the allowlist (403)")
        network.nodes[1].at_capacity = False
        refresh(client.gonka_pool, network.source_url, allow_private=True)
        time.sleep(COOLDOWN + 0.1)
        out(f"gonka: after a refresh the pool has {len(client.gonka_pool)} nodes (node3 dropped by the allowlist)")
        phase("node2 recovered")
        client.close()
    return failed
