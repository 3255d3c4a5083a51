"""The examples in the package's docstrings run, and print what they show.

Run here rather than by ``pytest --doctest-modules src/gonka_pool``: that imports
the source tree's modules, where a fresh clone has no compiled C core, while the
suite tests the installed package.  So the doctests are found, with
``doctest.DocTestFinder``, in the modules of the ``gonka_pool`` that the tests
import, and each runs once; an example that builds an ``EndpointPool`` runs once
per core.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import types
from pathlib import Path

import pytest

import gonka_pool

# doctest's runner swaps sys.stdout (and sys.displayhook) for the whole process
# while it runs, so two at once would read each other's output.
pytestmark = pytest.mark.thread_unsafe(reason="doctest swaps the process-wide sys.stdout")


def installed_modules() -> list[str]:
    # walk_packages: the subpackages' modules too (gonka_pool.gonka._signing ...).
    return ["gonka_pool", *(info.name for info in pkgutil.walk_packages(gonka_pool.__path__, "gonka_pool."))]


def import_module(name: str) -> types.ModuleType | None:
    """The module, or None when an optional dependency of it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if exc.name is None or exc.name.partition(".")[0] == "gonka_pool":
            raise  # the package itself is broken, not an extra missing
        return None


def find_doctests(module_name: str) -> list[doctest.DocTest]:
    """The module's docstrings that hold examples, each parsed afresh (a run clears
    its DocTest's globals, so none is reused)."""
    module = import_module(module_name)
    if module is None:
        return []
    finder = doctest.DocTestFinder()
    return [test for test in finder.find(module) if test.examples]


def collect() -> tuple[list[object], list[object]]:
    """(pytest params of the doctests that need no pool, of those that build one)."""
    plain: list[object] = []
    with_pool: list[object] = []
    for module_name in installed_modules():
        if import_module(module_name) is None:
            skip = pytest.mark.skip(reason=f"{module_name}: an optional dependency is not installed")
            plain.append(pytest.param(module_name, module_name, marks=skip, id=module_name))
            continue
        for test in find_doctests(module_name):
            uses_pool = any("EndpointPool" in example.source for example in test.examples)
            (with_pool if uses_pool else plain).append(pytest.param(module_name, test.name, id=test.name))
    return plain, with_pool


PLAIN, WITH_POOL = collect()


def run_doctest(module_name: str, test_name: str) -> None:
    (test,) = [test for test in find_doctests(module_name) if test.name == test_name]
    report: list[str] = []
    runner = doctest.DocTestRunner(verbose=False)
    result = runner.run(test, out=report.append)
    assert result.attempted == len(test.examples)
    assert result.failed == 0, "".join(report)


@pytest.mark.parametrize(("module_name", "test_name"), PLAIN)
def test_docstring_examples_print_what_they_show(module_name: str, test_name: str) -> None:
    run_doctest(module_name, test_name)


@pytest.mark.parametrize(("module_name", "test_name"), WITH_POOL)
def test_pool_examples_hold_on_each_core(
    module_name: str, test_name: str, pool_impl, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The examples import EndpointPool from the package, which is the C core when it
    # loads; the twin stands behind the same name with GONKA_POOL_NO_EXTENSIONS=1.
    monkeypatch.setattr(gonka_pool, "EndpointPool", pool_impl.EndpointPool)
    run_doctest(module_name, test_name)


def test_every_example_in_the_package_is_run() -> None:
    # An example that DocTestFinder cannot reach (in a comment, in a nested function,
    # on a name imported from elsewhere) would otherwise go unchecked in silence.
    prompts = {}
    examples = {}
    for module_name in installed_modules():
        module = import_module(module_name)
        path = getattr(module, "__file__", None) or ""
        if path.endswith(".py"):
            lines = Path(path).read_text(encoding="utf-8").splitlines()
            prompts[module_name] = sum(line.lstrip().startswith(">>>") for line in lines)
            examples[module_name] = sum(len(test.examples) for test in find_doctests(module_name))
    assert sum(prompts.values()) > 0, "no docstring example found in the installed package"
    assert examples == prompts
