"""``torchsvd demo``: a gradient PyTorch returns as NaN next to torchsvd's finite one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import torchsvd

__all__ = ["EXAMPLE_MATRIX", "gradient_demo"]

# A 2×3 matrix whose SVD by hand is exact and short: σ = 5 and 3, with rational Gram matrices.
EXAMPLE_MATRIX = "3 2 2; 2 3 -2"


def _polar_sum(A: torch.Tensor, decompose: Callable[..., Any]) -> torch.Tensor:
    U, _, Vh = decompose(A)
    return (U @ Vh).sum()


def _central_differences(A: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    # float64 central differences of the forward only (no backward involved)
    g = torch.zeros_like(A)
    with torch.no_grad():
        for idx in np.ndindex(*A.shape):
            E = torch.zeros_like(A)
            E[idx] = h
            up = _polar_sum(A + E, torch.linalg.svd)
            down = _polar_sum(A - E, torch.linalg.svd)
            g[idx] = (up - down) / (2 * h)
    return g


def _row(x: torch.Tensor) -> str:
    return "[" + ", ".join(f"{float(v):.4f}" for v in x) + "]"


def gradient_demo() -> list[str]:
    """Gradients of ``sum(U @ Vh)`` at tied singular values: ``torch.linalg.svd``'s NaN next to
    ``torchsvd.svd``'s, checked against float64 central differences. Returns the report lines.
    """
    cases = [
        ("a 4×4 orthogonal matrix", torchsvd.testing.random_unitary(4, seed=0)),
        (
            "a 3×3 matrix with σ = (2, 2, 1)",
            torchsvd.testing.matrix_with_singular_values([2.0, 2.0, 1.0], 3, 3, seed=1),
        ),
    ]
    lines = ["loss(A) = sum(U @ Vh) (U @ Vh is the polar factor), at matrices with tied σ:"]
    for name, A in cases:
        A_torch = A.clone().requires_grad_()
        (g_torch,) = torch.autograd.grad(_polar_sum(A_torch, torch.linalg.svd), A_torch)
        A_ours = A.clone().requires_grad_()
        (g_ours,) = torch.autograd.grad(_polar_sum(A_ours, torchsvd.svd), A_ours)
        g_fd = _central_differences(A)
        bad = int((~torch.isfinite(g_torch)).sum())
        err = float((g_ours - g_fd).abs().max())
        finite = "all finite" if bool(torch.isfinite(g_ours).all()) else "NOT finite"
        lines += [
            f"  at {name}:",
            f"    torch.linalg.svd  gradient: {bad} of {g_torch.numel()} entries NaN or inf",
            f"    torchsvd.svd      gradient: {finite}, "
            f"max |error| vs float64 central differences = {err:.1e}",
            "    first row of each gradient:",
            f"      torch.linalg.svd     {_row(g_torch[0])}",
            f"      torchsvd.svd         {_row(g_ours[0])}",
            f"      central differences  {_row(g_fd[0])}",
        ]
    return lines
