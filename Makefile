# One command per job. `make check` is what CI runs (see .ci/run and README).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: coverage install system-deps check lint typecheck test unit integration e2e fmt build tf-check contract dev bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

lint:
	$(BIN)/ruff check shared functions tests benchmarks
	$(BIN)/ruff format --check shared functions tests benchmarks

fmt:
	$(BIN)/ruff format shared functions tests benchmarks
	$(BIN)/ruff check --fix shared functions tests benchmarks

typecheck:
	$(BIN)/mypy

unit:
	$(BIN)/pytest tests/unit -q

integration:
	$(BIN)/pytest tests/integration -q

e2e:
	$(BIN)/pytest tests/e2e -q

test:
	$(BIN)/pytest -q

contract:
	$(BIN)/python -m truecount.contract --write

# Branch coverage of the pure core by the unit tests alone (STYLE: aim for 100%).
coverage:
	$(BIN)/pytest -q tests/unit --cov=truecount.core --cov-branch --cov-report=term-missing

# Chromium (Debian package) for the browser tests; never a downloaded browser.
system-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

build:
	$(BIN)/python scripts/build_functions.py

tf-check:
	scripts/tf_check.sh

dev: install
	$(BIN)/truecount dev

# Benchmarks: not part of `check` (a smoke run of each is); ~3 minutes.
bench:
	$(BIN)/python -m benchmarks.run_all --write-docs

check: install lint typecheck contract-check tf-check test

contract-check:
	$(BIN)/python -m truecount.contract --check
