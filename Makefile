# pdm-pipeline — every command sets up what it needs (venv, install) first.
#   make demo   sample data for 3 machines, train and evaluate everything, print a summary
#   make test   the test suite
#   make dev    the Dagster UI on http://127.0.0.1:3000 over the same instance as the demo
#   make mlflow the MLflow UI on http://127.0.0.1:5000 (one run per model per machine, the champion aliases)
#   make bench  pi vs seed preset on a machine of the original size: time, memory, size, metrics, latency
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

export DAGSTER_HOME := $(CURDIR)
export PDM_DATA_DIR ?= $(CURDIR)/data
export PYTHONUNBUFFERED := 1
export MLFLOW_DISABLE_TELEMETRY := true

MACHINES ?= 3
SEED ?= 0
PORT ?= 3000

.PHONY: install demo demo-real test dev mlflow bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/pdm-pipeline demo --machines $(MACHINES) --seed $(SEED)

demo-real: install
	$(BIN)/pdm-pipeline demo-real --realdata ../shared/realdata

test: install
	$(BIN)/python -m pytest -q

dev: install
	$(BIN)/dagster dev -h 127.0.0.1 -p $(PORT) -w workspace.yaml

mlflow: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(PDM_DATA_DIR)/mlflow.db --host 127.0.0.1 --port 5000

bench: install
	$(BIN)/pdm-pipeline bench

clean:
	rm -rf .dagster_home data/synthetic data/metadata data/models data/bundles data/mlruns
