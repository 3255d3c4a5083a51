"""Fakes for testing code built on gonka-pool, without the network.

    from gonka_pool.testing import LocalNode

    with LocalNode("node0", behaviour="unavailable") as node:   # 503 + Retry-After
        ...                                                    # point a pool at node.url
        node.behaviour = "ok"                                  # switch it at any time

- ``LocalNode``: an OpenAI-compatible HTTP node on 127.0.0.1 that answers
  ``POST /v1/chat/completions`` (JSON, or server-sent events for ``"stream":
  true``) and can be switched, while it runs, to misbehave as real nodes do
  (``BEHAVIOURS``: 503, 429, 401, a stall, a broken stream, a redirect).  It
  records what it read (``seen``) and the statuses it sent (``statuses``).
- ``LocalGonkaNetwork`` / ``LocalGonkaNode``: a Gonka network whose nodes serve
  the participants list and the chain's allowlist, and check every request as a
  real node does: the allowlist, the signature, the timestamp window, single use
  of a signature, capacity.  The signature check needs the ``[gonka]`` extra.
- ``LocalRedis``: a ``redis-server`` of its own on a free port (the binary must
  be installed; Debian's ``redis-server`` package).
- ``free_port()``: a port of 127.0.0.1 that nothing listens on (a node that
  refuses at once).

The pytest plugin (``gonka_pool.testing.pytest_plugin``, loaded by pytest
through its entry point once gonka-pool is installed) offers them as fixtures:
``local_node``, ``make_local_node``, ``local_gonka_network`` and ``local_redis``.
See docs/testing.md.  Standard library only, as the servers are; everything
binds 127.0.0.1.
"""

from __future__ import annotations

from ._gonka_network import LocalGonkaNetwork, LocalGonkaNode
from ._node import BEHAVIOURS, LocalNode, SeenRequest, free_port
from ._redis import LocalRedis

__all__ = [
    "BEHAVIOURS",
    "LocalNode",
    "SeenRequest",
    "free_port",
    "LocalGonkaNetwork",
    "LocalGonkaNode",
    "LocalRedis",
]
