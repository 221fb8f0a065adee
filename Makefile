# The newcomer's commands: `make run` (demo pipeline) and `make test` (the suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
# make run and make dev keep Dagster's own records in a local SQLite instance.
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home

.PHONY: install run dev test bench lock audit clean local-instance

install: $(STAMP)

# The local Dagster instance: SQLite under var/, no server (the top-level
# dagster.yaml is the production configuration, on PostgreSQL).
local-instance:
	@mkdir -p "$(DAGSTER_HOME)"
	@test -f "$(DAGSTER_HOME)/dagster.yaml" || printf 'telemetry:\n  enabled: false\n' > "$(DAGSTER_HOME)/dagster.yaml"

$(STAMP): requirements.lock pyproject.toml
	@command -v java >/dev/null || { echo "Java 17 is needed by PySpark: install a JDK (apt-get install openjdk-17-jre-headless)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

# The whole pipeline on the demo landing zone (or on $CAPSTONE_LANDING_ROOT when set).
run: install local-instance
	@if [ -z "$$CAPSTONE_LANDING_ROOT" ]; then $(BIN)/capstone-demo; fi
	$(BIN)/python -m capstone_assets.run

# The Dagster UI (and the daemon for schedules and sensors) on the same setup. The UI has
# no login: it listens on this machine only (README, Production: how to expose it).
dev: install local-instance
	@if [ -z "$$CAPSTONE_LANDING_ROOT" ] && [ ! -d var/landing ]; then $(BIN)/capstone-demo; fi
	$(BIN)/capstone-jobs check-config
	$(BIN)/dagster dev -h 127.0.0.1 -w workspace.yaml

# Two workers (pytest-xdist), each test module whole on one of them: the Dagster-server modules
# mostly wait for the backfill daemon meanwhile. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

# One day end to end through Dagster at 1 M, 4 M and 16 M events, against a DuckDB reference
# (benchmarks/bench.py; not part of make test). BENCH_ARGS="--sizes 100000 --repeat 1" for a quick look.
bench: install
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# Recompile the pinned lock file after changing pyproject.toml's dependencies.
lock:
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --extra test --strip-extras --output-file requirements.lock pyproject.toml

# Every pinned dependency against known advisories (pip-audit, in a venv of its own; needs
# the PyPI advisory API). --strict: a package it cannot look up fails the audit, not passes it.
AUDIT_VENV := var/audit-venv
audit:
	test -x $(AUDIT_VENV)/bin/pip-audit || { $(PYTHON) -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/pip install --quiet pip-audit; }
	$(AUDIT_VENV)/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off -r requirements.lock

clean:
	rm -rf var .pytest_cache
