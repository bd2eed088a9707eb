# authz developer entry points. `make demo` and `make test` are the two a newcomer needs;
# everything they depend on (venv, packages) is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_FLAGS ?= -q

.PHONY: help venv lint typecheck test test-fast test-e2e demo testbin clean bench

help:
	@echo "make demo       run Envoy + authz + an echo upstream and show allow/401/403 flows"
	@echo "make test       every check and test (lint, types, unit, conformance, end-to-end)"
	@echo "make test-fast  unit and conformance tests only (edit-test loop)"
	@echo "make lint       ruff and mypy"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check authz tests examples
	$(BIN)/ruff format --check authz tests examples
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

test-fast: venv
	$(BIN)/pytest $(PYTEST_FLAGS) tests/unit tests/conformance

test-e2e: venv
	$(BIN)/pytest $(PYTEST_FLAGS) tests/e2e

test: lint
	$(BIN)/pytest $(PYTEST_FLAGS) tests

## testbin: build the upstream test binaries (kube-apiserver, etcd, helm, hydra, ...) into ~/.cache/authz-testbin once
testbin: venv
	$(BIN)/python -m tests.support.testbin all

demo: venv
	VENV=$(VENV) bash examples/demo.sh

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache

# -- Install artifacts: the chart's CRDs and manifests/ are generated, never hand-edited. ---
# `manifests`: CRDs from authz/policy/schema.py into charts/authz/crds/ and manifests/crds.yaml,
# then `helm template` (default values) into manifests/install.yaml; tests/e2e/test_manifests.py
# fails when they are stale. helm is the real one, built once into the test-binary cache.
.PHONY: manifests chart-lint
HELM_BIN = $$($(BIN)/python -c 'from tests.support import testbin; print(testbin.path("helm"))')

manifests: venv
	$(BIN)/python -m tests.support.manifests

chart-lint: venv
	$(HELM_BIN) lint --strict charts/authz

# Performance: Envoy, authz, OPA-Envoy and a trivial grpcio server side by side (issue 6).
# BENCH_DURATION=S (default 8 s per scenario), BENCH_QUICK=1 (smoke run),
# BENCH_ARGS="--scenarios 'authz_*' --profile". Results also go to .bench/results.json.
bench: venv
	command -v h2load >/dev/null && command -v wrk >/dev/null || \
		(apt-get update && apt-get install -y nghttp2-client wrk)
	$(BIN)/python -m tests.bench $(BENCH_ARGS)
