# The two commands that matter: `make up` runs the exchange, `make test` passes the tests.
# Everything else is a step of those two or a developer convenience.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BENCH ?=
NAME ?=
FULL ?=
SEED ?=
PYTEST_ARGS ?=
PURGE ?=

.PHONY: help setup venv up down test test-unit test-integration lint format proto bench clean \
	cluster-up cluster-down cluster-status image wheels web argocd-up e2e-kind

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed ## create the virtualenv and install the pinned dependencies

setup: venv ## install everything the tests, `make up` and `make cluster-up` need (idempotent, cached)
	$(PY) -m e2e.env setup --parts kafka,s3,clickhouse,observe,web,kube,node,cluster,argocd

up: setup ## run PostgreSQL, Kafka and the Kubernetes API in the foreground; Ctrl-C stops all
	$(PY) -m e2e.env up

down: ## stop whatever an interrupted `make up` left running
	@test -x $(PY) && $(PY) -m e2e.env down || true

cluster-up: setup ## start the local single-node Kubernetes cluster (daemons) and return
	$(PY) -m e2e.env cluster-up

cluster-down: ## remove the local cluster from the host (PURGE=1: also its state directory)
	@if test -x $(PY); then $(PY) -m e2e.env cluster-down $(if $(PURGE),--purge); fi

cluster-status: ## show the local cluster's processes and whether its node is Ready
	$(PY) -m e2e.env cluster-status

argocd-up: setup ## Argo CD on the running local cluster, syncing gitops/'s dev environment from a local git server
	$(PY) -m e2e.env argocd-up

e2e-kind: setup ## on a Docker host, as root: a kind cluster, the image loaded, the operator installed with Helm, the example Markets Ready, the operator's scenarios run on it
	$(PY) -m e2e.env.kind

image: venv ## build the project's image (buildah) and load it into the running cluster
	$(PY) -m e2e.env image

wheels: venv ## download the image's wheels into build/wheels (for `docker build .` too)
	$(PY) -c 'from e2e.env import images; images.ensure_wheels()'

web: venv ## build the web UI (npm ci, vite build) into workloads/web/dist, which the gateway serves
	$(PY) -c 'from e2e.env import web; web.ensure_built()'

test: setup ## run every test tier (unit, integration, e2e) against the real services
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv ## only the unit tier: no external process
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-integration: setup ## only the integration tier
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

lint: venv ## ruff (lint and format check), mypy --strict, and the layout (no product module imports e2e, no import cycle)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m e2e.layout

format: venv ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

proto: venv ## regenerate contracts/v1/*_pb2*.py from the .proto files
	$(PY) -m contracts.generate

.PHONY: migrate
migrate: venv ## ledger schema migrations (Alembic) on LEDGER_DB_DSN (default: `make up`'s PostgreSQL)
	$(PY) -m workloads.ledger migrate

bench: setup ## run the benchmarks (BENCH=<prefix> selects); one JSON object per line
	$(PY) -m e2e.benchmarks $(BENCH)

.PHONY: drill safety-case
drill: setup ## run a drill on `make up`'s processes (NAME=chaos-core|chaos-ledger|chaos-gateway|chaos-broker|chaos-full|exactly-once|fuzz|dr|load|all; FULL=1: full counts; SEED=n); one JSON line, a report in .run/drills/
	$(PY) -m e2e.drills.run $(NAME) $(if $(FULL),--full) $(if $(SEED),--seed $(SEED))

safety-case: setup ## every drill's short form, bundled with the versions, test summary and bench lines into .run/safety-case/*.tar.gz with a SHA-256 manifest
	$(PY) -m e2e.drills.safety_case

clean: down cluster-down ## remove the virtualenv and local run data (the download cache stays)
	rm -rf $(VENV) .run build .mypy_cache .ruff_cache .pytest_cache .hypothesis
