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
USE_STAND_IN = stand_in() { if [ -z "$$(printenv $$1)" ] && docker image inspect $$2 >/dev/null 2>&1; then \
	export "$$1=$$2"; fi; }; \
	stand_in PYTHON_IMAGE jwt-split-python:bookworm; stand_in POSTGRES_IMAGE jwt-split-postgres:bookworm; \
	stand_in REDIS_IMAGE jwt-split-redis:bookworm; stand_in HAPROXY_IMAGE jwt-split-haproxy:bookworm; \
	stand_in PROMETHEUS_IMAGE jwt-split-prometheus:bookworm

# The unit and security suites run in-process and keep to their own servers and files, so
# they run in TEST_WORKERS processes at once (pytest-xdist, a file to a process); the suites
# that start stacks, containers and browsers run one test at a time, as their timings expect.
TEST_WORKERS ?= 2
IN_PARALLEL := tests/unit tests/security
ONE_AT_A_TIME := $(foreach suite,$(IN_PARALLEL),--ignore=$(suite))
# Both halves run even when the first fails; the target fails when either did.
TWO_HALVES = $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(IN_PARALLEL); first=$$?; \
	$(BIN)/pytest $(ONE_AT_A_TIME) $(1); second=$$?; [ $$first -eq 0 ] && [ $$second -eq 0 ]

## All tests: unit, loopback integration, containers, browser, PostgreSQL and Redis.
test: install docker browser services
	@$(USE_STAND_IN); $(call TWO_HALVES)

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
	@$(call TWO_HALVES,-m "not container")

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
