# streamrec: `make demo` and `make test` bootstrap themselves (.venv, project, Redis binary).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv test unit integration demo ops-check lint typecheck mutation stack-up stack-down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml infra/ensure-redis.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,local,bench]'
	bash infra/ensure-redis.sh $(PY)
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project (idempotent)

test: lint ## lint, then unit + integration + e2e tests (starts its own broker and Redis)
	$(PY) -m pytest -q --durations=15 tests

unit: $(STAMP) ## unit tests only (no services)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP) ## integration and e2e tests (real Tansu broker + redis-server)
	$(PY) -m pytest -q tests/integration tests/e2e

demo: $(STAMP) ## embedded stack + worker + MovieLens replay with live recommendations
	$(VENV)/bin/streamrec demo

ops-check: $(STAMP) ## Prometheus/Grafana/compose checks (promtool, schema, live dashboard)
	$(PY) -m pytest -q tests/integration/test_ops_config.py

lint: $(STAMP) ## ruff, and the import-linter layer contracts (docs/architecture.md)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP) ## mypy --strict on the packages and the benchmarks
	$(VENV)/bin/mypy
	MYPYPATH=benchmarks $(VENV)/bin/mypy --strict benchmarks/*.py

MUTATE := streamrec/contracts/event.py,streams/merge.py,streamrec/contracts/dlq.py
MUTATION_TESTS := tests/unit/test_events.py tests/unit/test_merge.py tests/unit/test_state_pack.py tests/unit/test_event_path.py

mutation: $(STAMP) ## mutation testing: mutmut (validation, merge) and the state script's sweep
	$(PY) -m pip install -q -e '.[mutation]'
	$(VENV)/bin/mutmut run --paths-to-mutate $(MUTATE) --tests-dir tests/unit \
	  --runner "$(PY) -m pytest -q -x -p no:cacheprovider $(MUTATION_TESTS)" || true
	$(VENV)/bin/mutmut results
	$(PY) benchmarks/lua_mutation.py --out out/lua_mutation

stack-up: $(STAMP) ## start the embedded broker (9092) and Redis (6379) in .run/stack
	$(VENV)/bin/streamrec stack up

stack-down: $(STAMP) ## stop the embedded stack
	$(VENV)/bin/streamrec stack down

clean: ## remove .venv and run folders
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
