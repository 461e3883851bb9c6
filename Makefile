PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/torchsvd demo --out torchsvd-demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n 2 -p no:cacheprovider src tests

.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python tests/fuzz_run.py --cases 10000 --workers 2

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_svd.py

clean:
	rm -rf $(VENV) torchsvd-demo
