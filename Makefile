# jwt-split: `make run` runs both services locally, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-fast lint clean

install: $(STAMP)

$(STAMP): requirements/runtime.lock requirements/dev.lock shared/pyproject.toml issuer/pyproject.toml resource/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements/runtime.lock -r requirements/dev.lock
	$(BIN)/python -m pip install -q --no-deps -e shared -e issuer -e resource
	touch $@

run: install
	scripts/run-local

## All tests: unit, loopback integration, containers.
test: install
	$(BIN)/pytest

## Unit and loopback tests only (no Docker).
test-fast: install
	$(BIN)/pytest -m "not container"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
