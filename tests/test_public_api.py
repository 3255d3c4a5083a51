"""The public API, name for name: every public module's ``__all__`` equals the list
written here.  The lists of the modules that existed before the layout change
(main at 23e7ffd) are those modules' ``__all__`` then, unchanged; a name added or
removed must be added or removed here too, on purpose."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

PUBLIC_API = {
    # Lease: added by issue 20 (pool.acquire()), on purpose.
    "gonka_pool": ["EndpointPool", "EndpointState", "GonkaEndpoint", "IMPLEMENTATION", "Lease", "RoutingError"],
    "gonka_pool.gonka": [
        "ADDRESS_PREFIX",
        "AsyncGonkaOpenAI",  # with openai and httpx2 installed; issue 22, on purpose
        "AsyncGonkaPoolTransport",  # with httpx2 installed
        "AsyncRefresher",
        "DiscoveryError",
        "Endpoint",  # gonka-openai's Endpoint: issue 22, on purpose
        "GonkaOpenAI",  # with openai and httpx2 installed; issue 22, on purpose
        "GonkaPoolTransport",  # with httpx2 installed
        "Participant",
        "Refresher",
        "Signer",
        "async_openai_client",
        "discover",
        "openai_client",
        "pool_from_gonka",
        "pool_weights",
        "refresh",
        "verify_signature",
    ],
    "gonka_pool.httpx": [
        "AsyncPoolTransport",
        "DEFAULT_ORIGIN",
        "DEFAULT_RETRY_STATUSES",
        "PoolTransport",
        "RoutingError",
    ],
    "gonka_pool.httpx2": [
        "AsyncPoolTransport",
        "DEFAULT_ORIGIN",
        "DEFAULT_RETRY_STATUSES",
        "PoolTransport",
        "RoutingError",
    ],
    # gonka_pool.metrics: added by issue 22, on purpose.
    "gonka_pool.metrics": [
        "ATTEMPT_BUCKETS",
        "LATENCY_BUCKETS",
        "OpenTelemetryMetrics",
        "PoolMetrics",
        "PrometheusCollector",
    ],
    "gonka_pool.openai": ["API_KEY_PLACEHOLDER", "TRANSPORT_OPTIONS", "async_client", "client"],
    "gonka_pool.redis": ["AsyncRedisHealth", "RedisHealth"],
    "gonka_pool.testing": [
        "BEHAVIOURS",
        "LocalGonkaNetwork",
        "LocalGonkaNode",
        "LocalNode",
        "LocalRedis",
        "SeenRequest",
        "free_port",
    ],
    "gonka_pool.testing.pytest_plugin": ["local_gonka_network", "local_node", "local_redis", "make_local_node"],
}
# What each module needs beyond the package (its extra).
NEEDS = {
    "gonka_pool.gonka": ["bech32"],
    "gonka_pool.httpx": ["httpx"],
    "gonka_pool.httpx2": ["httpx2"],
    "gonka_pool.metrics": [],  # the exporters import their libraries when built
    "gonka_pool.openai": ["openai", "httpx2"],
    "gonka_pool.redis": [],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_the_public_names_are_exactly_the_listed_ones(module_name):
    missing = [name for name in NEEDS.get(module_name, []) if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{module_name} needs {', '.join(missing)}")
    module = importlib.import_module(module_name)
    expected = set(PUBLIC_API[module_name])
    if module_name == "gonka_pool.gonka" and importlib.util.find_spec("httpx2") is None:
        expected -= {"AsyncGonkaPoolTransport", "GonkaPoolTransport"}
    if module_name == "gonka_pool.gonka" and None in (importlib.util.find_spec(m) for m in ("httpx2", "openai")):
        expected -= {"AsyncGonkaOpenAI", "GonkaOpenAI"}
    assert sorted(module.__all__) == sorted(expected)
    assert len(module.__all__) == len(set(module.__all__))
    assert [name for name in module.__all__ if not hasattr(module, name)] == []
