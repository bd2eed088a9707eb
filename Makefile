# authz developer entry points. `make demo` and `make test` are the two a newcomer needs;
# everything they depend on (venv, packages) is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_FLAGS ?= -q

.PHONY: help venv deps lint test test-fast test-e2e demo testbin clean bench fuzz soak lock sbom docs

help:
	@echo "make demo       run Envoy + authz + an echo upstream and show allow/401/403 flows"
	@echo "                (DEMO_LOGIN=1: then browser sign-in at Ory Hydra on :8090)"
	@echo "                (DEMO_TRANSPORT=http: Envoy asks authz over HTTP, not gRPC)"
	@echo "make test       every check and test (lint, types, unit, conformance, end-to-end)"
	@echo "make test-fast  unit, conformance and security tests only (edit-test loop)"
	@echo "make fuzz       coverage-guided fuzzing (FUZZ_SECONDS=600)"
	@echo "make soak       sustained load through Envoy with policy changes (SOAK_SECONDS=600)"
	@echo "make bench      the performance table (Envoy, authz, OPA-Envoy, trivial server)"
	@echo "make manifests  regenerate the CRDs, manifests/install.yaml and the proxy configs"
	@echo "make proxy-configs  regenerate examples/envoy, examples/nginx, examples/caddy, manifests/istio"
	@echo "make lint       ruff, mypy, import-layer contracts and hadolint"
	@echo "make lock       re-resolve requirements.lock (the image's pinned, hashed dependencies)"
	@echo "make sbom       CycloneDX SBOM of the image's Python environment (build/sbom/)"
	@echo "make docs       regenerate the generated docs pages and build the site strictly (build/site/)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# xds-protos carries an old opentelemetry/proto; if pip installed it last, the OTLP
	# exporter cannot import (authz/observe/tracing.py names this): restore the real files.
	$(BIN)/pip install -q --no-deps --force-reinstall "opentelemetry-proto==$$($(BIN)/pip show opentelemetry-proto | awk '/^Version:/ {print $$2}')"
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check authz tests examples
	$(BIN)/ruff format --check authz tests examples
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

test-fast: venv
	$(BIN)/pytest $(PYTEST_FLAGS) -n 2 tests/unit tests/conformance tests/security

test-e2e: venv
	$(BIN)/pytest $(PYTEST_FLAGS) tests/e2e

# Debian packages the tests drive: h2load and wrk (bench), nginx (auth_request), redis-server,
# chromium and chromium-driver (browser sign-in). Only the missing ones are installed, so a
# machine that has them all pays one dpkg-query; `apt-get update` runs only before an install.
DEB_PACKAGES := nghttp2-client wrk nginx redis-server chromium chromium-driver
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
deps:
	@missing=$$(dpkg-query -W -f='$${db:Status-Status} $${Package}\n' $(DEB_PACKAGES) 2>/dev/null \
		| awk '$$1 == "installed" {print $$2}' | sort | comm -13 - <(tr ' ' '\n' <<<"$(DEB_PACKAGES)" | sort)); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing" $$missing; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

# The first run on a new machine also builds the Go test binaries (~15 min on 2 cores).
test: lint deps testbin
	$(BIN)/pytest $(PYTEST_FLAGS) tests

## testbin: build the upstream test binaries (kube-apiserver, etcd, helm, hydra, ...) into ~/.cache/authz-testbin once
testbin: venv
	$(BIN)/python -m tests.support.testbin all

demo: venv
	VENV=$(VENV) DEMO_TRANSPORT=$(DEMO_TRANSPORT) bash examples/demo.sh

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache .fuzz .screenshots build

# -- The image's dependencies (issue 16). `lock`: uv resolves pyproject.toml's runtime
# dependencies, the otel extra and the build backend into requirements.lock with hashes;
# the Dockerfile installs it with --require-hashes, and tests/e2e/test_lockfile.py fails when
# it is stale. `sbom`: replays the Dockerfile's build stage into a temp venv and writes a
# CycloneDX SBOM of it (build/sbom/authz-VERSION.cdx.json).
lock: venv
	$(BIN)/python -m tests.support.lockfile

sbom: venv
	$(BIN)/python -m tests.support.sbom $(SBOM_OUT)

# -- The docs site (issue 16). Regenerates docs/reference/policy.md (from the schema),
# docs/reference/cli.md (from the CLI parser), docs/troubleshooting.md (from the reason
# codes) and docs/compatibility.md (from the tested versions), then `mkdocs build --strict`
# into build/site. `make test` runs the same strict build (tests/e2e/test_docs.py).
docs: venv
	$(BIN)/python -m tests.support.docs_site

# -- Install artifacts: the chart's CRDs and manifests/ are generated, never hand-edited. ---
# `manifests`: CRDs from authz/policy/schema.py into charts/authz/crds/ and manifests/crds.yaml,
# then `helm template` (default values) into manifests/install.yaml; tests/e2e/test_manifests.py
# fails when they are stale. helm is the real one, built once into the test-binary cache.
.PHONY: manifests chart-lint proxy-configs
HELM_BIN = $$($(BIN)/python -c 'from tests.support import testbin; print(testbin.path("helm"))')

manifests: venv proxy-configs
	$(BIN)/python -m tests.support.manifests

# `proxy-configs`: the Envoy/Istio/NGINX/Caddy wiring in examples/ and manifests/istio/ is
# `authz proxy-config` output (tests/support/proxy_configs.py lists the arguments);
# tests/unit/proxyconfig/test_generated_files.py fails when a file is stale.
proxy-configs: venv
	$(BIN)/python -m tests.support.proxy_configs

chart-lint: venv
	$(HELM_BIN) lint --strict charts/authz

# Performance: Envoy, authz, OPA-Envoy and a trivial grpcio server side by side (issue 6).
# BENCH_DURATION=S (default 8 s per scenario), BENCH_QUICK=1 (smoke run),
# BENCH_ARGS="--scenarios 'authz_*' --profile". Results also go to .bench/results.json.
bench: venv deps
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

# Hardening (issue 7). `make test` already runs the adversarial suite, a bounded fuzz run
# (tests/security) and a 10 s soak smoke; these are the long runs.
# fuzz: atheris (libFuzzer) on the token parser/verifier, the policy loader and the Check
# handler, FUZZ_SECONDS split between them; the corpus persists in .fuzz/.
FUZZ_SECONDS ?= 600
fuzz: venv
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/pip install -q atheris
	$(BIN)/python -m tests.security.fuzz --seconds $(FUZZ_SECONDS)

# soak: loopback load through Envoy at SOAK_RPS (default: 70% of the capacity measured at
# the start) with valid/invalid tokens and a policy change every few seconds; every response
# is checked against the decision the serving policy version must give, RSS is sampled.
SOAK_SECONDS ?= 600
SOAK_RPS ?= 0
soak: venv
	$(BIN)/python -m tests.soak --seconds $(SOAK_SECONDS) --rps $(SOAK_RPS)
