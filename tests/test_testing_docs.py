"""docs/testing.md's examples run: each ``python`` block that starts with a
``# test_*.py`` line is written to that file and run by pytest in a fresh
interpreter, with the fixtures of the installed plugin (its ``pytest11`` entry
point), as a user's suite would run it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
BLOCK = re.compile(r"^```python\n(# (test_\w+\.py)\b.*?)^```$", re.MULTILINE | re.DOTALL)
# What each example needs beyond the package itself.
NEEDS = {"test_gonka_client.py": ("openai", "httpx2", "bech32", "ecdsa")}

pytestmark = pytest.mark.thread_unsafe(reason="runs pytest in a subprocess; one run at a time is enough")


def examples() -> list[tuple[str, str]]:
    return [(match.group(2), match.group(1)) for match in BLOCK.finditer(DOC.read_text(encoding="utf-8"))]


def test_the_testing_guide_has_its_examples():
    assert [name for name, _ in examples()] == ["test_failover.py", "test_gonka_client.py"]


@pytest.mark.parametrize(("name", "code"), examples(), ids=[name for name, _ in examples()])
def test_the_testing_guide_examples_pass_under_pytest(name, code, tmp_path):
    missing = [module for module in NEEDS.get(name, ()) if importlib.util.find_spec(module) is None]
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}")
    (tmp_path / name).write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout, proc.stdout
