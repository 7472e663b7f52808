# One set of commands for a person and for CI (.ci/run calls `make test`).
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)

.PHONY: setup run test test-unit lint format bench-ingress bench-rollout bench-reconcile clean

setup:  ## Python and its dependencies, from the lock file
	@scripts/bootstrap.sh

run: setup  ## rollhook on 127.0.0.1:8000, embedded broker and records, example config
	@scripts/run-embedded.sh

test: setup  ## everything the tests need (Redis, a private Docker engine, a registry), then the tests
	@scripts/install-test-deps.sh
	$(UV) run --frozen pytest $(PYTEST_ARGS)

test-unit: setup  ## the fast tests only, no Docker engine
	$(UV) run --frozen pytest -m "not engine" $(PYTEST_ARGS)

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

format: setup
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

bench-ingress: setup
	@scripts/install-test-deps.sh
	$(UV) run --frozen python bench/ingress.py

bench-rollout: setup
	@scripts/install-test-deps.sh
	$(UV) run --frozen python bench/rollout.py

bench-reconcile: setup
	@scripts/install-test-deps.sh
	$(UV) run --frozen python bench/reconcile.py

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache .test-run
