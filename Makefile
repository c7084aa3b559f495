# ShopTwin: `make run` sets up and runs the main job; `make test` sets up and runs the tests.
# Both create and use the virtual environment in .venv/, installing only from package registries.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test venv protos protos-check lint typecheck pytest up clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build on this machine; any other spec pulls a CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## protos: regenerate the Python code of protos/shoptwin/v1/*.proto
protos: venv
	$(PY) protos/generate.py

protos-check: venv
	$(PY) protos/generate.py --check

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest -q

## test: everything CI runs
test: protos-check lint pytest

## run: the main job: build default models, start the four services, drive them with the
## simulator's `demo` scenario in live mode (shoppers, support messages, orders, vans and
## their telemetry through the 5G model), print the summary, write the report, stop them.
run: venv
	$(VENV)/bin/shoptwin simulate demo --mode live --up --out .shoptwin/runs/demo

## up: only start the four services (Ctrl-C stops them)
up: venv
	$(VENV)/bin/shoptwin up

clean:
	rm -rf $(VENV) .shoptwin .mypy_cache .ruff_cache .pytest_cache
