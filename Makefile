# jwt-split: `make run` runs both services locally, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-fast docker browser services demo scale scale-down observe observe-down lint clean bench

# The tests' OpenID Connect relying party (tests/support/oidc_rp): panva's openid-client, from its lock.
OIDC_RP := tests/support/oidc_rp
OIDC_RP_STAMP := $(OIDC_RP)/node_modules/.installed-stamp

install: $(STAMP) $(OIDC_RP_STAMP)

$(STAMP): requirements/runtime.lock requirements/dev.lock shared/verifier/pyproject.toml shared/pyproject.toml issuer/pyproject.toml resource/pyproject.toml reports/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements/runtime.lock -r requirements/dev.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e shared/verifier -e shared -e issuer -e resource -e reports
	touch $@

$(OIDC_RP_STAMP): $(OIDC_RP)/package.json $(OIDC_RP)/package-lock.json
	npm ci --prefix $(OIDC_RP) --no-audit --no-fund --loglevel=error
	touch $@

run: install
	scripts/run-local

# The stand-in images that scripts/docker-setup builds where no registry can be reached: the
# Python base, the scale-out overlay's PostgreSQL, Redis and HAProxy, and the observability
# overlay's Prometheus. Each is used when its variable is unset and the image exists here.
USE_STAND_IN = eval "$$(scripts/stand-in-images)"

## All tests: unit, loopback integration, containers, browser, PostgreSQL and Redis; the unit
## and security suites in TEST_WORKERS processes (2) while Docker is prepared, then the rest
## one test at a time (scripts/test).
test: install browser services
	@scripts/test

## A Docker engine and Compose v2 (installed and started by scripts/docker-setup where missing).
docker:
	@docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 || scripts/docker-setup

## Debian's Chromium for the browser tests (installed where missing).
browser:
	@scripts/browser-setup

## Debian's PostgreSQL and Redis servers, HAProxy and promtool (installed where missing; the
## tests start their own servers).
services:
	@scripts/services-setup

## Narrated curl walk-through against the compose stack (started if it is not running).
demo: install docker
	@$(USE_STAND_IN); scripts/demo

## Unit, loopback and browser tests only (no Docker).
test-fast: install browser services
	@scripts/test --no-docker -m "not container"

## Scale out: three issuer replicas behind HAProxy, on PostgreSQL and Redis (compose.scale.yaml),
## started in the background; returns once every service is healthy.
scale: docker
	@$(USE_STAND_IN); scripts/scale up

## Remove the scale-out overlay: containers, networks, volumes and its generated secrets.
scale-down: docker
	@scripts/scale down

## The compose stack with Prometheus (compose.observability.yaml), UI on http://127.0.0.1:9090;
## returns once every service runs.
OBSERVE = docker compose -f compose.yaml -f compose.observability.yaml
observe: docker
	@$(USE_STAND_IN); $(OBSERVE) up -d --build --wait

## Stop it (the named volumes, keys and metrics history, are kept).
observe-down: docker
	@$(USE_STAND_IN); $(OBSERVE) down

## The benchmark: costs and HTTP throughput measured side by side, printed as a table
## (wrk from Debian, installed by scripts/bench-setup where missing; load on 127.0.0.1 only;
## the scale-out runs start their own PostgreSQL, Redis and HAProxy, see `make services`).
bench: install services
	@scripts/bench-setup
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache $(OIDC_RP)/node_modules
