# cotune: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PY_DIRS := src tests benchmarks scripts

.PHONY: help install demo test lint bench node contracts contracts-check constraints clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install pinned dependencies (torch 2.13.0 first)

demo: $(STAMP) ## Run a whole session in one process (embedded chain, dev enclave)
	$(BIN)/cotune demo

test: $(STAMP) node ## Run the test suite (on the embedded chain and on a private anvil)
	$(BIN)/pytest

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict on src
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy --strict src

bench: $(STAMP) ## Run the benchmarks (each prints a JSON object as its last line)
	$(BIN)/python benchmarks/bench_crypto.py
	$(BIN)/python benchmarks/bench_gas.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_gate.py
	$(BIN)/python benchmarks/bench_dataset.py

node: node_modules/.package-lock.json ## Install the pinned Node tools (solc, OpenZeppelin, anvil)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

contracts: $(STAMP) node ## Recompile contracts/*.sol into src/cotune/chain/artifacts
	$(BIN)/python scripts/build_contracts.py

contracts-check: $(STAMP) node ## Fail if the committed artifacts differ from a fresh compile
	$(BIN)/python scripts/build_contracts.py --check

constraints: $(STAMP) ## Rewrite constraints.txt from the current .venv
	@head -4 constraints.txt > constraints.txt.new
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' >> constraints.txt.new
	@mv constraints.txt.new constraints.txt

clean: ## Remove the virtualenv, node_modules and caches
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
