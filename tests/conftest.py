"""One suite, two implementations: every pool test runs on the C core and the twin.

As in aio-libs' propcache/multidict: the ``pool_impl`` fixture is parametrized over
``c-extension-module`` and ``pure-python-module``; ``--no-c-extensions`` drops the
former.  With ``GONKA_POOL_REQUIRE_C=1`` (set by ``make test``) a C core that fails
to import is an error, not a skip, so a broken build cannot pass as "twin only".
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from gonka_pool import GonkaEndpoint, _pool_py
from gonka_pool._schedule import schedule_plan

_pool_c: ModuleType | None
try:
    from gonka_pool import _pool as _pool_c
except ImportError:  # pragma: no cover - depends on the build
    if os.environ.get("GONKA_POOL_REQUIRE_C"):
        raise
    _pool_c = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-c-extensions",
        action="store_true",
        default=False,
        help="run only the pure-Python twin",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return [
        f"gonka_pool C core: {'loaded' if _pool_c else 'missing'}; GIL enabled: {gil}",
    ]


@dataclass(frozen=True)
class PoolImpl:
    """One implementation under test: its EndpointPool class and core module."""

    name: str
    EndpointPool: Any
    module: Any

    def make(self, n: int, **settings: Any) -> Any:
        """A pool of ``nodes(n)``, starting at node 0 unless ``start`` says otherwise."""
        settings.setdefault("start", 0)
        return self.EndpointPool(nodes(n), **settings)


IMPLS = {"pure-python-module": PoolImpl("python", _pool_py.EndpointPool, _pool_py)}
if _pool_c is not None:
    IMPLS["c-extension-module"] = PoolImpl("c", _pool_c.EndpointPool, _pool_c)


# Numbers of other types, as users pass them (numpy ints, Decimal), and broken ones.
class Index:
    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


class BrokenIndex:
    def __index__(self):
        raise RuntimeError("__index__ failed")


class Real:
    def __init__(self, value):
        self.value = value

    def __float__(self):
        return self.value


class BrokenReal:
    def __float__(self):
        raise RuntimeError("__float__ failed")


def nodes(n: int) -> list[GonkaEndpoint]:
    """The seed's test nodes: https://node{i}.example / addr{i}."""
    return [GonkaEndpoint(f"https://node{i}.example", f"addr{i}") for i in range(n)]


def url_to_idx(url: str, n: int) -> int:
    for i in range(n):
        if url == f"https://node{i}.example":
            return i
    raise AssertionError(f"unrecognised url: {url}")


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("c-extension-module", marks=pytest.mark.c_extension),
        "pure-python-module",
    ],
)
def pool_impl(request: pytest.FixtureRequest) -> PoolImpl:
    if request.param == "c-extension-module":
        if request.config.getoption("--no-c-extensions"):
            pytest.skip("--no-c-extensions")
        if _pool_c is None:
            pytest.skip("C extension not built")
    return IMPLS[request.param]


@pytest.fixture
def make_pool(pool_impl: PoolImpl):
    return pool_impl.make


@pytest.fixture(scope="session")
def both_impls() -> tuple[PoolImpl, PoolImpl]:
    """(C, twin) for tests that compare the two."""
    if _pool_c is None:
        pytest.skip("C extension not built")
    return IMPLS["c-extension-module"], IMPLS["pure-python-module"]


free_threaded_only = pytest.mark.skipif(
    getattr(sys, "_is_gil_enabled", lambda: True)(),
    reason="needs a free-threaded interpreter with the GIL disabled",
)


def c_schedule(weights: tuple[int, ...]) -> list[int] | None:
    """The C core's table for ``weights`` (None when all are equal): what its
    weighted pools select from, compared with the twin's ``schedule_table_py``."""
    plan = schedule_plan(weights)
    if plan is None:
        return None
    if _pool_c is None:
        pytest.skip("C extension not built")
    return _pool_c._schedule_table(plan.slots, plan.smooth)
