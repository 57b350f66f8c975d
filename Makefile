# Two commands do all set-up on a fresh machine:  make demo  and  make test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test postgres unit integration integration-webhook-mode lint format controlplane tools bench bench-hotpath render render-check image image-check lock e2e clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

controlplane: $(STAMP)  ## build (once, cached in ~/.cache/taskwarden) the pinned control plane
	$(PY) -m taskwarden controlplane build

tools:  ## helm and promtool from the Go module proxy, cached in ~/.cache/taskwarden/tools
	bash hack/install-helm.sh
	bash hack/install-promtool.sh

demo: controlplane  ## the whole story on a real local control plane, then clean up
	$(PY) -m taskwarden dev

# Admission is tested in both modes: the suite runs in the default (auto: CEL policies on the
# pinned 1.36 control plane), then the admission files once more with webhooks only.
ADMISSION_TESTS := tests/integration/test_admission.py tests/integration/test_admission_callers.py \
  tests/integration/test_credential_attacks.py tests/integration/test_delegation_depth.py \
  tests/integration/test_local_run_needs_admission.py

test: controlplane tools postgres  ## unit + integration tests (real etcd + kube-apiserver + controller-manager)
	$(VENV)/bin/pytest tests/unit tests/integration
	$(MAKE) integration-webhook-mode

integration-webhook-mode: controlplane tools  ## the admission tests with TASKWARDEN_ADMISSION_MODE=webhook
	TASKWARDEN_ADMISSION_MODE=webhook $(VENV)/bin/pytest $(ADMISSION_TESTS)

postgres:  ## the PostgreSQL server binaries the credential-backend tests start (distro package if missing)
	bash hack/ensure-postgres.sh

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

integration: controlplane tools postgres
	$(VENV)/bin/pytest tests/integration

lint: $(STAMP)  ## ruff, the layer contracts (import-linter) and mypy --strict
	$(VENV)/bin/ruff check operator sdk tests bench
	$(VENV)/bin/ruff format --check operator sdk tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format operator sdk tests bench
	$(VENV)/bin/ruff check --fix operator sdk tests bench

render: tools  ## sync chart CRDs and CEL admission, render manifests/install.yaml
	$(PY) -m taskwarden.admission.cel > charts/taskwarden/files/admission-cel.json
	bash hack/render-install.sh

render-check: tools  ## fail when manifests/install.yaml or the chart CRDs are stale
	bash hack/render-install.sh --check

# The chart's default image (values.yaml image.repository + Chart appVersion): build it, then
# `kind load docker-image $(IMAGE)` (docs/release.md). Inputs are pinned: requirements/image.txt
# (hashes), SOURCE_DATE_EPOCH from the last commit, and PYTHON_IMAGE by digest for releases.
IMAGE ?= ghcr.io/taskwarden/taskwarden:0.1.0
PYTHON_IMAGE ?= python:3.11-slim
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
image:  ## needs a Docker engine (not on the dev machines)
	docker build --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
	  --build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) -t $(IMAGE) .

image-check:  ## the Dockerfile's hashed install in a clean venv, no Docker needed
	bash hack/image-deps-check.sh

lock:  ## regenerate requirements/image.txt (pip-tools in a throwaway venv; Python 3.11 like the image)
	$(PYTHON) -m venv /tmp/taskwarden-piptools
	/tmp/taskwarden-piptools/bin/pip install --quiet pip-tools
	/tmp/taskwarden-piptools/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
	  --extra postgres --strip-extras --no-emit-find-links --no-emit-index-url \
	  --output-file requirements/image.txt pyproject.toml requirements/build.in

e2e: $(STAMP)  ## optional: kind cluster end to end (needs Docker)
	TASKWARDEN_E2E=1 $(VENV)/bin/pytest tests/e2e -v

bench: controlplane  ## benchmarks; results recorded in bench/RESULTS.md
	$(PY) bench/issuance.py
	$(PY) bench/lifecycle.py

bench-hotpath: controlplane  ## issue 13 side by side: Taskwarden, naive kopf, raw floor (ARGS=--quick)
	$(PY) -m bench.hotpath $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
