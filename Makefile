# funnelvalue — `make run` and `make test` work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: help install run test lint bench mutate example clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install funnelvalue with its dev tools

EXAMPLE := examples/state/crm_leads.csv

example: $(STAMP) ## A freshly dated copy of the example export in examples/state/ (the committed one is never touched)
	$(BIN)/python examples/make_example.py --if-stale --output $(EXAMPLE)

run: example ## The daily job on the bundled example project (examples/: import file + SQLite ledger)
	@# Exit 1 means "sent; some rows are invalid": the example has a few bad rows on purpose.
	$(BIN)/funnelvalue run --project-dir examples; \
	  rc=$$?; [ $$rc -le 1 ] || exit $$rc

test: $(STAMP) ## Run the test suite
	$(BIN)/pytest

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict on the package
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

bench: $(STAMP) ## Throughput and peak memory: the pipeline (10k/100k/1M leads), the upload
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_upload.py
	$(BIN)/python benchmarks/bench_upload.py --destination data-manager
	$(BIN)/python benchmarks/bench_sources.py

mutate: $(STAMP) ## Mutation testing (slow; not in CI): the one-line faults the suite misses
	$(BIN)/mutmut run --max-children 2 || true
	$(BIN)/mutmut results

clean: ## Remove the virtualenv, the ledger and the output files
	rm -rf $(VENV) state out mutants examples/state examples/out
