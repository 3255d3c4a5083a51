"""The sdist installs anywhere (issue 23): with a C compiler it builds the C core;
without one it installs the pure-Python twin, with one warning that names the cause
and GONKA_POOL_NO_EXTENSIONS; and it carries what its tests and the README's links
read.  Each install runs in a fresh virtual environment with no index reachable
(``pip install --no-index``), the build dependencies taken from a local folder.

Slow (the sdist, then two builds of it: about a minute on 2 cores) and it needs the
build dependencies as wheels, so it runs only with ``GONKA_POOL_TEST_SDIST=1``:
from ``GONKA_POOL_SDIST_WHEELHOUSE`` (a folder holding setuptools and Cython wheels)
where set, else ``pip download`` fetches them first.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_REQUIREMENTS = ["setuptools>=77", "Cython>=3.1"]

pytestmark = [
    pytest.mark.skipif(not os.environ.get("GONKA_POOL_TEST_SDIST"), reason="set GONKA_POOL_TEST_SDIST=1 (slow)"),
    pytest.mark.skipif(sys.implementation.name != "cpython", reason="the C core builds on CPython only"),
    pytest.mark.skipif(sys.platform == "win32", reason="CC=/bin/false stands for a missing compiler on POSIX only"),
    pytest.mark.thread_unsafe(reason="builds in subprocesses, a minute each"),
]


def python_of(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def fresh_venv(env_dir: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    return python_of(env_dir)


def run(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def clean_env(**changes: str) -> dict[str, str]:
    """This environment without the variables that make the build require the C core
    (make exports GONKA_POOL_REQUIRE_C) or choose the twin, and without an index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GONKA_POOL_", "PIP_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(changes)
    return env


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("GONKA_POOL_SDIST_WHEELHOUSE")
    if given:
        return Path(given)
    folder = tmp_path_factory.mktemp("wheelhouse")
    run(sys.executable, "-m", "pip", "download", "--only-binary=:all:", "-d", folder, *BUILD_REQUIREMENTS)
    return folder


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    """The sdist, made by setuptools' PEP 517 hook from this checkout, in a venv that
    holds only the build dependencies."""
    base = tmp_path_factory.mktemp("sdist")
    python = fresh_venv(base / "venv")
    run(python, "-m", "pip", "install", "--no-index", "--find-links", wheelhouse, *BUILD_REQUIREMENTS, env=clean_env())
    out = base / "dist"
    hook = f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"
    run(python, "-c", hook, cwd=ROOT, env=clean_env())
    (made,) = out.glob("*.tar.gz")
    return made


def install(sdist: Path, wheelhouse: Path, env_dir: Path, **env: str) -> tuple[Path, str]:
    python = fresh_venv(env_dir)
    log = run(
        python, "-m", "pip", "install", "-v", "--no-cache-dir", "--no-index", "--find-links", wheelhouse, sdist,
        env=clean_env(**env),
    )  # fmt: skip
    return python, log


def implementation(python: Path) -> str:
    # From outside the checkout, so that the installed package is the one imported.
    return run(python, "-c", "import gonka_pool; print(gonka_pool.IMPLEMENTATION)", cwd=python.parent).strip()


def test_the_sdist_carries_the_test_data_the_docs_and_the_changelog(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
    assert "tests/data/gonka_vectors.json" in names  # read by test_gonka.py at import
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#]*)", readme))
    assert "CHANGELOG.md" in linked
    assert linked <= names, f"README links missing from the sdist: {sorted(linked - names)}"


def test_with_a_compiler_the_sdist_builds_the_c_core(sdist: Path, wheelhouse: Path, tmp_path: Path) -> None:
    python, log = install(sdist, wheelhouse, tmp_path / "venv")
    assert "could not be built" not in log
    assert implementation(python) == "c"


def test_without_a_compiler_the_sdist_installs_the_twin_with_one_warning(
    sdist: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    python, log = install(sdist, wheelhouse, tmp_path / "venv", CC="/bin/false")
    warnings = [line for line in log.splitlines() if "WARNING: gonka-pool's C core could not be built" in line]
    assert len(warnings) == 1, log
    assert "CompileError" in warnings[0]  # the cause
    assert "GONKA_POOL_NO_EXTENSIONS=1" in warnings[0]
    assert re.search(r"gonka_pool-[^ ]*-py3-none-any\.whl", log), "the twin's wheel must not claim a platform"
    assert implementation(python) == "python"
