# torchserve-adapt: the two set-up commands are `make demo` and `make test`.
# Everything installs into .venv; torch is the CPU wheel torch==2.13.0, installed first so
# that nothing pulls CUDA wheels on a CPU machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tsadapt-installed
PYTEST_ARGS ?=

.PHONY: install install-peers demo test test-fast lint profiles images pod-report clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[learn,bench,dev]'
	$(PY) -m tsadapt.plugin.build
	touch $(STAMP)

install: $(STAMP)

## The bench's peers (Ray Serve, BentoML) for `tsadapt lab bench --peers` and their tests, each
## in its own venv under .venv-peers/ (their pins clash): the setup.cfg extras peer-<name>.
install-peers: install
	$(PY) -m tsadapt.experiments.peers.envs install

## Start a real TorchServe with the demo models, send real requests, print latency, stop.
demo: install
	$(VENV)/bin/tsadapt lab demo

## The whole test suite (unit + real-server integration tests). The container tests (they
## need built images: `make images`) run in `make pod-report`, not here.
test: install
	$(PY) -m pytest -m "not container" $(PYTEST_ARGS)

## Unit tests only (no TorchServe).
test-fast: install
	$(PY) -m pytest -m "not server" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

## Regenerate docs/results/model-profiles.md (batch latency b=1..32 on this machine).
profiles: install
	$(VENV)/bin/tsadapt lab demo-models profile

## The two container images of configs/kubernetes/ (podman or docker; see docs/kubernetes.md).
images:
	nice -n 10 configs/kubernetes/build-images.sh

## Build the images, run the pod of configs/kubernetes/base with podman, test it, and write
## docs/results/kubernetes-pod.md.
pod-report: install
	configs/kubernetes/pod-report.sh

clean:
	rm -rf runs build plugin/build *.egg-info .pytest_cache
