"""How the package loads: implementation choice, the GIL, the no-frame hot path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import gonka_pool
from conftest import _pool_c


def run_python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return result.stdout.strip()


def test_public_names_are_exported():
    assert set(gonka_pool.__all__) >= {"EndpointPool", "GonkaEndpoint", "IMPLEMENTATION"}
    assert gonka_pool.IMPLEMENTATION in ("c", "python")


@pytest.mark.c_extension
@pytest.mark.skipif(_pool_c is None, reason="C extension not built")
def test_the_c_core_is_used_when_it_loads():
    assert gonka_pool.IMPLEMENTATION == "c"
    assert gonka_pool.EndpointPool is _pool_c.EndpointPool


@pytest.mark.c_extension
@pytest.mark.skipif(_pool_c is None, reason="C extension not built")
def test_hot_methods_are_c_method_descriptors_of_the_pool_type_itself():
    # No Python frame per call, and no Python subclass in between: CPython's
    # specialized method call needs the exact type that defines the method.
    pool_cls = gonka_pool.EndpointPool
    for name in ("next", "next_indexed", "next_many", "mark_failed", "mark_success"):
        method = pool_cls.__dict__[name]
        assert type(method).__name__ == "method_descriptor", name
    pool = gonka_pool.EndpointPool([gonka_pool.GonkaEndpoint("https://a", "b")])
    assert not hasattr(pool, "__dict__")


def test_no_extensions_variable_selects_the_pure_twin():
    out = run_python(
        "import gonka_pool; print(gonka_pool.IMPLEMENTATION, gonka_pool.EndpointPool.__module__)",
        GONKA_POOL_NO_EXTENSIONS="1",
    )
    assert out == "python gonka_pool._pool_py"


def test_the_twin_is_used_when_the_extension_cannot_load():
    out = run_python(
        """
        import sys
        sys.modules["gonka_pool._pool"] = None   # makes the import fail
        import gonka_pool
        print(gonka_pool.IMPLEMENTATION)
        """
    )
    assert out == "python"


@pytest.mark.skipif(not hasattr(sys, "_is_gil_enabled"), reason="needs 3.13+")
@pytest.mark.skipif(not __import__("sysconfig").get_config_var("Py_GIL_DISABLED"), reason="free-threaded build only")
def test_importing_the_package_leaves_the_gil_disabled():
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            "import sys, gonka_pool; print(gonka_pool.IMPLEMENTATION, sys._is_gil_enabled())",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert result.stdout.split() == ["c", "False"], result.stderr


def test_demo_runs_and_shows_each_behaviour():
    out = run_python("from gonka_pool.__main__ import main; main(['demo'])")
    assert "round robin" in out and "cooling down" in out and "all nodes cooling" in out
