# make test   - lint first, then build the C core and run the suite on CPython 3.11 and
#               free-threaded 3.13t, then again on 3.13t with every test run by 4 threads at once,
#               then the core's tests against its debug build (assertions on) on 3.13t
#               (tests/test_redis.py against a real redis-server, installed when missing)
# make lint   - ruff, mypy, the types users see (tests/typing/), stubtest of _pool.pyi
# make demo   - build and run `python -m gonka_pool demo`
# make tsan   - the concurrency tests under ThreadSanitizer (a TSan build of 3.13t)
# make valgrind - the suite under valgrind: no definite leak from the extension
# Any free-threaded interpreter instead of 3.13.5t: make test-ft FT_PYTHON=/path/python3.14t
#               (likewise test-parallel, test-debug, the bench targets; make tsan TSAN_PYTHON=...)
# Everything it needs (virtual environments, build dependencies, the free-threaded
# interpreter) it installs by itself, cached under .venv-*/ and $(PYENV_ROOT).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

# The GIL build: python3.11 if present (pyenv has it here), else python3.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# The free-threaded build, found or built by the project's own script.
FT_PYTHON ?= $(shell scripts/free-threaded-python)

VENV_GIL := .venv-gil
# A given free-threaded interpreter (FT_PYTHON=/path/python3.14t on the command line
# or in the environment) gets a venv named after its version, .venv-ft-3.14t, never the
# default 3.13t's .venv-ft, whose installs and build would otherwise be reused as is.
# Only then is the interpreter run while make reads this file: the default one may
# first have to be built, which no target but those that use it should wait for.
ifneq ($(filter command line environment,$(origin FT_PYTHON)),)
FT_TAG := $(shell $(FT_PYTHON) -c 'import sys, sysconfig; v = sys.version_info; \
            print(f"{v[0]}.{v[1]}" + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))' 2>/dev/null)
ifeq ($(filter %t,$(FT_TAG)),)
$(error FT_PYTHON=$(FT_PYTHON) is not a free-threaded CPython (it says "$(FT_TAG)"))
endif
VENV_FT := .venv-ft-$(FT_TAG)
else
VENV_FT := .venv-ft
endif
SOURCES := $(wildcard src/gonka_pool/*.py src/gonka_pool/*/*.py src/gonka_pool/*.pyx src/gonka_pool/*.h src/gonka_pool/*.pyi) \
           setup.py pyproject.toml
PIP_FLAGS := --disable-pip-version-check --quiet --quiet
PYTEST_FLAGS ?=

export GONKA_POOL_REQUIRE_C := 1
# The suite must not pass because something re-enabled the GIL behind its back.
export PYTHONWARNINGS := error::RuntimeWarning

.PHONY: test lint test-gil test-ft test-parallel test-debug redis-server tsan valgrind demo venvs bench bench-pytest bench-policy bench-failover bench-scaleout bench-balance clean

test: lint test-gil test-ft test-parallel test-debug

# make lint: seconds, so it runs first.  mypy reads the test requirements (it checks
# tests/ too) and stubtest imports the installed C core, hence .installed.  The format
# check comes last, so that a file not yet formatted does not hide the other checks.
lint: $(VENV_GIL)/.installed $(VENV_GIL)/.lint-installed
	$(VENV_GIL)/bin/ruff check
	$(VENV_GIL)/bin/mypy
	$(VENV_GIL)/bin/python tests/typing/check.py
	$(VENV_GIL)/bin/python -m mypy.stubtest gonka_pool._pool --allowlist tests/typing/stubtest-allowlist.txt
	$(VENV_GIL)/bin/ruff format --check

$(VENV_GIL)/.lint-installed: $(VENV_GIL)/bin/python requirements-lint.txt
	$(VENV_GIL)/bin/python -m pip install $(PIP_FLAGS) --only-binary=:all: -r requirements-lint.txt
	touch $@

# The Redis tests fail instead of skipping here: a missing server must not pass.
test-gil test-ft test-parallel: export GONKA_POOL_REQUIRE_REDIS := 1

# Debian's redis-server for tests/test_redis.py (each test starts its own on a free
# port of 127.0.0.1); installed only when missing (CI runs as root).
redis-server:
	command -v redis-server >/dev/null || apt-get install -y --no-install-recommends redis-server \
	    || { apt-get update && apt-get install -y --no-install-recommends redis-server; }

# The 3.11 run also measures line coverage of the package's Python modules and
# prints it (configured in pyproject.toml; the C core is not measured).
test-gil: $(VENV_GIL)/.installed redis-server
	rm -rf build/coverage
	$(VENV_GIL)/bin/python -m coverage run -m pytest $(PYTEST_FLAGS)
	$(VENV_GIL)/bin/python -m coverage combine --quiet
	$(VENV_GIL)/bin/python -m coverage report

test-ft: $(VENV_FT)/.installed redis-server
	PYTHON_GIL=0 $(VENV_FT)/bin/python -m pytest $(PYTEST_FLAGS)

# The whole suite again with the GIL off, each test run by 4 threads at once, twice
# per thread (pytest-run-parallel, as numpy and scipy do).  Tests marked
# thread_unsafe (each says why) already ran in test-ft and are skipped here.
PARALLEL_FLAGS ?= --parallel-threads=4 --iterations=2 --skip-thread-unsafe=1
test-parallel: $(VENV_FT)/.installed redis-server
	PYTHON_GIL=0 $(VENV_FT)/bin/python -m pytest $(PYTEST_FLAGS) $(PARALLEL_FLAGS)

# make test-debug: the C core built with GONKA_POOL_DEBUG_BUILD=1 (its GP_ASSERT
# invariants as assert(), -O1 -g, NDEBUG undefined) in place in a copy of the tree,
# build/debug-src, so that setuptools' build/ cache never mixes its objects with the
# release build's; then the tests that drive the core hardest against it, on 3.13t
# with the GIL off.  The nm check and test_consistency's abort test fail if the
# assertions were not compiled in (its child aborts on purpose: ulimit -c 0 keeps
# it from leaving a core file).  About a minute on 2 cores.
DEBUG_TESTS := tests/test_twins.py tests/test_concurrency.py tests/test_update_marks.py \
               tests/test_pool.py tests/test_consistency.py tests/test_shared.py tests/test_balance.py \
               tests/test_shared_trust.py tests/test_shared_truncation.py
test-debug: $(VENV_FT)/.installed
	$(VENV_FT)/bin/python -m pip install $(PIP_FLAGS) --only-binary=:all: "Cython>=3.1" "setuptools>=77"
	rm -rf build/debug-src && mkdir -p build/debug-src
	{ git ls-files --cached --others --exclude-standard; ls src/gonka_pool/_pool.c 2>/dev/null || true; } \
	    | tar --ignore-failed-read -cf - -T - | tar -xf - -C build/debug-src
	cd build/debug-src && GONKA_POOL_DEBUG_BUILD=1 GONKA_POOL_WERROR=1 \
	    $(abspath $(VENV_FT))/bin/python setup.py -q build_ext --inplace
	nm -D build/debug-src/src/gonka_pool/_pool.*.so | grep -c __assert_fail >/dev/null \
	    || { echo "build/debug-src's gonka_pool._pool has no assertions compiled in" >&2; exit 1; }
	ulimit -c 0 && cd build/debug-src && GONKA_POOL_DEBUG_BUILD=1 PYTHONPATH=src PYTHON_GIL=0 \
	    $(abspath $(VENV_FT))/bin/python -m pytest -p no:cacheprovider $(PYTEST_FLAGS) $(DEBUG_TESTS)

demo: $(VENV_GIL)/.installed
	$(VENV_GIL)/bin/python -m gonka_pool demo

venvs: $(VENV_GIL)/.installed $(VENV_FT)/.installed

# make bench: `python -m gonka_pool bench` on both interpreters, raw data in .bench/.
# ft_utils (for its AtomicInt64 pool) and matplotlib (for --plot) are optional.
BENCH_FLAGS ?=
bench: $(VENV_GIL)/.installed $(VENV_FT)/.installed
	mkdir -p .bench
	-$(VENV_FT)/bin/python -m pip install $(PIP_FLAGS) --only-binary=:all: ft_utils
	$(VENV_GIL)/bin/python -m gonka_pool bench --json .bench/gil.json $(BENCH_FLAGS)
	PYTHON_GIL=0 $(VENV_FT)/bin/python -m gonka_pool bench --json .bench/$(VENV_FT:.venv-%=%).json $(BENCH_FLAGS)

# make bench-failover: requests lost to bad nodes (healthy, refused, 503, stalling),
# the fixed cap of 3 attempts against attempts=None, on both interpreters.
BENCH_FAILOVER_FLAGS ?=
bench-failover: $(VENV_GIL)/.installed $(VENV_FT)/.installed
	$(VENV_GIL)/bin/python -m gonka_pool bench-failover $(BENCH_FAILOVER_FLAGS)
	PYTHON_GIL=0 $(VENV_FT)/bin/python -m gonka_pool bench-failover $(BENCH_FAILOVER_FLAGS)

# make bench-scaleout: attempts that reach bad nodes across worker processes, independent
# pools against shared= health, on both interpreters.
BENCH_SCALEOUT_FLAGS ?=
bench-scaleout: $(VENV_GIL)/.installed $(VENV_FT)/.installed
	$(VENV_GIL)/bin/python -m gonka_pool bench-scaleout $(BENCH_SCALEOUT_FLAGS)
	PYTHON_GIL=0 $(VENV_FT)/bin/python -m gonka_pool bench-scaleout $(BENCH_SCALEOUT_FLAGS)

# make bench-balance: load over unequal nodes (1..8 slots, 429 when full), a gray node and
# a correlated outage, each balance= policy against a join-the-shortest-queue oracle (issue 20).
BENCH_BALANCE_FLAGS ?=
bench-balance: $(VENV_GIL)/.installed $(VENV_FT)/.installed
	$(VENV_GIL)/bin/python -m gonka_pool bench-balance $(BENCH_BALANCE_FLAGS)
	PYTHON_GIL=0 $(VENV_FT)/bin/python -m gonka_pool bench-balance $(BENCH_BALANCE_FLAGS)

# make bench-pytest: pytest-benchmark benches of each API call, both implementations.
bench-pytest: $(VENV_GIL)/.installed $(VENV_FT)/.installed
	$(VENV_GIL)/bin/python -m pytest benchmarks --benchmark-only --benchmark-sort=name
	PYTHON_GIL=0 $(VENV_FT)/bin/python -m pytest benchmarks --benchmark-only --benchmark-sort=name

# make bench-policy: next() with weights and the policy machinery against the core
# before them (commit 18e6dc9, built in .bench/prepolicy), on both interpreters.
PREPOLICY := 18e6dc9
bench-policy: $(VENV_GIL)/.installed $(VENV_FT)/.installed
	test -d .bench/prepolicy || git worktree add --detach .bench/prepolicy $(PREPOLICY)
	for v in $(VENV_GIL) $(VENV_FT); do \
	  $$v/bin/python -m pip install $(PIP_FLAGS) --only-binary=:all: "Cython>=3.1" "setuptools>=77"; \
	  (cd .bench/prepolicy && ../../$$v/bin/python setup.py -q build_ext --inplace); done
	$(VENV_GIL)/bin/python benchmarks/policy_overhead.py --baseline $$(ls .bench/prepolicy/src/gonka_pool/_pool.cpython-3*[0-9]-*.so | grep -v 't-' | head -1)
	PYTHON_GIL=0 $(VENV_FT)/bin/python benchmarks/policy_overhead.py --baseline \
	    $$(ls .bench/prepolicy/src/gonka_pool/_pool.$$($(VENV_FT)/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("SOABI"))').so)

$(VENV_GIL)/bin/python:
	$(PYTHON) -m venv $(VENV_GIL)

$(VENV_FT)/bin/python:
	$(FT_PYTHON) -m venv $(VENV_FT)

# Install the package the way a user gets it (a built wheel, not the source tree),
# plus the test requirements; redone whenever a source file changes.  Compiler
# warnings are errors here (GONKA_POOL_WERROR), never in a user's build.
.venv-%/.installed: .venv-%/bin/python $(SOURCES) requirements-test.txt
	.venv-$*/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	.venv-$*/bin/python -m pip install $(PIP_FLAGS) --only-binary=:all: -r requirements-test.txt
	# setuptools keeps build/lib.*/ between builds: a module moved or deleted in src/
	# would still ship from there.  Its Python files are copied afresh (not the .so).
	find build -path 'build/lib*/gonka_pool/*' -name '*.py' -delete 2>/dev/null || true
	GONKA_POOL_WERROR=1 .venv-$*/bin/python -m pip install $(PIP_FLAGS) --force-reinstall --no-deps .
	.venv-$*/bin/python -c "import gonka_pool, sys; assert gonka_pool.IMPLEMENTATION == 'c', 'C core did not load'; print(sys.version.split()[0], 'GIL', getattr(sys, '_is_gil_enabled', lambda: True)())"
	touch $@

# make tsan: CPython 3.13.5t built with --disable-gil --with-thread-sanitizer (by
# scripts/tsan-python, cached in $(PYENV_ROOT)/versions/3.13.5t-tsan), gonka_pool
# compiled with -fsanitize=thread into .venv-tsan, then scripts/tsan-tests.  Not part
# of `make test` (a fresh machine spends about 15 minutes on it); .ci/run runs both.
# TSAN_PYTHON=/path/python3.14t: another TSan build of a free-threaded CPython (a plain
# one cannot load the instrumented core), in a venv named after its version.
TSAN_PYTHON ?= $(shell scripts/tsan-python)
ifneq ($(filter command line environment,$(origin TSAN_PYTHON)),)
VENV_TSAN := .venv-tsan-$(shell TSAN_OPTIONS=report_bugs=0 $(TSAN_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
else
VENV_TSAN := .venv-tsan
endif
# Only what the TSan run needs (every package is slow to install under TSan); the
# versions come from requirements-test.txt.
TSAN_REQUIREMENTS = $(shell grep -E '^(pytest|hypothesis|pytest-run-parallel)([<>=!~ ;]|$$)' requirements-test.txt \
                      | sed "s/.*/'&'/") "setuptools>=77" "Cython>=3.1"

tsan: $(VENV_TSAN)/.installed
	TSAN_VENV=$(VENV_TSAN) scripts/tsan-tests

# The interpreter's own runs during setup (venv, pip, the build) are not under test.
$(VENV_TSAN)/bin/python $(VENV_TSAN)/.installed: export TSAN_OPTIONS := report_bugs=0

$(VENV_TSAN)/bin/python:
	$(TSAN_PYTHON) -m venv $(VENV_TSAN)

# Built from a copy of the tree (build/tsan-src) so that setuptools' build/ cache,
# shared with the .venv-ft build of the same cp313t tag, never hands either side
# the other's object files.  _pool.c is copied too when there is one: cythonize
# regenerates it only if it is older than _pool.pyx (Cython is slow under TSan).
$(VENV_TSAN)/.installed: $(VENV_TSAN)/bin/python $(SOURCES) requirements-test.txt
	$(VENV_TSAN)/bin/python -m pip install $(PIP_FLAGS) --only-binary=:all: $(TSAN_REQUIREMENTS)
	rm -rf build/tsan-src && mkdir -p build/tsan-src
	{ git ls-files --cached --others --exclude-standard; ls src/gonka_pool/_pool.c 2>/dev/null || true; } \
	    | tar --ignore-failed-read -cf - -T - | tar -xf - -C build/tsan-src
	CFLAGS="-fsanitize=thread -g" $(VENV_TSAN)/bin/python -m pip install $(PIP_FLAGS) \
	    --no-build-isolation --force-reinstall --no-deps ./build/tsan-src
	nm -D $(VENV_TSAN)/lib/python3.*t/site-packages/gonka_pool/_pool.*.so | grep -c __tsan_func_entry >/dev/null \
	    || { echo "gonka_pool._pool is not instrumented with -fsanitize=thread" >&2; exit 1; }
	$(VENV_TSAN)/bin/python -c "import gonka_pool, sys; assert gonka_pool.IMPLEMENTATION == 'c'; print(sys.version.split()[0], 'TSan build, GIL', sys._is_gil_enabled())"
	touch $@

# make valgrind: the suite (the C core's half; not the million-iteration leak tests)
# under memcheck on the release 3.11 build; fails on any definitely-lost block
# allocated in the extension (timing in docs/development.md).
valgrind: $(VENV_GIL)/.installed
	nice -n 10 scripts/valgrind-suite $(VENV_GIL)/bin/python

clean:
	rm -rf $(VENV_GIL) $(VENV_FT) $(VENV_TSAN) .venv-ft-* .venv-tsan-* build dist src/*.egg-info src/gonka_pool/_pool.c src/gonka_pool/*.so
