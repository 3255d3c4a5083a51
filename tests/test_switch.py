"""One implementation switch: only ``gonka_pool/__init__.py`` imports the C core.

A module that imported ``gonka_pool._pool`` itself would load the C core even with
``GONKA_POOL_NO_EXTENSIONS=1``, and would run the C core where the package runs the
twin (after a failed import, on PyPy), so tests of the twin would not test the twin.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gonka_pool

PACKAGE = Path(gonka_pool.__file__).parent
USER_SCRIPT = Path(__file__).parent / "typing" / "ok.py"


def imports_the_c_core(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            full = "gonka_pool." * (node.level > 0) + (node.module or "")
            if full.strip(".") == "gonka_pool._pool" or (
                full.strip(".") == "gonka_pool" and any(alias.name == "_pool" for alias in node.names)
            ):
                return True
        elif isinstance(node, ast.Import) and any(alias.name == "gonka_pool._pool" for alias in node.names):
            return True
    return False


def test_no_module_but_the_switch_imports_the_c_core():
    importers = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if imports_the_c_core(path))
    assert importers == ["__init__.py"]


def test_the_whole_public_api_on_the_twin_never_loads_the_c_core():
    for needed in ("httpx", "httpx2", "openai"):
        pytest.importorskip(needed, reason=f"{needed} is not installed (tests/typing/ok.py needs it)")
    # tests/typing/ok.py calls every public API (pool, marks, snapshot, update,
    # call/acall, both transports with a request each, the openai builders); then
    # the modules the script does not touch are imported too.
    code = (
        "import runpy, sys, importlib.util\n"
        f"runpy.run_path({str(USER_SCRIPT)!r}, run_name='__main__')\n"
        "import gonka_pool, gonka_pool.__main__\n"
        "if importlib.util.find_spec('bech32') and importlib.util.find_spec('ecdsa'):\n"
        "    import gonka_pool.gonka\n"
        "assert gonka_pool.IMPLEMENTATION == 'python', gonka_pool.IMPLEMENTATION\n"
        "assert 'gonka_pool._pool_py' in sys.modules\n"
        "assert 'gonka_pool._pool' not in sys.modules\n"
        "print('twin only')\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "GONKA_POOL_NO_EXTENSIONS": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "twin only"
