# The two commands: `make demo` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export UV_SYSTEM_CERTS := 1
UV := python3 -m uv

.PHONY: env services test lint check demo bench chaos chaos-seeds hostile clean

# The environment: locked dependencies (uv.lock), all extras, the project editable.
$(VENV)/.synced: pyproject.toml uv.lock
	$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --extra dev --quiet
	touch $@

# mypy cannot follow setuptools' editable finder: a tree of links gives it the namespace.
.typecheck/warelink: Makefile
	mkdir -p $@
	for pair in protocol:protocol edge:edge hub:hub sim:firmware-sim dashboards:dashboards; do \
		ln -sfn ../../$${pair#*:} $@/$${pair%%:*}; done

env: $(VENV)/.synced

services:
	@bash deploy/services.sh

lint: env .typecheck/warelink
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p warelink -p tests
	PYTHONPATH=.typecheck $(VENV)/bin/lint-imports --no-cache

# pytest on PYTEST_WORKERS processes (pytest-xdist; 0: in one process): every test owns
# its database, topic prefix, ports and files, so only the machine is shared. The tests
# wait on services and subprocesses more than they compute: more workers than cores pay.
# The tests are handed out one at a time in their order, the `slow` ones first
# (conftest.py), so that no worker ends the run with a queue of long ones. (Not
# `loadgroup` or `loadscope`: schemathesis gives its 102 tests one node id, and those
# keep one test per id.) The tests marked `serial` run after, alone.
PYTEST_WORKERS ?= 4
PYTEST := $(VENV)/bin/pytest -q -p no:cacheprovider
test: env services lint
	$(PYTEST) -n $(PYTEST_WORKERS) --dist load --maxschedchunk 1 -m "not serial" $(PYTEST_ARGS); \
	parallel=$$?; \
	$(PYTEST) -m serial $(PYTEST_ARGS); serial=$$?; \
	for status in $$parallel $$serial; do [ $$status = 0 ] || [ $$status = 5 ] || exit $$status; done

demo: env services
	$(VENV)/bin/warelink demo $(DEMO_ARGS)

bench: env services
	$(PY) bench/edge_outbox.py
	$(PY) bench/hub_ingest.py
	$(PY) bench/edge_drain.py
	$(PY) bench/ledger.py

# A long mixed-fault soak: make chaos DURATION=10m [SEED=1]
DURATION ?= 10m
SEED ?= 1
chaos: env services
	$(PY) -m tests.chaos.soak --duration $(DURATION) --seed $(SEED)

# Honest traffic through bad input at every entrance: make hostile DURATION=10m [SEED=1]
hostile: env services
	$(PY) -m tests.chaos.hostile --duration $(DURATION) --seed $(SEED)

# The chaos suite for seeds 1..SEEDS in a row, stopping at the first failure.
SEEDS ?= 20
chaos-seeds: env services
	for seed in $$(seq 1 $(SEEDS)); do \
		WARELINK_CHAOS_SEED=$$seed $(VENV)/bin/pytest -q -p no:cacheprovider tests/chaos || exit 1; \
		echo "seed $$seed: passed"; done

clean:
	rm -rf $(VENV) .typecheck .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
