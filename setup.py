"""Build the C core.  GONKA_POOL_NO_EXTENSIONS=1 builds a pure-Python wheel instead.

Where the core cannot be built (no C compiler, a compiler error, Cython failing),
the build goes on without it, as aio-libs' packages do: one warning names the cause
and GONKA_POOL_NO_EXTENSIONS, and the wheel holds only the pure-Python twin, so that
the sdist installs on any platform.  GONKA_POOL_REQUIRE_C=1 (``make``, cibuildwheel)
makes such a failure fail the build instead.

GONKA_POOL_WERROR=1 turns compiler warnings into errors (``make test`` sets it; a
user's build never fails on a warning a newer compiler adds).
GONKA_POOL_DEBUG_BUILD=1 compiles the core's GP_ASSERT checks in, at -O1 -g with
NDEBUG undefined (``make test-debug``); never for a release.
GONKA_POOL_STRIP=1 links the core without debug information (the release wheels:
cibuildwheel sets it in pyproject.toml).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

HERE = os.path.dirname(os.path.abspath(__file__))
NO_EXTENSIONS = bool(os.environ.get("GONKA_POOL_NO_EXTENSIONS")) or (sys.implementation.name != "cpython")
# The builds that exist to test the core must never pass without it.
REQUIRE_C = any(os.environ.get(var) for var in ("GONKA_POOL_REQUIRE_C", "GONKA_POOL_WERROR", "GONKA_POOL_DEBUG_BUILD"))


class BuildFailed(Exception):
    """The C core could not be built; the message says why.  Not a DistutilsError nor
    an OSError, which setup() would turn into SystemExit before the fallback sees it."""


class BuildExtOrFail(build_ext):
    """build_ext whose every way of failing for want of a working compiler is BuildFailed."""

    def run(self):
        try:
            super().run()
        except (PlatformError, FileNotFoundError) as exc:  # no compiler at all (MSVC missing, ...)
            raise BuildFailed(f"{type(exc).__name__}: {exc}") from exc

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError, ValueError) as exc:
            raise BuildFailed(f"{type(exc).__name__}: {exc}") from exc


def extensions():
    try:
        from Cython.Build import cythonize
        from Cython.Compiler.Errors import CompileError
    except ImportError as exc:  # a direct `python setup.py` without the build requirements
        raise BuildFailed(f"Cython: {exc}") from exc

    debug = bool(os.environ.get("GONKA_POOL_DEBUG_BUILD"))
    if sys.platform == "win32":
        # MSVC: C11 mode (for <stdatomic.h> where available; _atomics.h falls back to
        # the interlocked intrinsics otherwise).
        compile_args = ["/Od", "/Zi", "/UNDEBUG"] if debug else ["/O2"]
        if os.environ.get("GONKA_POOL_WERROR"):
            compile_args.append("/WX")
    else:
        # Placed after the interpreter's own CFLAGS, so -O1 and -UNDEBUG win over
        # its -O3 and -DNDEBUG in a debug build.
        compile_args = ["-O1", "-g", "-UNDEBUG"] if debug else ["-O3"]
        compile_args += ["-std=c11", "-Wall", "-Wextra"]
        if os.environ.get("GONKA_POOL_WERROR"):
            compile_args.append("-Werror")
        # ThreadSanitizer / coverage builds pass extra flags through CFLAGS as usual.
    # The interpreter's CFLAGS carry -g, which makes the release core 2.3 MB instead of
    # 384 KB (x86_64, gcc 12).  Only the debug information goes (-S, not -s): the symbol
    # table stays, 42 KB, so that perf and gdb still name the core's functions in a
    # user's profile or crash.  Opt-in, so that make's builds (valgrind, TSan) keep it.
    # MSVC keeps debug information in a .pdb beside, never in the .pyd.
    link_args = []
    if os.environ.get("GONKA_POOL_STRIP") and not debug and sys.platform != "win32":
        link_args = ["-Wl,-S"]
    core = Extension(
        "gonka_pool._pool",
        sources=["src/gonka_pool/_pool.pyx"],
        include_dirs=[os.path.join(HERE, "src", "gonka_pool")],
        depends=["src/gonka_pool/_atomics.h", "src/gonka_pool/_shared.h"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        # shm_open lived in librt before glibc 2.34 (manylinux2014 has 2.17).
        libraries=["rt"] if sys.platform.startswith("linux") else [],
        define_macros=[("GP_DEBUG", "1")] if debug else [],
    )
    try:
        return cythonize(
            [core],
            language_level=3,
            compiler_directives={"freethreading_compatible": True},
            annotate=bool(os.environ.get("GONKA_POOL_ANNOTATE")),
        )
    except CompileError as exc:  # a Cython the core does not compile with
        raise BuildFailed(f"Cython: {exc}") from exc


def warn_fallback(cause):
    print(
        f"WARNING: gonka-pool's C core could not be built ({cause}); this install holds the "
        "pure-Python twin instead: the same API, slower, gonka_pool.IMPLEMENTATION == 'python'. "
        "Install a C compiler (and the Python headers) and reinstall for the C core, or set "
        "GONKA_POOL_NO_EXTENSIONS=1 to build the twin without trying.",
        file=sys.stderr,
    )


def main():
    if NO_EXTENSIONS:
        setup()
        return
    try:
        setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtOrFail})
    except BuildFailed as exc:
        if REQUIRE_C:
            raise
        warn_fallback(exc)
        # A second, pure-Python build: its wheel is tagged py3-none-any, not as if it held
        # the core.
        setup()


main()
