# archwarden: every target installs what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: help venv deps lint typecheck test test-fast demo bench bench-scale bench-apiserver clean image lock lock-check tools-build chart-docs

help:
	@echo "make demo   - local registry + cluster, archwarden running, sample workloads"
	@echo "make test   - lint, mypy --strict and the whole test suite (real registry and cluster)"
	@echo "make bench  - benchmarks (figures quoted in README)"
	@echo "make bench-scale - archwarden with 5,000 kwok nodes and 2,000 Deployments (~30 min)"
	@echo "make bench-apiserver [ARGS='--scale 0.1'] - Kyverno's load scenarios through the API"
	@echo "            server: no webhook, a no-op one, archwarden (running cluster; ~2.6 h at scale 1)"
	@echo "make image IMAGE=host:port/repo:tag [PLATFORMS=linux/amd64,...] [INSECURE=1]"
	@echo "            - build the container image for four platforms and push one OCI index"
	@echo "make lock   - recompile requirements/image*.txt (hash-locked) from pyproject.toml"
	@echo "make lock-check - online: does PyPI today still compile the same locks (not in make test)"
	@echo "make chart-docs - regenerate the chart's schema, README table, dashboard and deploy/"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

# Debian's distribution 2.8 is the real registry every registry test runs against; Debian's
# Chromium renders the HTML report in tests/readiness and tests/report (headless, offline);
# npm (and node) regenerate Grafana's dashboard schema for its freshness test (hack/grafana).
DEBIAN_TEST_PACKAGES := docker-registry:docker-registry chromium:chromium npm:npm

deps: venv
	@missing=""; for pair in $(DEBIAN_TEST_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi

# shellcheck (Debian's) over every shell script; settings in .shellcheckrc.
SHELL_SCRIPTS = $(shell find hack deploy .ci -name '*.sh') .ci/run

lint: venv
	$(VENV)/bin/ruff check operator tests bench hack
	$(VENV)/bin/ruff format --check operator tests bench hack
	@command -v shellcheck >/dev/null || { echo "installing shellcheck (Debian)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq shellcheck >/dev/null; }
	shellcheck $(SHELL_SCRIPTS)
	PYTHONPATH=operator $(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy

# cluster-build first, outside pytest's output capture: a cold build (about 14 minutes on two
# cores) shows its progress; a warm cache makes it a no-op. tools-build likewise (promtool, about
# 15 minutes cold; helm-docs, 2) for the chart's tests.
test: deps lint typecheck cluster-build tools-build
	$(VENV)/bin/pytest

# No cluster, no image build, no registry process: the pure and in-process tests.
test-fast: venv
	$(VENV)/bin/pytest -m "not cluster and not e2e and not image and not install and not registry"

demo: deps cluster-build
	bash hack/demo.sh

bench: deps
	$(PY) bench/registry.py
	$(PY) bench/admission.py
	$(PY) bench/review.py
	$(PY) bench/hostile.py
	$(PY) bench/watch_memory.py
	$(PY) bench/scale.py

# About 30 minutes: 5,000 kwok nodes, 2,000 Deployments, a 10-minute soak (its own cluster).
bench-scale: deps cluster-build
	$(PY) bench/scale_cluster.py

bench-apiserver: deps
	$(PY) bench/apiserver_load.py $(ARGS)

# The container image: buildah and mmdebstrap, no Docker daemon, no emulation (docs/image.md).
# hack/image/build.sh installs the Debian packages it needs; PLATFORMS, INSECURE, BASE_IMAGE,
# BUILD_IMAGE, PIP_INDEX_URL and PIP_CERT pass through the environment.
image:
	@test -n "$(IMAGE)" || { echo "usage: make image IMAGE=host:port/repo:tag" >&2; exit 2; }
	PLATFORMS="$(PLATFORMS)" INSECURE="$(INSECURE)" hack/image/build.sh "$(IMAGE)"

# Hash-locked requirements of the image, compiled with uv from pyproject.toml (universal: one
# lock for every target platform). tests/image checks offline that they are fresh; lock-check
# asks PyPI whether the recorded cutoff still compiles the same files, which depends on the
# index's present state and so is never part of `make test`.
lock: venv
	$(PY) hack/image/lock.py

lock-check: venv
	$(PY) hack/image/lock.py --recompile-check

# The chart's test tools, built from Go modules into the same cache as the cluster binaries;
# the Prometheus Operator's module (its CRDs) and the npm packages Grafana's dashboard schema is
# generated from, so the tests that check the copies in third_party/ download nothing. Also
# Kubernetes' own test credential provider (tests/unit/test_credential_provider_gcp.py).
tools-build:
	ARCHWARDEN_BUILD_ONLY="promtool helmdocs gcpcredprovider" hack/cluster/build.sh >/dev/null
	hack/prometheus-operator/fetch-crds.sh --download
	hack/grafana/schema.sh --install

# Every file generated from the chart's sources; tests/chart fails when one is stale.
chart-docs: venv tools-build cluster-build
	$(PY) charts/archwarden/hack/schema.py
	$(PY) charts/archwarden/hack/dashboard.py
	eval "$$(ARCHWARDEN_BUILD_ONLY=helmdocs hack/cluster/build.sh --print)"; \
	  cd charts/archwarden && "$$HELM_DOCS_BIN/helm-docs" --chart-search-root . --sort-values-order file
	deploy/generate.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo

-include hack/cluster/cluster.mk
