"""A training step with torchsvd.nn.spectral_norm against PyTorch's spectral_norm, same run.

Usage: python benchmarks/bench_nn.py [--quick] [--steps N] [--lr LR]

Linear(1024, 1024), batch 64, SGD on a regression loss. The two layers start from the same
weights and are stepped alternately; the table reports the median step time, the ratio
torchsvd / PyTorch, and how far each layer's σ_1 (the one it divided by) is from the true
largest singular value of its weight at that step (measured outside the timed region).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

import torchsvd
from _timing import timed


def _sigma_error(layer: nn.Module) -> float:
    """|σ used − σ_1(W)| / σ_1(W): the normalised weight's 2-norm should be exactly 1."""
    with torch.no_grad():
        layer.eval()
        w = layer.weight
        layer.train()
        return abs(float(torch.linalg.matrix_norm(w.double(), 2)) - 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small layer, to check the script")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    size, batch = (128, 16) if args.quick else (1024, 64)
    steps = args.steps or (5 if args.quick else 40)

    torch.manual_seed(0)
    base = nn.Linear(size, size)
    layers = {
        "torch.nn.utils.parametrizations.spectral_norm": torch_spectral_norm(copy.deepcopy(base)),
        "torchsvd.nn.spectral_norm": torchsvd.nn.spectral_norm(copy.deepcopy(base)),
    }
    opts = {k: torch.optim.SGD(v.parameters(), lr=args.lr) for k, v in layers.items()}
    x = torch.randn(batch, size)
    y = torch.randn(batch, size)
    times: dict[str, list[float]] = {k: [] for k in layers}
    errors: dict[str, list[float]] = {k: [] for k in layers}
    for step in range(steps + 3):
        for name, layer in layers.items():

            def train_step(name: str = name, layer: nn.Module = layer) -> None:
                opts[name].zero_grad()
                loss = (layer(x) - y).square().mean()
                loss.backward()
                opts[name].step()

            elapsed, _ = timed(train_step)
            if step >= 3:  # warm-up steps excluded
                times[name].append(elapsed)
                errors[name].append(_sigma_error(layer))
    print(
        f"torch {torch.__version__}, torchsvd {torchsvd.__version__}, python "
        f"{platform.python_version()}, {torch.get_num_threads()} threads, Linear({size}, {size}), "
        f"batch {batch}, SGD lr {args.lr}, {steps} steps, float32"
    )
    print()
    print("| layer | median step (ms) | ratio | median σ error | max σ error |")
    print("|---|---|---|---|---|")
    ref = statistics.median(times["torch.nn.utils.parametrizations.spectral_norm"])
    for name in layers:
        med = statistics.median(times[name])
        print(
            f"| {name} | {1e3 * med:.2f} | {med / ref:.2f} | "
            f"{statistics.median(errors[name]):.1e} | {max(errors[name]):.1e} |"
        )


if __name__ == "__main__":
    main()
