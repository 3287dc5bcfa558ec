# Everything a newcomer needs comes from pip: no Docker, no system packages.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test reliability bench lint format lock stack-up stack-down stack-status clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install  ## start the embedded stack and run the db-failover demo to the end
	$(BIN)/runbook demo db-failover

test: install  ## the whole suite, on real servers started by the tests
	$(BIN)/python -m pytest

reliability: install  ## crashes, faults, bad input, secret scan (also part of `make test`)
	$(BIN)/python -m pytest tests/reliability

# Not part of `make test`. A quick look, written beside the committed bench/RESULTS.md:
# make bench BENCH_ARGS="--runs 10 --incidents 200 --out /tmp/bench-quick.md"
bench: install  ## every benchmark on its own stacks; figures in bench/RESULTS.md
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: install  ## the image's locked, hashed dependencies from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --no-header --quiet -o deploy/requirements.lock

stack-up: install
	$(BIN)/runbook stack up

stack-down: install
	$(BIN)/runbook stack down

stack-status: install
	$(BIN)/runbook stack status

clean: stack-down
	rm -rf .runbook
