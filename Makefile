PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install levels: the demo needs the app extra only, the tests need the dev extra too.
DEMO_STAMP := $(VENV)/.installed-cli
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck bench gpu-check clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(BIN)/pip install -q -c constraints.txt -e '.[cli]'
	touch $(DEMO_STAMP)

$(DEV_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(DEV_STAMP) $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/torchsvd demo --out torchsvd-demo

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n 2 -p no:cacheprovider src tests

.PHONY: fuzz
fuzz: $(DEV_STAMP)
	$(BIN)/python tests/fuzz_run.py --cases 10000 --workers 2 --sparse-cases 2000 --pca-cases 1000

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/bench_svd.py

# The CUDA tests and the --device cuda benchmarks, for a machine with a GPU (a few minutes).
gpu-check: $(DEV_STAMP)
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) torchsvd-demo
