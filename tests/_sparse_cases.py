"""Random matrices for `svds`'s one-basis solver (`torchsvd._gram_lanczos`) with a dense
reference, sparse (CSR, COO) and dense (``method="krylov"``): the CI slice
(`tests/test_gram_lanczos.py`) and ``make fuzz`` (`tests/fuzz_run.py --sparse-cases`)."""

from __future__ import annotations

import warnings

import torch

import torchsvd
from torchsvd._topk import default_tol

F32, F64 = torch.float32, torch.float64
KINDS = ("random", "lowrank", "ties", "steep", "scaled", "tiny", "cluster", "half-full")


def tied(multiplicity: int, m: int, n: int) -> torch.Tensor:
    """Singular values 3 (``multiplicity`` times), then 2, 2, 1 and 0.5, permuted diagonal."""
    d = min(m, n)
    values = [3.0] * multiplicity + [2.0, 2.0, 1.0] + [0.5] * (d - multiplicity - 3)
    gen = torch.Generator().manual_seed(multiplicity)
    return _permuted_diagonal(torch.tensor(values, dtype=F64), m, n, gen)


def _permuted_diagonal(s: torch.Tensor, m: int, n: int, gen: torch.Generator) -> torch.Tensor:
    D = torch.zeros(m, n, dtype=F64)
    d = len(s)
    D[:d, :d] = torch.diag(s)
    return D[torch.randperm(m, generator=gen)][:, torch.randperm(n, generator=gen)]


def random_case(seed: int) -> tuple[torch.Tensor, int, torch.dtype, str, str]:
    """A seeded sparse matrix — its dense float64 copy, exactly representable in the dtype —
    with k, the dtype, the kind and the layout `svds` sees (``"csr"``, ``"coo"`` or
    ``"dense"``): shapes 50–699 (long enough for the one-basis solver),
    densities 0.5–8 %, k 1–12, and spectra that are Gaussian-like, low-rank, tied (a top value
    of multiplicity 2–6), steep (down to 1e-14), clustered (within 1e-4), or scaled by 1e±20."""
    gen = torch.Generator().manual_seed(seed)
    m, n = (int(x) for x in torch.randint(50, 700, (2,), generator=gen))
    dtype = (F32, F64)[seed % 2]
    kind = KINDS[seed // 2 % len(KINDS)]
    density = float(torch.empty(()).uniform_(0.005, 0.08, generator=gen))
    D = torch.randn(m, n, generator=gen, dtype=F64) * (torch.rand(m, n, generator=gen) < density)
    d = min(m, n)
    if kind == "lowrank":
        r = int(torch.randint(1, 15, (), generator=gen))
        D = torch.randn(m, r, generator=gen, dtype=F64) @ torch.randn(
            r, n, generator=gen, dtype=F64
        )
        D = D * (torch.rand(m, n, generator=gen) < 0.3)
    elif kind == "ties":
        D = tied(2 + seed % 5, m, n)
    elif kind == "steep":
        decades = float(torch.randint(2, 15, (), generator=gen))
        D = _permuted_diagonal(torch.logspace(0, -decades, d, dtype=F64), m, n, gen)
    elif kind == "scaled":
        D = D * 1e20
    elif kind == "tiny":
        D = D * 1e-20
    elif kind == "cluster":
        s = 1 + 1e-4 * torch.rand(d, generator=gen, dtype=F64)
        s[d // 2 :] *= 0.5
        D = _permuted_diagonal(s, m, n, gen)
    elif kind == "half-full":
        D = torch.randn(m, n, generator=gen, dtype=F64) * (torch.rand(m, n, generator=gen) < 0.5)
    k = 1 + seed % 12
    layout = ("csr", "coo", "dense")[int(torch.randint(3, (), generator=gen))]
    return D.to(dtype).double(), k, dtype, kind, layout


def check(seed: int) -> str | None:
    """None where `svds` of case ``seed`` agrees with the dense SVD, else what failed.

    Singular values to 50·tol·σ_1, both residuals to 3·tol·σ_1, and orthonormal factors.
    """
    D, k, dtype, kind, layout = random_case(seed)
    if layout == "dense":
        U, S, Vh = torchsvd.svds(D.to(dtype), k, method="krylov")
    else:
        with warnings.catch_warnings():  # torch's note that CSR support is in beta
            warnings.simplefilter("ignore", UserWarning)
            A = D.to(dtype).to_sparse_csr() if layout == "csr" else D.to(dtype).to_sparse_coo()
        U, S, Vh = torchsvd.svds(A, k)
    S0 = torch.linalg.svdvals(D)
    tol, scale = default_tol(dtype), float(S0[0])
    U, S, V = U.double(), S.double(), Vh.double().mT
    eye = torch.eye(k, dtype=F64)
    limit = 1e-4 if dtype == F32 else 1e-9
    errors = {
        "singular values": float((S - S0[:k]).abs().max()) / (50 * tol * scale),
        "A v - σ u": float((D @ V - U * S).norm(dim=0).max()) / (3 * tol * scale),
        "Aᵀ u - σ v": float((D.mT @ U - V * S).norm(dim=0).max()) / (3 * tol * scale),
        "UᵀU - I": float((U.mT @ U - eye).abs().max()) / limit,
        "VᵀV - I": float((V.mT @ V - eye).abs().max()) / limit,
    }
    bad = {name: f"{x:.2g}× the bound" for name, x in errors.items() if not x <= 1}
    if not bad:
        return None
    return f"seed {seed}: {kind} {layout} {tuple(D.shape)} k={k} {str(dtype)[6:]}: {bad}"
