"""Build the C core.  GONKA_POOL_NO_EXTENSIONS=1 builds a pure-Python wheel instead."""

import os
import sys

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
NO_EXTENSIONS = bool(os.environ.get("GONKA_POOL_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)


def extensions():
    from Cython.Build import cythonize

    if sys.platform == "win32":
        # MSVC: C11 mode (for <stdatomic.h> where available; _atomics.h falls back to
        # the interlocked intrinsics otherwise).
        compile_args = ["/O2"]
    else:
        compile_args = ["-O3", "-std=c11"]
        # ThreadSanitizer / coverage builds pass extra flags through CFLAGS as usual.
    core = Extension(
        "gonka_pool._pool",
        sources=["src/gonka_pool/_pool.pyx"],
        include_dirs=[os.path.join(HERE, "src", "gonka_pool")],
        depends=["src/gonka_pool/_atomics.h", "src/gonka_pool/_shared.h"],
        extra_compile_args=compile_args,
        # shm_open lived in librt before glibc 2.34 (manylinux2014 has 2.17).
        libraries=["rt"] if sys.platform.startswith("linux") else [],
    )
    return cythonize(
        [core],
        language_level=3,
        compiler_directives={"freethreading_compatible": True},
        annotate=bool(os.environ.get("GONKA_POOL_ANNOTATE")),
    )


setup(ext_modules=[] if NO_EXTENSIONS else extensions())
