"""Helpers shared by the test files (on the path through ``pythonpath`` in pyproject.toml)."""

from __future__ import annotations

import torch

F32, F64 = torch.float32, torch.float64
C64, C128 = torch.complex64, torch.complex128


def projector(Q: torch.Tensor) -> torch.Tensor:
    """Q Qᴴ: the orthogonal projector onto the span of Q's columns (gauge invariant)."""
    return Q @ Q.mH


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative Frobenius distance ‖a − b‖ / ‖b‖."""
    return float((a - b).norm() / b.norm())


def weights(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A seeded Gaussian tensor (complex Gaussian for complex dtypes), drawn in double precision."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    if dtype.is_complex:
        w = torch.complex(w, torch.randn(shape, generator=gen, dtype=torch.float64))
    return w.to(dtype)


def inner(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Re⟨X, Y⟩ = Re tr(Xᴴ Y), the real inner product that cotangents pair with."""
    return (X.conj() * Y).real.sum()
