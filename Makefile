# torchserve-adapt: the two set-up commands are `make demo` and `make test`.
# Everything installs into .venv; torch is the CPU wheel torch==2.13.0, installed first so
# that nothing pulls CUDA wheels on a CPU machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tsadapt-installed
PYTEST_ARGS ?=

.PHONY: install install-peers demo test test-fast lint profiles clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[learn,bench,dev]'
	$(PY) -m tsadapt.plugin.build
	touch $(STAMP)

install: $(STAMP)

## The optional peers extra (Ray Serve) for `tsadapt lab bench --peers rayserve` and its test.
install-peers: install
	$(PY) -m pip install --quiet -e '.[learn,bench,dev,peers]'

## Start a real TorchServe with the demo models, send real requests, print latency, stop.
demo: install
	$(VENV)/bin/tsadapt lab demo

## The whole test suite (unit + real-server integration tests).
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

## Unit tests only (no TorchServe).
test-fast: install
	$(PY) -m pytest -m "not server" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

## Regenerate docs/results/model-profiles.md (batch latency b=1..32 on this machine).
profiles: install
	$(VENV)/bin/tsadapt lab demo-models profile

clean:
	rm -rf runs build plugin/build *.egg-info .pytest_cache
