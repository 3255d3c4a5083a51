# make test   - build the C core and run the suite on CPython 3.11 and free-threaded 3.13t
# make demo   - build and run `python -m gonka_pool demo`
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
VENV_FT := .venv-ft
SOURCES := $(wildcard src/gonka_pool/*.py src/gonka_pool/*.pyx src/gonka_pool/*.h src/gonka_pool/*.pyi) \
           setup.py pyproject.toml
PIP_FLAGS := --disable-pip-version-check --quiet --quiet
PYTEST_FLAGS ?=

export GONKA_POOL_REQUIRE_C := 1
# The suite must not pass because something re-enabled the GIL behind its back.
export PYTHONWARNINGS := error::RuntimeWarning

.PHONY: test test-gil test-ft demo venvs bench bench-pytest bench-policy clean

test: test-gil test-ft

test-gil: $(VENV_GIL)/.installed
	$(VENV_GIL)/bin/python -m pytest $(PYTEST_FLAGS)

test-ft: $(VENV_FT)/.installed
	PYTHON_GIL=0 $(VENV_FT)/bin/python -m pytest $(PYTEST_FLAGS)

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
	PYTHON_GIL=0 $(VENV_FT)/bin/python -m gonka_pool bench --json .bench/ft.json $(BENCH_FLAGS)

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
	PYTHON_GIL=0 $(VENV_FT)/bin/python benchmarks/policy_overhead.py --baseline $$(ls .bench/prepolicy/src/gonka_pool/_pool.cpython-313t-*.so)

$(VENV_GIL)/bin/python:
	$(PYTHON) -m venv $(VENV_GIL)

$(VENV_FT)/bin/python:
	$(FT_PYTHON) -m venv $(VENV_FT)

# Install the package the way a user gets it (a built wheel, not the source tree),
# plus the test requirements; redone whenever a source file changes.
.venv-%/.installed: .venv-%/bin/python $(SOURCES) requirements-test.txt
	.venv-$*/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	.venv-$*/bin/python -m pip install $(PIP_FLAGS) --only-binary=:all: -r requirements-test.txt
	.venv-$*/bin/python -m pip install $(PIP_FLAGS) --force-reinstall --no-deps .
	.venv-$*/bin/python -c "import gonka_pool, sys; assert gonka_pool.IMPLEMENTATION == 'c', 'C core did not load'; print(sys.version.split()[0], 'GIL', getattr(sys, '_is_gil_enabled', lambda: True)())"
	touch $@

clean:
	rm -rf $(VENV_GIL) $(VENV_FT) build dist src/*.egg-info src/gonka_pool/_pool.c src/gonka_pool/*.so
