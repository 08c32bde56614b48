# Rillet: `make run` and `make test` are all a fresh machine needs.
SHELL := bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# The one version is pyproject.toml's; the chart, the image tag and `rillet --version` agree
# with it (tests/unit/test_version.py). REVISION is the commit an artifact is built from.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
REVISION := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
CACHE_DIR ?= $(or $(RILLET_CACHE),$(XDG_CACHE_HOME),$(HOME)/.cache)/rillet
# The venv's third-party packages are keyed by pyproject.toml, so every checkout (and CI's
# fresh clone) reuses them; the project itself is installed editable on top (`rillet` in the
# venv's bin), pointed at whichever checkout last ran make. PYTHONPATH keeps this checkout
# first either way, and adds the tooling at the root (tests, bench, testcluster).
DEPS_KEY := $(shell { cat pyproject.toml; $(PYTHON) --version; } | sha256sum | cut -c1-16)
VENV := $(CACHE_DIR)/venv-$(DEPS_KEY)
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/runtime:$(CURDIR)/operator:$(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export PATH := $(VENV)/bin:$(PATH)
PRINT_REQUIREMENTS := import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))

.PHONY: help venv redis-server chromium js-clients test-servers control-plane run cluster operator constraints manifests chart image image-tools test test-unit \
	test-integration test-faults test-e2e test-lower-bounds lint format bench bench-auth bench-durability bench-overload bench-autoscaling bench-operator bench-vectors \
	bench-retrieval clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed:
	$(PYTHON) -m venv --clear $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(PY) -c '$(PRINT_REQUIREMENTS)' > $(VENV)/requirements.txt
	$(VENV)/bin/pip install --quiet --requirement $(VENV)/requirements.txt
	touch $@

venv: $(VENV)/.installed ## install the dependencies (cached by pyproject.toml) and the project, editable
	@[ "$$(cat $(VENV)/.project 2>/dev/null)" = "$(CURDIR)" ] || { \
	  $(VENV)/bin/pip install --quiet --no-deps --no-build-isolation --editable . && \
	  echo "$(CURDIR)" > $(VENV)/.project; }

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Debian's package $(1), which provides the command of the same name, unless it is on PATH.
apt-install = command -v $(1) >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "install $(or $(2),$(1)) and rerun" >&2; exit 1; }; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(1) >/dev/null; }

redis-server: ## install redis-server from Debian's packages if it is missing (the tests start their own)
	@$(call apt-install,redis-server,redis-server 6.2+)
	@redis-server --version

chromium: ## install Chromium from Debian's packages if it is missing (the browser test drives it headless)
	@$(call apt-install,chromium)
	@chromium --version

js-clients: ## LangGraph's JS SDK and playwright-core (tests/js/package-lock.json), cached by the lock
	@command -v node >/dev/null || { echo "install Node.js 20+ with npm and rerun" >&2; exit 1; }
	@bash tests/js/install.sh >/dev/null

test-servers: ## build the real servers the fault tests drive (Toxiproxy) from Go modules (cached by version)
	@bash testcluster/servers.sh >/dev/null

control-plane: ## build etcd, the Kubernetes control plane, kubectl, KWOK and helm (cached by version)
	@bash testcluster/build.sh >/dev/null

DOCS_INDEX := $(CACHE_DIR)/docs-index
run: venv ## serve the API on 127.0.0.1:8000: offline model, the docs in the embedded index, in-memory state
	@echo "The rillet command is in $(VENV)/bin; to use it from any shell:"
	@echo '  export PATH="$(VENV)/bin:$$PATH"'
	$(PY) -m rillet_runtime ingest docs --index $(DOCS_INDEX)
	RILLET_RETRIEVAL__EMBEDDED__PATH=$(DOCS_INDEX) $(PY) -m rillet_runtime serve

cluster: venv control-plane ## a local control plane with fake nodes and the CRD, for trying the operator
	$(PY) -m testcluster

operator: venv ## run the operator against the current KUBECONFIG (after `make cluster`, in a second terminal)
	$(PY) -m rillet_runtime operator

# The image: $(IMAGE), also tagged with the revision, and its SBOM in dist/, built with
# docker, podman or buildah (ENGINE; buildah and mmdebstrap installed from Debian's packages
# when neither docker nor podman works) on python:3.11-slim or, with BASE=debian or when that
# cannot be pulled, on Debian's own python3 (mmdebstrap); see release/image.sh.
IMAGE ?= ghcr.io/rillet-dev/rillet:$(VERSION)
image: ## build the image, tagged with the version and the revision, and its SBOM in dist/
	@docker info >/dev/null 2>&1 || podman info >/dev/null 2>&1 || $(MAKE) --no-print-directory image-tools
	VERSION=$(VERSION) REVISION=$(REVISION) IMAGE=$(IMAGE) bash release/image.sh

image-tools: ## install buildah and mmdebstrap from Debian's packages if missing (the image test builds with them)
	@$(call apt-install,buildah)
	@$(call apt-install,mmdebstrap)

# The Python constraints.txt is resolved with: the oldest 3.11 at hand, Debian's when
# present (the image's Debian base has it), so older patch releases' conditional
# dependencies are pinned too.
IMAGE_PYTHON ?= $(or $(wildcard /usr/bin/python3.11),$(PYTHON))
constraints: ## re-pin the image's dependencies (constraints.txt) from a clean install
	rm -rf $(CACHE_DIR)/constraints-venv
	$(IMAGE_PYTHON) -m venv $(CACHE_DIR)/constraints-venv
	$(CACHE_DIR)/constraints-venv/bin/pip install --quiet ".[chroma]"
	{ echo "# The image's dependencies, pinned: \`make constraints\` rewrites this file."; \
	  $(CACHE_DIR)/constraints-venv/bin/pip freeze --exclude rillet; } > constraints.txt

manifests: venv ## regenerate crds/, docs/reference/ (the spec model's) and the chart's README (its values')
	$(PY) -m rillet_operator.crd
	$(PY) -m charts.readme

# The chart as a chart repository: packages of charts/rillet with version and appVersion
# $(VERSION), and their index.yaml, in CHART_REPO. Its URLs are relative, so the folder works
# wherever it is served; CHART_REPO_URL makes them absolute. HELM: default the one
# `make control-plane` builds.
CHART_REPO ?= dist/charts
CHART_REPO_URL ?=
HELM ?=
chart: venv $(if $(HELM),,control-plane) ## package the chart (the project's version) and index it as a chart repository in dist/charts/
	$(PY) -m charts.repository --version $(VERSION) --out $(CHART_REPO) \
	  $(if $(CHART_REPO_URL),--url $(CHART_REPO_URL)) $(if $(HELM),--helm $(HELM))

test: venv redis-server chromium js-clients test-servers control-plane image-tools lint test-lower-bounds ## the whole suite: lint, types, lower bounds, unit, integration, e2e
	$(PY) -m pytest

test-unit: venv ## unit tests only
	$(PY) -m pytest tests/unit

test-integration: venv redis-server chromium js-clients test-servers ## integration tests only (real gunicorn, real SDKs)
	$(PY) -m pytest tests/integration

test-faults: venv redis-server test-servers ## the fault-injection suite alone (Toxiproxy, SIGKILL): docs/reliability.md
	$(PY) -m pytest tests/integration/test_faults_redis.py tests/integration/test_faults_model.py

test-e2e: venv control-plane image-tools ## e2e tests: the operator against a real control plane
	$(PY) -m pytest tests/e2e

# The declared lower bound of every dependency, installed as such (uv's lowest-direct
# resolution) into a venv of its own, keyed like the main one; then the unit tests and the
# runtime's integration tests on it. The generated-files check is left out: it pins the
# exact output of the newest pydantic's schema generator (1 vs 1.0), not behaviour.
LOWEST_VENV := $(CACHE_DIR)/lowest-venv-$(DEPS_KEY)
PRINT_DEPENDENCIES := import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PRINT_TEST_TOOLS := import tomllib; dev = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]; \
	print("\n".join(d for d in dev if d.startswith(("pytest", "httpx-sse", "psutil", "blockbuster"))))

$(LOWEST_VENV)/.installed: $(VENV)/.installed
	rm -rf $(LOWEST_VENV)
	$(VENV)/bin/uv venv --quiet --python $(PYTHON) $(LOWEST_VENV)
	$(PY) -c '$(PRINT_DEPENDENCIES)' > $(LOWEST_VENV)/requirements.txt
	$(PY) -c '$(PRINT_TEST_TOOLS)' > $(LOWEST_VENV)/test-tools.txt
	VIRTUAL_ENV=$(LOWEST_VENV) $(VENV)/bin/uv pip install --quiet --resolution lowest-direct \
	  --requirement $(LOWEST_VENV)/requirements.txt
	VIRTUAL_ENV=$(LOWEST_VENV) $(VENV)/bin/uv pip install --quiet --requirement $(LOWEST_VENV)/test-tools.txt
	touch $@

# The project itself is installed editable, without dependencies, each run (its version is
# its package metadata's), and its `rillet` comes first on PATH for the servers the tests start.
test-lower-bounds: $(LOWEST_VENV)/.installed redis-server ## unit and runtime integration tests on every dependency's declared lower bound
	VIRTUAL_ENV=$(LOWEST_VENV) $(VENV)/bin/uv pip install --quiet --no-deps --editable .
	PATH=$(LOWEST_VENV)/bin:$$PATH $(LOWEST_VENV)/bin/python -m pytest -p no:cacheprovider tests/unit \
	  tests/integration/test_serve_default.py tests/integration/test_redis_runtime.py \
	  tests/integration/test_redis_checkpointer.py tests/integration/test_redis_runs.py \
	  tests/integration/test_providers.py \
	  tests/integration/test_drain.py tests/integration/test_operator_contract.py \
	  tests/integration/test_security.py tests/integration/test_redis_sentinel.py \
	  --deselect tests/unit/test_operator_builders.py::test_generated_files_match_the_spec_model

lint: venv ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: venv ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# LangGraph's own server, for the streaming benchmark's side-by-side: its own venv, so its
# dependencies never reach the project's. The image's pins (constraints.txt) hold there too,
# but for the two langgraph-api 0.16 caps lower (grpcio <1.82, protobuf <7): pinned, they
# leave pip no solution (ResolutionImpossible); unpinned, pip picks them within its caps.
LANGGRAPH_CLI := langgraph-cli[inmem]==0.4.40
LANGGRAPH_UNPINNED := grpcio|protobuf
LANGGRAPH_VENV := $(CACHE_DIR)/langgraph-venv-$(shell { echo '$(LANGGRAPH_CLI) $(LANGGRAPH_UNPINNED)'; cat constraints.txt; } | sha256sum | cut -c1-12)

$(LANGGRAPH_VENV)/.installed:
	$(PYTHON) -m venv --clear $(LANGGRAPH_VENV)
	$(PYTHON) -c '$(PRINT_DEPENDENCIES)' > $(LANGGRAPH_VENV)/requirements.txt
	grep -v -E '^($(LANGGRAPH_UNPINNED))==' constraints.txt > $(LANGGRAPH_VENV)/constraints.txt
	$(LANGGRAPH_VENV)/bin/pip install --quiet '$(LANGGRAPH_CLI)' \
	  --requirement $(LANGGRAPH_VENV)/requirements.txt --constraint $(LANGGRAPH_VENV)/constraints.txt
	touch $@

# The HNSW libraries the embedded vector index may use, measured side by side before one
# becomes a dependency: their own venv too.
VECTOR_LIBS := usearch==2.26.6 hnswlib==0.8.0 faiss-cpu==1.15.1 numpy==2.4.6 psutil==7.2.2
VECTOR_VENV := $(CACHE_DIR)/vector-venv-$(shell echo '$(VECTOR_LIBS)' | sha256sum | cut -c1-12)

$(VECTOR_VENV)/.installed:
	$(PYTHON) -m venv --clear $(VECTOR_VENV)
	$(VECTOR_VENV)/bin/pip install --quiet $(VECTOR_LIBS)
	touch $@

bench-vectors: $(VECTOR_VENV)/.installed ## usearch, hnswlib and faiss on 100k and 1M vectors; 4 workers' memory
	$(VECTOR_VENV)/bin/python -m bench.vector_libs --vectors 100000 --out bench-results/vectors-100k
	$(VECTOR_VENV)/bin/python -m bench.vector_libs --vectors 1000000 --out bench-results/vectors-1m
	$(VECTOR_VENV)/bin/python -m bench.vector_libs --vectors 100000 --sharing --out bench-results/vectors-100k

bench-retrieval: venv ## the embedded index as served: 100k and 1M vectors, k=3/10, recall, 4 workers' memory
	$(PY) -m bench.retrieval --vectors 100000 --out bench-results/retrieval
	$(PY) -m bench.retrieval --vectors 1000000 --out bench-results/retrieval

bench: venv redis-server test-servers control-plane $(LANGGRAPH_VENV)/.installed ## every benchmark (writes bench-results/)
	$(PY) -m bench.streaming --out bench-results --langgraph-venv $(LANGGRAPH_VENV)
	$(PY) -m bench.checkpoint --out bench-results
	$(PY) -m bench.durability --out bench-results
	$(PY) -m testcluster.bench --out bench-results
	$(PY) -m bench.autoscaling --measure --out bench-results
	$(PY) -m bench.auth --out bench-results --rounds 8
	$(PY) -m bench.overload --out bench-results

bench-overload: venv redis-server ## one worker at 1x, 2x and 5x its capacity: what the cap and the loop-lag budget shed
	$(PY) -m bench.overload --out bench-results --ramp-seconds 0

bench-durability: venv redis-server test-servers ## checkpoint writes with and without AOF, a killed Redis's recovery, Redis 200 ms away (Toxiproxy), retention
	$(PY) -m bench.durability --out bench-results

bench-auth: venv redis-server ## what authentication and per-principal limits add per stream (none vs API keys vs JWT)
	$(PY) -m bench.auth --out bench-results --rounds 8

bench-operator: venv control-plane ## apply-to-Ready and operator memory on the test control plane
	$(PY) -m testcluster.bench --out bench-results

bench-autoscaling: venv ## measure one pod's curve, then simulate a day against each autoscaling policy
	$(PY) -m bench.autoscaling --measure --out bench-results

clean: ## remove caches in the checkout (the venv cache stays)
	rm -rf .pytest_cache .mypy_cache .ruff_cache bench-results
