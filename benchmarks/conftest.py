"""pytest-benchmark benches for both implementations: ``make bench-pytest``."""

from __future__ import annotations

import pytest

from gonka_pool import GonkaEndpoint, _pool_py

try:
    from gonka_pool import _pool as _pool_c
except ImportError:  # pragma: no cover
    _pool_c = None

CLASSES = {"pure-python": _pool_py.EndpointPool}
if _pool_c is not None:
    CLASSES["c"] = _pool_c.EndpointPool


@pytest.fixture(params=sorted(CLASSES), scope="session")
def pool_class(request):
    return CLASSES[request.param]


@pytest.fixture
def make_pool(pool_class):
    def make(n: int):
        return pool_class(GonkaEndpoint(f"https://node{i}.bench", f"addr{i}") for i in range(n))

    return make
