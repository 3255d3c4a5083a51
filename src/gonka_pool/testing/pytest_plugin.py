"""pytest fixtures over ``gonka_pool.testing``'s fakes.

pytest loads this plugin by itself once gonka-pool is installed (the ``pytest11``
entry point ``gonka_pool``); ``-p no:gonka_pool`` turns it off.  Every fixture is
function-scoped: what it starts, it stops when the test ends.

- ``local_node``: one started ``LocalNode`` named ``node0``, answering "ok".
- ``make_local_node(name, behaviour="ok", **options)``: starts a ``LocalNode``
  per call (options as ``LocalNode`` takes them).
- ``local_gonka_network``: a started ``LocalGonkaNetwork`` of three nodes,
  ``node0`` to ``node2`` (addresses ``gonka1node0`` ...; weights 10, 20, 30),
  every transfer agent allowed; ``register(signer)`` a ``Signer`` before its
  requests will pass.  Its signature check needs the ``[gonka]`` extra.
- ``local_redis``: a started ``LocalRedis``; the test is skipped when no
  ``redis-server`` binary is installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._gonka_network import LocalGonkaNetwork
from ._node import LocalNode
from ._redis import LocalRedis

__all__ = ["local_gonka_network", "local_node", "local_redis", "make_local_node"]


@pytest.fixture
def make_local_node() -> Iterator[Callable[..., LocalNode]]:
    """``make_local_node(name, behaviour="ok", **options)``: a started
    ``LocalNode``; all of them are stopped when the test ends."""
    started: list[LocalNode] = []

    def make(name: str, behaviour: str = "ok", **options: Any) -> LocalNode:
        node = LocalNode(name, behaviour, **options).start()
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()


@pytest.fixture
def local_node(make_local_node: Callable[..., LocalNode]) -> LocalNode:
    """A started ``LocalNode`` named ``node0`` that answers "ok"."""
    return make_local_node("node0")


@pytest.fixture
def local_gonka_network() -> Iterator[LocalGonkaNetwork]:
    """A started ``LocalGonkaNetwork`` of three nodes, ``node0`` to ``node2``."""
    network = LocalGonkaNetwork()
    for i in range(3):
        network.add_node(f"node{i}", f"gonka1node{i}", weight=10 * (i + 1))
    with network:
        yield network


@pytest.fixture
def local_redis() -> Iterator[LocalRedis]:
    """A started ``LocalRedis``; skips the test when ``redis-server`` is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary (Debian: apt-get install redis-server)")
    with LocalRedis(binary) as server:
        yield server
