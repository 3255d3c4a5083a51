"""pytest-benchmark benches for both implementations: ``make bench-pytest``."""

from __future__ import annotations

import pytest

from gonka_pool import GonkaEndpoint, _pool_py
from gonka_pool._facade import PoolFacade

try:
    from gonka_pool import _pool as _pool_c
except ImportError:  # pragma: no cover
    _pool_c = None

CORES = {"pure-python": _pool_py.EndpointPoolCore}
if _pool_c is not None:
    CORES["c"] = _pool_c.EndpointPoolCore


@pytest.fixture(params=sorted(CORES), scope="session")
def pool_class(request):
    return type("EndpointPool", (PoolFacade, CORES[request.param]), {"__slots__": ()})


@pytest.fixture
def make_pool(pool_class):
    def make(n: int):
        return pool_class(GonkaEndpoint(f"https://node{i}.bench", f"addr{i}") for i in range(n))

    return make
