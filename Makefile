# One set of commands for a person and for CI (.ci/run calls `make test`).
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)

.PHONY: setup run demo install test test-unit test-faults lint format bench-ingress bench-rollout bench-reconcile bench-upgrades bench-offsite bench-hosts clean

setup:  ## Python and its dependencies, from the lock file
	@scripts/bootstrap.sh

run: setup  ## rollhook on 127.0.0.1:8000, embedded broker and records, ./rollhook.yml
	@scripts/run-embedded.sh

demo: setup  ## a local infra repo, registry and app, deployed by rollhook; no GitHub needed
	@scripts/install-demo-deps.sh
	@scripts/run-embedded.sh demo

install: setup  ## `rollhook` on PATH: /usr/local/bin/rollhook -> scripts/rollhook
	@scripts/install-cli.sh

test: setup  ## everything the tests need (Redis, a private Docker engine, a registry), then the tests
	@scripts/install-test-deps.sh
	$(UV) run --frozen pytest $(PYTEST_ARGS)

test-faults: setup  ## the fault suite alone (`make test` runs it too)
	@scripts/install-test-deps.sh
	$(UV) run --frozen pytest -m fault $(PYTEST_ARGS)

test-unit: setup  ## the fast tests only, no Docker engine
	$(UV) run --frozen pytest -m "not engine and not slow and not fault" $(PYTEST_ARGS)

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

bench-upgrades: setup  ## failed requests during one upgrade: the SSH script, recreate, with the proxy, start-first
	@scripts/install-test-deps.sh
	$(UV) run --frozen python -m bench.upgrades

bench-offsite: setup
	@scripts/install-test-deps.sh
	$(UV) run --frozen python bench/offsite.py --app

bench-hosts: setup  ## 50 targets over 5 hosts (5 private engines): a burst of pushes
	@scripts/install-test-deps.sh
	$(UV) run --frozen python bench/hosts.py

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache .hypothesis .test-run
