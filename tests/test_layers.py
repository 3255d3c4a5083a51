"""The import graph runs one way: each layer imports only its own and the layers
below it (docs/development.md opens with the map).

    core          _endpoint _clock _convert _schedule _report _balance _client_errors _failover
                  _pool_common _pool _pool_py
    request path  _transport httpx httpx2 openai metrics _prometheus;   shared health  _redis_common redis
    facade        gonka_pool/__init__ (picks the core; RoutingError from _transport)
    gonka         gonka/ (signing, discovery, refreshing, the judge, the clients)
    fakes         testing/ (LocalNode, LocalGonkaNetwork, LocalRedis, the pytest plugin)
    tools         _cli/, __main__

The one documented exception: ``EndpointPool.from_gonka`` (in ``_pool.pyx`` and
``_pool_py.py``) imports ``gonka_pool.gonka`` lazily, inside the method, so that
the constructor sits beside ``from_env``; the core works with it unimportable.

Checked twice: statically, every import statement of every module; and at run
time, each layer imported and used in a fresh interpreter where importing any
layer above it raises ImportError.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gonka_pool

# The source tree's modules when the suite runs from a checkout (the wheel leaves
# out _pool.pyx), else the installed package's.
SOURCE = Path(__file__).resolve().parent.parent / "src" / "gonka_pool"
PACKAGE = SOURCE if SOURCE.is_dir() else Path(gonka_pool.__file__).parent

CORE = 0
REQUEST_PATH = 1  # and shared health: both rest on the core alone
FACADE = 2
GONKA = 3
FAKES = 4
TOOLS = 5

# Module (dotted, under gonka_pool; "" is the package itself) -> layer; a
# subpackage's modules share its layer.
LAYERS = {
    **dict.fromkeys(
        [
            "_endpoint",
            "_clock",
            "_convert",
            "_schedule",
            "_report",
            "_balance",
            "_client_errors",
            "_failover",
            "_pool_common",
            "_pool",
            "_pool_py",
        ],
        CORE,
    ),
    **dict.fromkeys(
        ["_transport", "httpx", "httpx2", "openai", "_redis_common", "redis", "metrics", "_prometheus"], REQUEST_PATH
    ),
    "": FACADE,
    "gonka": GONKA,
    "testing": FAKES,
    "_cli": TOOLS,
    "__main__": TOOLS,
}
# (importer, imported) pairs allowed upward, each only inside the function named.
EXCEPTIONS = {("_pool_py", "gonka"): "from_gonka", ("_pool", "gonka"): "from_gonka"}


def layer_of(module: str) -> int:
    return LAYERS[module] if module in LAYERS else LAYERS[module.partition(".")[0]]


@functools.cache
def source_modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name under gonka_pool."""
    found = {}
    for path in sorted([*PACKAGE.rglob("*.py"), *PACKAGE.glob("*.pyx")]):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def resolve(importer: str, is_package: bool, level: int, module: str | None, name: str | None) -> str | None:
    """The gonka_pool module an import statement reaches ("" for the package
    itself), or None when it is not gonka_pool's."""
    if level == 0:
        if module is None or not (module == "gonka_pool" or module.startswith("gonka_pool.")):
            return None
        target = module.removeprefix("gonka_pool").lstrip(".")
    else:
        base = importer.split(".") if importer else []
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (level - 1)]
        target = ".".join([*base, *([module] if module else [])])
    # "from . import _failover" reaches a submodule; "from . import EndpointPool"
    # reaches the package's namespace.
    if name is not None:
        candidate = f"{target}.{name}" if target else name
        if candidate in source_modules():
            return candidate
    return target


def imports_of(module: str, path: Path) -> list[tuple[str, str | None]]:
    """(imported module, the function the import sits in or None) of every import."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, str | None]] = []
    if path.suffix == ".pyx":  # Cython: not Python's grammar; its imports are plain lines
        function = None
        for line in path.read_text(encoding="utf-8").splitlines():
            if match := re.match(r"\s*(?:cp?)?def (\w+)", line):
                function = match.group(1)
            match = re.match(r"(\s*)from (\.*)([\w.]*) import ([\w, ]+)", line)
            if match and match.group(2):
                for name in match.group(4).replace(" ", "").split(","):
                    target = resolve(module, False, len(match.group(2)), match.group(3) or None, name)
                    if target is not None:
                        found.append((target, function if match.group(1) else None))
        return found

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.ImportFrom):
                for alias in child.names:
                    target = resolve(module, is_package, child.level, child.module, alias.name)
                    if target is not None:
                        found.append((target, function))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    target = resolve(module, is_package, 0, alias.name, None)
                    if target is not None:
                        found.append((target, function))
            visit(child, function)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), None)
    return found


def test_every_module_has_a_layer():
    assert [module for module in source_modules() if layer_of(module) is None] == []


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for module, path in source_modules().items():
        for target, function in imports_of(module, path):
            if layer_of(target) <= layer_of(module):
                continue
            allowed = EXCEPTIONS.get((module, target.partition(".")[0]))
            if allowed is not None and function == allowed:
                continue
            upward.append(f"{module} imports {target or 'gonka_pool'} (in {function or 'the module body'})")
    assert upward == []


def test_the_core_imports_the_gonka_package_only_lazily_in_from_gonka():
    for module in ("_pool_py", "_pool"):
        if module not in source_modules():
            continue  # an installed package has no _pool.pyx
        path = source_modules()[module]
        assert ("gonka", "from_gonka") in imports_of(module, path)


# -- run time: each layer with the layers above it unimportable ---------------------

PRELUDE = """
import importlib.machinery, sys, types
BLOCKED = {blocked!r}

class AboveTheLayer:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{{name}} is above the layer under test")
        return None

sys.meta_path.insert(0, AboveTheLayer())
if {stub!r}:
    # The layer lies below the package's __init__ (the facade): a bare package
    # object stands in, so importing a submodule does not run __init__.
    spec = importlib.machinery.PathFinder.find_spec("gonka_pool")
    package = types.ModuleType("gonka_pool")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["gonka_pool"] = package
"""

USES = {
    CORE: """
        from gonka_pool._endpoint import GonkaEndpoint
        from gonka_pool._pool_py import EndpointPool
        cores = [EndpointPool]
        try:
            from gonka_pool._pool import EndpointPool as CEndpointPool
            cores.append(CEndpointPool)
        except ImportError as exc:
            assert "above the layer" not in str(exc), exc
        for core in cores:
            pool = core([GonkaEndpoint("https://n1.example", "a1"), GonkaEndpoint("https://n2.example", "a2")])
            first = pool.next()
            assert pool.mark_failed(first, 30.0)
            assert pool.next() != first
            assert pool.call(lambda endpoint: endpoint.address) in ("a1", "a2")
            try:
                core.from_gonka("https://node.example")
            except ImportError as exc:  # the one lazy import upward, blocked here
                assert "gonka_pool.gonka" in str(exc), exc
            else:
                raise AssertionError("from_gonka reached gonka_pool.gonka")
    """,
    REQUEST_PATH: """
        import importlib.util
        from gonka_pool._endpoint import GonkaEndpoint
        from gonka_pool._pool_py import EndpointPool
        from gonka_pool._transport import RoutingError
        import gonka_pool.redis
        pool = EndpointPool([GonkaEndpoint("https://n1.example", "a1")])
        assert gonka_pool.redis.node_key(pool.next())
        for name in ("httpx", "httpx2"):
            if importlib.util.find_spec(name) is not None:
                transport = importlib.import_module(f"gonka_pool.{name}").PoolTransport(pool)
                transport.close()
        if all(importlib.util.find_spec(m) for m in ("openai", "httpx2")):
            import gonka_pool.openai
            gonka_pool.openai.client(pool).close()
    """,
    FACADE: """
        import gonka_pool
        pool = gonka_pool.EndpointPool([gonka_pool.GonkaEndpoint("https://n1.example", "a1")])
        assert pool.snapshot()[0].available
    """,
    GONKA: """
        import importlib.util
        if importlib.util.find_spec("bech32") is not None:
            import gonka_pool.gonka
            signer = gonka_pool.gonka.Signer("0x" + "11" * 32)
            assert signer.sign(b"{}", 1, "gonka1xyz")
    """,
    FAKES: """
        import urllib.request
        import gonka_pool.testing
        with gonka_pool.testing.LocalNode("n0") as node:
            request = urllib.request.Request(node.url + "/chat/completions", data=b"{}")
            with urllib.request.urlopen(request, timeout=5) as response:
                assert b"hello from n0" in response.read()
    """,
}


def names_above(layer: int) -> list[str]:
    names = sorted({f"gonka_pool.{m.partition('.')[0]}" for m in source_modules() if m and layer_of(m) > layer})
    return names


@pytest.mark.thread_unsafe(reason="starts interpreters; one at a time is enough")
@pytest.mark.parametrize("layer", sorted(USES), ids=["core", "request-path", "facade", "gonka", "fakes"])
def test_each_layer_works_with_the_layers_above_it_unimportable(layer):
    code = PRELUDE.format(blocked=names_above(layer), stub=layer < FACADE) + textwrap.dedent(USES[layer])
    env = {k: v for k, v in os.environ.items() if k != "GONKA_POOL_NO_EXTENSIONS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


# -- module size --------------------------------------------------------------------

MAX_LINES = 600
# The C core (_pool.pyx and its headers) and its twin, which mirrors it function for
# function so that a reader can hold them side by side.
TOO_BIG_BY_DESIGN = {"_pool.pyx", "_pool_py.py"}


def test_no_python_module_runs_past_600_lines_but_the_core_and_its_twin():
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in [*PACKAGE.rglob("*.py"), *PACKAGE.glob("*.pyx")]
        if "__pycache__" not in path.parts
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES and name not in TOO_BIG_BY_DESIGN} == {}
