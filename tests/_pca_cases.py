"""Random data for `pca` with an exactly centred float64 reference: the CI slice
(`tests/test_pca.py`) and ``make fuzz`` (`tests/fuzz_run.py --pca-cases`)."""

from __future__ import annotations

import warnings

import torch

import torchsvd
from torchsvd._topk import default_tol

F32, F64 = torch.float32, torch.float64
KINDS = ("dense", "sparse", "operator")


def random_case(
    seed: int,
) -> tuple[torch.Tensor | torchsvd.LinearOperator, torch.Tensor, int, str]:
    """``(A, X, k, kind)``: the input (dense, sparse CSR or a `LinearOperator` of it), its
    values ``X`` in its dtype, k, and which of `KINDS` the input is. Shapes 50–19999 × 5–119,
    a low-rank signal of random size plus noise, and column offsets up to 10 (centring
    matters), float32 and float64."""
    gen = torch.Generator().manual_seed(seed)
    m = int(torch.randint(50, 20000, (), generator=gen))
    n = int(torch.randint(5, 120, (), generator=gen))
    k = int(torch.randint(1, min(m, n, 10) + 1, (), generator=gen))
    dtype = (F32, F64)[seed % 2]
    kind = KINDS[seed // 2 % len(KINDS)]
    r = int(torch.randint(1, 20, (), generator=gen))
    X = torch.randn(m, r, generator=gen, dtype=F64) @ torch.randn(r, n, generator=gen, dtype=F64)
    X = X * float(torch.rand((), generator=gen))
    X = X + 0.1 * torch.randn(m, n, generator=gen, dtype=F64)
    offset = float(torch.randint(0, 10, (), generator=gen))
    X = X + offset * torch.rand(1, n, generator=gen, dtype=F64)
    if kind == "sparse":
        X = X * (torch.rand(m, n, generator=gen) < 0.2)
    X = X.to(dtype)
    if kind == "dense":
        return X, X, k, kind
    if kind == "sparse":
        with warnings.catch_warnings():  # torch's note that CSR support is in beta
            warnings.simplefilter("ignore", UserWarning)
            return X.to_sparse_csr(), X, k, kind
    op = torchsvd.LinearOperator(X.shape, lambda V: X @ V, lambda W: X.mT @ W, dtype=dtype)
    return op, X, k, kind


def check(seed: int) -> str | None:
    """None where `pca` of case ``seed`` meets tol against the exactly centred matrix (both
    residuals to 3·tol·σ_1, singular values to 50·tol·σ_1) or raises `ConvergenceError` (a
    float32 floor, said aloud), else what failed."""
    A, X, k, kind = random_case(seed)
    try:
        U, S, Vh = torchsvd.pca(A, k)
    except torchsvd.ConvergenceError:
        return None
    Xc = X.double() - X.double().mean(dim=0)
    U, S, V = U.double(), S.double(), Vh.double().mT
    S0 = torch.linalg.svdvals(Xc)[:k]
    tol, scale = default_tol(X.dtype), float(S0[0])
    errors = {
        "singular values": float((S - S0).abs().max()) / (50 * tol * scale),
        "A_c v - σ u": float((Xc @ V - U * S).norm(dim=0).max()) / (3 * tol * scale),
        "A_cᵀ u - σ v": float((Xc.mT @ U - V * S).norm(dim=0).max()) / (3 * tol * scale),
    }
    bad = {name: f"{x:.2g}× the bound" for name, x in errors.items() if not x <= 1}
    if not bad:
        return None
    return f"seed {seed}: {kind} {tuple(X.shape)} k={k} {str(X.dtype)[6:]}: {bad}"
