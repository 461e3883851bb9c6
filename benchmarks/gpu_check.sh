#!/usr/bin/env bash
# The checks that need a GPU, in one call of a few minutes: the CUDA tests, then the benchmarks
# that take --device cuda. Output goes to $OUT (or ./gpu-check) for the performance record.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
py=".venv/bin/python"
[ -x "$py" ] || { python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e '.[dev]'; }
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} | tee "$out/device.txt"
# Every test that names CUDA (parametrized over devices, or CUDA-only), then the whole suite.
timeout 240 .venv/bin/pytest -q -p no:cacheprovider -k "cuda or device" tests 2>&1 | tee "$out/tests-cuda.txt" | tail -5
cd benchmarks
for bench in bench_svd.py bench_spectral.py bench_small.py; do
  [ -f "$bench" ] || continue
  timeout 120 "../$py" "$bench" --device cuda --repeats 5 2>&1 | tee "../$out/${bench%.py}-cuda.txt" | tail -15
done
