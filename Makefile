# `make train` sets up .venv (once; again only when pyproject.toml changes) and trains on
# conf/default.yaml; `make test` runs the test suite. ARGS passes arguments to `glassbox train`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: train test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev,app]"
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/glassbox train $(ARGS)

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check flows tasks tests benchmarks whatif
	$(VENV)/bin/ruff format --check flows tasks tests benchmarks whatif
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/overhead.py $(ARGS)
