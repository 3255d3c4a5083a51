"""gonka_pool.testing's fixtures, as a user's test gets them from the installed
pytest plugin: started, usable, and stopped when the test ends."""

from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.request

import pytest

import gonka_pool.testing
from gonka_pool.testing import LocalGonkaNetwork, LocalNode, LocalRedis

pytestmark = pytest.mark.thread_unsafe(reason="each fixture's servers are shared by the test's threads")


def post(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url + "/chat/completions", data=b"{}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:  # it holds the response: 3.14 warns when the collector closes it
            return exc.code, exc.read()


def test_the_plugin_is_loaded_through_its_entry_point(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("gonka_pool")


def test_local_node_answers_and_switches_behaviour(local_node):
    assert isinstance(local_node, LocalNode)
    status, body = post(local_node.url)
    assert status == 200 and b"hello from node0" in body
    local_node.behaviour = "unavailable"
    assert post(local_node.url)[0] == 503
    assert local_node.statuses == {200: 1, 503: 1}


def test_make_local_node_starts_each_node_it_makes(make_local_node):
    nodes = [make_local_node(f"n{i}", behaviour) for i, behaviour in enumerate(["ok", "rate-limited"])]
    assert [post(node.url)[0] for node in nodes] == [200, 429]
    assert b"hello from n0" in post(nodes[0].url)[1]


@pytest.mark.skipif(importlib.util.find_spec("ecdsa") is None, reason="the [gonka] extra is not installed")
def test_local_gonka_network_lists_three_nodes_and_checks_signatures(local_gonka_network):
    assert isinstance(local_gonka_network, LocalGonkaNetwork)
    with urllib.request.urlopen(local_gonka_network.source_url + "/v1/epochs/current/participants") as response:
        participants = json.load(response)["active_participants"]["participants"]
    assert [(p["index"], p["weight"]) for p in participants] == [
        ("gonka1node0", 10),
        ("gonka1node1", 20),
        ("gonka1node2", 30),
    ]
    assert post(local_gonka_network.nodes[0].url)[0] == 401  # unsigned


def test_local_redis_answers_ping(local_redis):
    import socket

    assert isinstance(local_redis, LocalRedis)
    assert local_redis.url == f"redis://127.0.0.1:{local_redis.port}/0"
    with socket.create_connection(("127.0.0.1", local_redis.port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16).startswith(b"+PONG")


def test_every_public_name_is_documented():
    for name in gonka_pool.testing.__all__:
        item = getattr(gonka_pool.testing, name)
        if callable(item):
            assert (item.__doc__ or "").strip(), name
