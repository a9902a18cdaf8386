# recfeat: two commands on a fresh clone (`make demo`, `make test`); each sets up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.recfeat-installed
PIP_QUIET := --quiet --disable-pip-version-check --no-input
# Spark workers must use the venv's Python; bind local Spark to loopback.
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
export SPARK_LOCAL_IP := 127.0.0.1
export DAGSTER_HOME ?= $(abspath var/dagster)
# Processes the fast suite runs in (pytest-xdist, whole files to one process, so module
# fixtures are built once; each process has its own Spark session and temporary folders):
# `auto` is one per CPU; TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= auto

.PHONY: help setup demo test test-slow test-cluster test-all dev defs clean
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned stack into $(VENV) (first time: a few minutes)"
	@$(BIN)/python -m pip install $(PIP_QUIET) --upgrade pip==26.3 2>&1 | grep -v 'is ignored' || true
	@$(BIN)/python -m pip install $(PIP_QUIET) -r requirements.lock 2>&1 | grep -v 'is ignored' || true
	@$(BIN)/python -m pip install $(PIP_QUIET) --no-deps -e . 2>&1 | grep -v 'is ignored' || true
	@$(BIN)/python -c "import pyspark, dagster, great_expectations, deltalake, polars, torch, hypothesis, xdist, pipelines.beam_ingest, features, orchestration, trainers" \
		|| { echo "setup failed: the pinned stack did not install"; exit 1; }
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the pinned stack

demo: $(STAMP) ## run the whole pipeline on the synthetic default; prints every table and path
	@$(BIN)/python -m orchestration.instance > /dev/null  # $(DAGSTER_HOME)/dagster.yaml: telemetry off, one writer per table
	$(BIN)/recfeat demo

test: $(STAMP) ## run the default (fast) test suite, one process per CPU (TEST_WORKERS=0: one process)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-slow: $(STAMP) ## run the slow tests (large data, end-to-end CLI, dg, the UI in chromium)
	$(BIN)/python -m pytest -m slow

test-cluster: $(STAMP) ## the whole pipeline on a Spark standalone cluster started here, against local[2] (long; docs/cluster.md)
	$(BIN)/python -m pytest -m cluster

dev: $(STAMP) ## Dagster UI on http://127.0.0.1:3000 (stop with Ctrl-C)
	@$(BIN)/python -m orchestration.instance > /dev/null  # $(DAGSTER_HOME)/dagster.yaml: telemetry off, one writer per table
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

defs: $(STAMP) ## check and list the Dagster definitions with dg (assets, checks, jobs, schedules, sensors)
	@$(BIN)/python -m orchestration.instance > /dev/null
	$(BIN)/dg check defs
	$(BIN)/dg list defs

clean: ## remove generated data (var/), keep .venv
	rm -rf var
