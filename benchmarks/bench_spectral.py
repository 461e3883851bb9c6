"""Forward+backward time of svd_apply / polar against the naive composition, same run.

Usage: python benchmarks/bench_spectral.py [--quick] [--repeats N] [--device cpu|cuda] [--threads N]

The naive composition is ``U diag(f(S)) Vh`` with ``U, S, Vh = torch.linalg.svd(A)``, autodiffed
through PyTorch's SVD backward (it is NaN at ties; here the inputs are random, so both are
finite). Each pair is timed alternately (naive, ours, naive, ours, ...) so that drift in the
machine's speed hits both alike; the table shows medians of the repeats and the ratio
ours / naive (< 1 is faster). Inputs are float32 Gaussian matrices; the loss is ⟨W, F(A)⟩.
"""

from __future__ import annotations

import argparse
import platform
import warnings
from collections.abc import Callable

import torch

import torchsvd
from _timing import time_pair

SHAPES = [(512, 512), (1024, 256), (1000, 8, 8), (100000, 3, 3)]
QUICK_SHAPES = [(48, 48), (64, 16), (50, 8, 8), (500, 3, 3)]

Op = Callable[[torch.Tensor], torch.Tensor]


def _naive(f: Callable[[torch.Tensor], torch.Tensor]) -> Op:
    def run(A: torch.Tensor) -> torch.Tensor:
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)
        return (U * f(S).unsqueeze(-2)) @ Vh

    return run


def _naive_polar(A: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(A, full_matrices=False)
    return U @ Vh


# name -> (torchsvd op, naive composition)
CASES: dict[str, tuple[Op, Op]] = {
    "svd_apply(tanh)": (lambda A: torchsvd.svd_apply(A, torch.tanh), _naive(torch.tanh)),
    "polar": (torchsvd.polar, _naive_polar),
}


def bench(
    shape: tuple[int, ...], ours: Op, naive: Op, repeats: int, device: torch.device
) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(shape, generator=gen).to(device).requires_grad_()
    W = torch.randn(shape, generator=gen).to(device)

    def forward_backward(op: Op) -> Callable[[], object]:
        def run() -> object:
            return torch.autograd.grad((op(A) * W).sum(), A)

        return run

    with warnings.catch_warnings():
        # Among 10⁵ random 3×3 float32 matrices a few are numerically singular; polar warns.
        warnings.simplefilter("ignore", torchsvd.DegenerateGradientWarning)
        return time_pair((forward_backward(naive), forward_backward(ours)), repeats, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that it runs")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeats = args.repeats or (3 if args.quick else 11)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {device}, float32, "
        f"median of {repeats} forward+backward runs"
    )
    print(
        f"| {'op':<16} | {'shape':<14} | {'naive (s)':>10} | {'torchsvd (s)':>12} | {'ratio':>6} |"
    )
    print(f"|{'-' * 18}|{'-' * 16}|{'-' * 12}|{'-' * 14}|{'-' * 8}|")
    for name, (ours, naive) in CASES.items():
        for shape in shapes:
            ref, new = bench(shape, ours, naive, repeats, device)
            print(
                f"| {name:<16} | {'x'.join(map(str, shape)):<14} | {ref:>10.4f} | {new:>12.4f} "
                f"| {new / ref:>6.2f} |"
            )


if __name__ == "__main__":
    main()
