"""The dense path of `svds`: Gram matrix of the short side, symmetric eigensolve, one refinement.

For a dense ``A`` (m×n, m > n; the wide and the square case run on ``Aᴴ``) with a short side:

1. ``G = AᴴA`` (n×n), one GEMM, in the precision of ``A``; ``G = V Λ Vᴴ`` by
   ``torch.linalg.eigh``; ``V_0`` the ``p = min(n, k + 10)`` leading eigenvectors.
2. Refinement (one block power step and Rayleigh–Ritz, in the solver's float64 bases):
   ``Q = orth(A V_0)``, ``M = Qᴴ A = P Σ Yᴴ`` (a p×n SVD), ``U = Q P``, ``V = Y``.
   The Gram matrix squares the condition number, so its eigenvectors alone would leave
   residuals of about eps·σ_1²/σ_i; after the step ``Aᴴ U = V Σ`` holds by construction and
   the error of ``V`` is that of a power step from ``V_0``.
3. Check, with one product ``A V_k``: ``‖A v_i − σ_i u_i‖ <= tol·σ_1`` for i < k. Where that
   fails (a matrix whose small singular values the squared spectrum rounds away) the caller
   falls back to the Krylov solver, warm-started from the refined ``Vh``: the dense path
   never returns a triplet that does not meet ``tol``.

The triplets are those of the Krylov path up to ``tol`` (and the gauge), so the implicit
backward of `svds` applies unchanged; ``next_sigma`` is the Rayleigh–Ritz value σ_{k+1} of the
refined basis, a lower estimate as in the Krylov solver. The eigendecomposition of step 1 is
returned too (`GramEigen`): where the forward took this path, the backward's projected linear
systems are solved by CG preconditioned with it (`gram_preconditioner`), which converges in a
few steps whatever the gap σ_k − σ_{k+1}, instead of plain CG, whose step count grows as the
gap shrinks. The Gram matrix is that of the side the backward solves in: ``A Aᴴ`` (m×m) when
``m <= n``, else ``AᴴA``.

References
----------
.. [1] N. Halko, P.-G. Martinsson, J. Tropp, "Finding structure with randomness: probabilistic
       algorithms for constructing approximate matrix decompositions", SIAM Review 53(2), 2011
       (power step and Rayleigh–Ritz on a given basis).
.. [2] G. Golub, C. Van Loan, "Matrix Computations", 4th ed., 2013, §8.6 (the SVD from the
       symmetric eigenproblem of AᴴA and its loss of accuracy for small singular values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from torchsvd._lanczos import KrylovResult, _orthonormalize
from torchsvd._operators import LinearOperator

__all__ = ["OVERSAMPLE", "GramEigen", "gram_preconditioner", "gram_topk"]

OVERSAMPLE = 10  # eigenvectors kept beyond k: the power step converges with σ_{p+1}/σ_k


@dataclass(frozen=True)
class GramEigen:
    """``G = W diag(values) Wᴴ``, the short side's Gram matrix, in the precision of ``A``.

    ``values`` ``(..., s)`` ascending, ``vectors`` ``(..., s, s)`` (columns ``w_j``).
    """

    values: torch.Tensor
    vectors: torch.Tensor


def gram_topk(
    A: torch.Tensor, op: LinearOperator, k: int, tol: float, gen: torch.Generator
) -> tuple[KrylovResult, bool, GramEigen]:
    """Top-k triplets of the dense ``A`` (module docstring), whether all meet ``tol``, and the
    eigendecomposition of the Gram matrix.

    ``A`` ``(..., m, n)`` is the matrix the products of ``op`` multiply with (detached, scaled
    as ``op``); ``op`` is the solver's view of it (float64 bases for a float32 ``A``), through
    which the refinement and the check run. ``residuals`` are ``‖A v_i − σ_i u_i‖ / σ_1``.
    """
    if A.shape[-2] <= A.shape[-1]:
        r, ok, eigen = _right_gram_topk(A.mH, op.H, k, tol, gen)
        return KrylovResult(r.Vh.mH, r.S, r.U.mH, r.next_sigma, r.residuals, 0), ok, eigen
    return _right_gram_topk(A, op, k, tol, gen)


def _right_gram_topk(
    A: torch.Tensor, op: LinearOperator, k: int, tol: float, gen: torch.Generator
) -> tuple[KrylovResult, bool, GramEigen]:
    """`gram_topk` by the Gram matrix ``AᴴA`` of the right side, whatever the shape."""
    m, n = A.shape[-2], A.shape[-1]
    p = min(n, k + OVERSAMPLE)
    # eigh in the precision of A: its backward error, eps·‖G‖, is that of forming G anyway.
    values, vectors = torch.linalg.eigh(A.mH @ A)
    start = vectors[..., -p:].flip(-1).mT.to(op.dtype)  # rows v_iᵀ, leading first
    none = torch.empty((*A.shape[:-2], 0, m), dtype=op.dtype, device=A.device)
    Q = _orthonormalize(op.matmat_rows(start), none, gen)
    M = op.rmatmat_rows(Q).conj()  # rows of Qᴴ A
    P, S, Yh = torch.linalg.svd(M, full_matrices=False)
    U_rows = P[..., :k].mT @ Q
    V_rows = Yh[..., :k, :].conj()
    true = (op.matmat_rows(V_rows) - S[..., :k, None] * U_rows).norm(dim=-1)
    sigma1 = S[..., :1]
    ok = bool((true <= tol * sigma1).all())
    residuals = true / sigma1.clamp_min(torch.finfo(S.dtype).tiny)
    nxt = S[..., k] if k < p else torch.zeros_like(S[..., 0])
    res = KrylovResult(U_rows.mT, S[..., :k], Yh[..., :k, :], nxt, residuals, 0)
    return res, ok, GramEigen(values, vectors)


def gram_preconditioner(
    eigen: GramEigen, shifts: torch.Tensor, deflated: int, dtype: torch.dtype
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``M_i⁻¹ = W diag(f_ij) Wᴴ``, approximate inverses of ``s_i I − G`` on the complement.

    For `torchsvd._cg.projected_shifted_cg` with ``G = W Λ Wᴴ`` (``eigen``) and the complement
    that of the top ``deflated`` singular vectors: ``f_ij = 1/(s_i − λ_j)`` for the trailing
    eigenpairs, ``1/s_i`` for the top ``deflated`` ones, which the projection removes (exactly
    the deflated operator's inverse when span(Q) is their span). Keeping them, rather than
    dropping them, makes ``M_i`` positive definite everywhere, so that it stays so on the
    complement where span(Q) and the top eigenvectors differ (null vectors among them, or
    the rounding of a float32 ``G``). ``s_i − λ_j`` is floored at the resolution of the
    eigenvalues, ``10·eps·λ_max``: a preconditioner, not a solve, it needs to be positive, not
    exact, where ``λ_j`` is (numerically) at the shift.
    """
    values = eigen.values.to(dtype.to_real())
    W = eigen.vectors.to(dtype)
    size = values.shape[-1]
    top = torch.arange(size, device=values.device) >= size - deflated
    resolution = 10 * torch.finfo(eigen.values.dtype).eps * values[..., -1:].clamp_min(0)
    gaps = shifts.unsqueeze(-1) - values.unsqueeze(-2)  # (..., k, size)
    gaps = torch.where(top, shifts.unsqueeze(-1), gaps)
    f = 1 / torch.maximum(gaps, resolution.unsqueeze(-2)).clamp_min(torch.finfo(gaps.dtype).tiny)

    def precondition(R: torch.Tensor) -> torch.Tensor:
        return ((R @ W.conj()) * f.to(R.dtype)) @ W.mT  # rows: W diag(f_i) Wᴴ r_i

    return precondition
