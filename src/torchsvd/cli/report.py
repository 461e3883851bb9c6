"""The numbers ``torchsvd info`` prints about a matrix.

A matrix small enough for a dense SVD gets one (``torch.linalg.svdvals``), and everything is
derived from its singular values: rank, the smallest non-zero σ, κ₂, ‖A⁺‖₂, the nuclear norm.
A sparse matrix, or a dense one too large for a dense SVD in a few seconds, is never densified:
`torchsvd.svds` computes its largest singular values, and only what follows from those is
reported (σ_max, the top of the spectrum, the rank when the tolerance falls inside the top);
the condition number needs σ_min, which a top-k solve does not give: ``cond=True`` estimates it
for a square matrix as σ_max(A)·σ_max(A⁻¹), A⁻¹ applied through an LU factorization.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from torchsvd import ConvergenceError, LinearOperator, svds
from torchsvd._validate import rank_rtol
from torchsvd.cli.io import check_dense_fits

__all__ = ["DENSE_WORK", "Report", "dense_svd_fits", "matrix_report"]

# A dense SVD costs about min(m, n)²·max(m, n) flops (times a small constant); above 2000³
# info switches to the top-k solve unless --full is given.
DENSE_WORK = 2000**3
# Relative residual of the top-k solve: every value is then within about this times σ_max of a
# singular value, far below the six significant digits printed.
TOP_TOL = 1e-8
# A sparse matrix is densified for the dense SVD only up to this many entries (400 MB).
DENSE_ENTRIES = 5 * 10**7

Matrix: TypeAlias = np.ndarray | scipy.sparse.csr_array


@dataclass(frozen=True)
class Report:
    """The lines of ``info`` and what ``--plot`` draws.

    Attributes
    ----------
    lines : list of (key, value) strings
    singular_values : ndarray, the singular values computed (all, or the largest), descending
    tol : float, the rank tolerance rtol·σ_max
    total : int, min(m, n): how many singular values the matrix has
    """

    lines: list[tuple[str, str]]
    singular_values: np.ndarray
    tol: float
    total: int


def dense_svd_fits(m: int, n: int) -> bool:
    """Whether a dense SVD of an m×n matrix takes at most a few seconds."""
    return min(m, n) ** 2 * max(m, n) <= DENSE_WORK


def frobenius_norm(values: np.ndarray) -> float:
    """‖values‖₂ without overflow or underflow: scaled by the largest magnitude first.

    >>> frobenius_norm(np.array([1e300, 1.0, 1e-300]))
    1e+300
    """
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    if scale == 0.0:
        return 0.0
    return scale * float(np.linalg.norm(values / scale))


def _g(x: float) -> str:
    return f"{x:.6g}"


def matrix_report(
    A: Matrix,
    rtol: float | None,
    *,
    top: int,
    full: bool = False,
    cond: bool = False,
    maxiter: int = 300,
    progress: Callable[[str], object] | None = None,
) -> Report:
    """The ``info`` report of a real float64 matrix (dense ``ndarray`` or sparse CSR).

    ``full=True`` forces the dense SVD; ``top`` is the number of singular values the top-k
    solve computes; ``maxiter`` its block steps. Raises ``ValueError`` (one line) when the
    top-k solve does not converge, or when ``full`` asks to densify a matrix that does not fit.
    """
    m, n = A.shape
    sparse = isinstance(A, scipy.sparse.csr_array)
    values = np.asarray(A.data) if sparse else A.ravel()
    rtol_used = rank_rtol(m, n, torch.float64) if rtol is None else rtol
    how = "max(m, n)·eps(float64)" if rtol is None else "--rtol"
    kind = f", sparse ({values.size} stored entries)" if sparse else ""
    lines = [("shape", f"{m} × {n}{kind}")]
    dense_ok = dense_svd_fits(m, n) and (not sparse or m * n <= DENSE_ENTRIES)
    if full or dense_ok:
        if sparse:
            check_dense_fits(
                "--full", (m, n), "leave out --full to compute the top of the spectrum"
            )
        dense = A.toarray() if isinstance(A, scipy.sparse.csr_array) else A
        if progress is not None:
            progress(f"dense SVD of {m} × {n}")
        S = torch.linalg.svdvals(torch.from_numpy(dense)).numpy()
        lines += _full_lines(S, m, n, rtol_used, how)
    else:
        k = min(top, m, n)
        if progress is not None:
            progress(f"the {k} largest singular values of {m} × {n} (torchsvd.svds)")
        S = _top_singular_values(A, k, maxiter)
        lines += _top_lines(A, S, m, n, rtol_used, how, cond=cond, maxiter=maxiter)
    lines.insert(-2, ("Frobenius norm", _g(frobenius_norm(values))))
    return Report(lines, S, rtol_used * float(S[0]), min(m, n))


def _full_lines(S: np.ndarray, m: int, n: int, rtol: float, how: str) -> list[tuple[str, str]]:
    smax = float(S[0])
    tol = rtol * smax
    rank = int((S > tol).sum())
    lines = [
        (
            "numerical rank",
            f"{rank}  (singular values > {tol:.3g} = rtol·σ_max, rtol = {rtol:.3g} = {how})",
        ),
        ("σ_max = ‖A‖₂", _g(smax)),
    ]
    if rank:
        smin = float(S[rank - 1])
        lines.append(("smallest non-zero σ", _g(smin)))
        if rank == min(m, n):
            ratio = smax / float(S[-1]) if S[-1] > 0 else math.inf
            lines.append(("condition number κ₂", f"{_g(ratio)}  (σ_max/σ_min)"))
        else:
            lines.append(("condition number κ₂", "inf  (numerically rank-deficient)"))
        lines.append(("‖A⁺‖₂", f"{_g(1 / smin)}  (1 / smallest non-zero σ)"))
    else:
        lines.append(("smallest non-zero σ", "none (A = 0)"))
        lines.append(("condition number κ₂", "inf  (A = 0)"))
    lines += [
        ("nuclear norm", _g(float(np.sum(S)))),
        ("null-space dimension", f"{n - rank}  (n − rank)"),
    ]
    return lines


def _as_torch(A: Matrix) -> torch.Tensor:
    if isinstance(A, scipy.sparse.csr_array):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
            return torch.sparse_csr_tensor(
                torch.from_numpy(A.indptr.astype(np.int64)),
                torch.from_numpy(A.indices.astype(np.int64)),
                torch.from_numpy(A.data),
                A.shape,
                check_invariants=False,  # scipy's CSR arrays are canonical
            )
    return torch.from_numpy(A)


def _svds_values(op: torch.Tensor | LinearOperator, k: int, maxiter: int, what: str) -> np.ndarray:
    try:
        _, S, _ = svds(op, k, tol=TOP_TOL, maxiter=maxiter)
    except ConvergenceError as exc:
        worst = float(torch.as_tensor(exc.residuals).max()) if exc.residuals is not None else None
        reached = f" (relative residual {worst:.2g})" if worst is not None else ""
        raise ValueError(
            f"the {what} did not converge in {maxiter} block steps{reached}; block Lanczos is "
            "slow when the top singular values are close together: ask for fewer with --top, "
            "more steps with --maxiter, or a dense SVD with --full"
        ) from None
    return S.numpy()


def _top_singular_values(A: Matrix, k: int, maxiter: int) -> np.ndarray:
    m, n = A.shape
    what = f"{k} largest singular values of the {m} × {n} matrix"
    return _svds_values(_as_torch(A), k, maxiter, what)


def _top_lines(
    A: Matrix,
    S: np.ndarray,
    m: int,
    n: int,
    rtol: float,
    how: str,
    *,
    cond: bool,
    maxiter: int,
) -> list[tuple[str, str]]:
    k = S.size
    smax = float(S[0])
    tol = rtol * smax
    below = S <= tol
    # Singular values are descending: once one of the top k is at or below the tolerance,
    # the rank is the count above it; otherwise it is only known to be at least k.
    rank = int((~below).sum())
    exact = bool(below.any()) or k == min(m, n)
    rank_text = f"{rank}" if exact else f"≥ {k}  (the {k} largest singular values all exceed it)"
    lines = [
        (
            "computed",
            f"the {k} largest of {min(m, n)} singular values, by torchsvd.svds "
            f"(a dense SVD of {m} × {n} is too slow here; --full forces it)",
        ),
        (
            "numerical rank",
            f"{rank_text}  (singular values > {tol:.3g} = rtol·σ_max, rtol = {rtol:.3g} = {how})",
        ),
        ("σ_max = ‖A‖₂", _g(smax)),
        ("largest singular values", ", ".join(_g(float(s)) for s in S)),
    ]
    if exact and rank:
        lines.append(("smallest non-zero σ", _g(float(S[rank - 1]))))
    if exact and rank < min(m, n):
        lines.append(("condition number κ₂", "inf  (numerically rank-deficient)"))
    elif cond:
        lines.append(("condition number κ₂", _condition_estimate(A, smax, maxiter)))
    else:
        lines.append(("condition number κ₂", "not computed (needs σ_min; --cond estimates it)"))
    null = f"{n - rank}  (n − rank)" if exact else f"≤ {n - k}  (n − {k})"
    lines += [
        ("nuclear norm", "not computed (needs every singular value)"),
        ("null-space dimension", null),
    ]
    return lines


def _condition_estimate(A: Matrix, smax: float, maxiter: int) -> str:
    m, n = A.shape
    if m != n:
        return "not computed (σ_min of a non-square matrix needs the whole spectrum)"
    solve, rsolve = _lu_solvers(A)
    if solve is None or rsolve is None:
        return "inf  (A is singular: its LU factorization has a zero pivot)"
    op = LinearOperator((n, n), solve, rsolve, dtype=torch.float64)
    inv_norm = float(_svds_values(op, 1, maxiter, "largest singular value of A⁻¹")[0])
    return f"{_g(smax * inv_norm)}  (σ_max·‖A⁻¹‖₂, A⁻¹ applied by an LU factorization)"


Solve = Callable[[torch.Tensor], torch.Tensor]


def _lu_solvers(A: Matrix) -> tuple[Solve | None, Solve | None]:
    """X ↦ A⁻¹X and Y ↦ A⁻ᵀY from one LU factorization; (None, None) if A is singular."""
    if isinstance(A, scipy.sparse.csr_array):
        try:
            lu = scipy.sparse.linalg.splu(A.tocsc())
        except RuntimeError:  # "Factor is exactly singular"
            return None, None

        def solve(X: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(lu.solve(np.ascontiguousarray(X.numpy())))

        def rsolve(Y: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(lu.solve(np.ascontiguousarray(Y.numpy()), trans="T"))

        return solve, rsolve
    T = torch.from_numpy(A)
    LU, pivots, info = torch.linalg.lu_factor_ex(T)
    if int(info) != 0:
        return None, None
    return (
        lambda X: torch.linalg.lu_solve(LU, pivots, X),
        lambda Y: torch.linalg.lu_solve(LU, pivots, Y, adjoint=True),
    )
