"""Forward and forward+backward time of torchsvd.svd over torch.linalg.svd, same run.

Usage: python benchmarks/bench_svd.py [--quick] [--repeats N] [--device cpu|cuda]

The two implementations are timed alternately (A, B, A, B, ...) so that drift in the machine's
speed hits both alike; the table shows medians and the ratio torchsvd / torch (< 1 is faster).
The loss uses U, S and Vh through gauge-invariant terms, so both backward passes do full work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import torchsvd
from _timing import device_args, machine_line, time_pair

SHAPES = [(512, 512), (1024, 256), (256, 1024), (1000, 8, 8), (100000, 3, 3)]
QUICK_SHAPES = [(64, 64), (96, 32), (32, 96), (100, 8, 8), (1000, 3, 3)]

Decomposition = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _torch_svd(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    return U, S, Vh


def _loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return ((U @ Vh) * W).sum() + S.sum()


Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def bench_shape(
    shape: tuple[int, ...], repeats: int, device: torch.device, loss: Loss = _loss
) -> tuple[float, float, float, float]:
    """torch.linalg.svd and torchsvd.svd on one random batch, alternated: forward, and
    forward+backward of ``loss(U, S, Vh, W)``; median seconds (torch fwd, ours, torch fwd+bwd,
    ours)."""
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(shape, generator=gen).to(device)
    W = torch.randn(shape, generator=gen).to(device)
    Ag = A.clone().requires_grad_()

    def forward(svd: Decomposition) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return svd(A)

        return run

    def forward_backward(svd: Decomposition) -> Callable[[], object]:
        def run() -> object:
            return torch.autograd.grad(loss(*svd(Ag), W), Ag)

        return run

    fwd_ref, fwd_ours = time_pair((forward(_torch_svd), forward(torchsvd.svd)), repeats, device)
    fb_ref, fb_ours = time_pair(
        (forward_backward(_torch_svd), forward_backward(torchsvd.svd)), repeats, device
    )
    return fwd_ref, fwd_ours, fb_ref, fb_ours


def main() -> None:
    args = device_args(__doc__, full_repeats=15)
    device, repeats = torch.device(args.device), args.repeats
    shapes = QUICK_SHAPES if args.quick else SHAPES
    print(machine_line(device, repeats))
    print()
    print(
        "| shape | torch fwd (s) | torchsvd fwd (s) | ratio | torch fwd+bwd (s) "
        "| torchsvd fwd+bwd (s) | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for shape in shapes:
        fr, fo, br, bo = bench_shape(shape, repeats, device)
        name = "×".join(map(str, shape))
        print(
            f"| {name} | {fr:.4g} | {fo:.4g} | {fo / fr:.2f} | {br:.4g} | {bo:.4g} "
            f"| {bo / br:.2f} |"
        )


if __name__ == "__main__":
    main()
