"""The dense path of `svds`: Gram matrix of the short side, symmetric eigensolve, one refinement.

For a dense ``A`` (m×n, m ≥ n; the wide case runs on ``Aᴴ``) with a small or short side:

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
refined basis, a lower estimate as in the Krylov solver. Where the forward took this path, the
backward's projected linear systems are solved the same way (`dense_shifted_solve`: one
eigendecomposition of the short side's Gram matrix instead of CG, whose step count grows as
the gap σ_k − σ_{k+1} shrinks).

References
----------
.. [1] N. Halko, P.-G. Martinsson, J. Tropp, "Finding structure with randomness: probabilistic
       algorithms for constructing approximate matrix decompositions", SIAM Review 53(2), 2011
       (power step and Rayleigh–Ritz on a given basis).
.. [2] G. Golub, C. Van Loan, "Matrix Computations", 4th ed., 2013, §8.6 (the SVD from the
       symmetric eigenproblem of AᴴA and its loss of accuracy for small singular values).
"""

from __future__ import annotations

import torch

from torchsvd._cg import CGResult, _project
from torchsvd._lanczos import KrylovResult, _orthonormalize
from torchsvd._operators import LinearOperator

__all__ = ["OVERSAMPLE", "dense_shifted_solve", "gram_topk"]

OVERSAMPLE = 10  # eigenvectors kept beyond k: the power step converges with σ_{p+1}/σ_k


def gram_topk(
    A: torch.Tensor, op: LinearOperator, k: int, tol: float, gen: torch.Generator
) -> tuple[KrylovResult, bool]:
    """Top-k triplets of the dense ``A`` (module docstring), and whether all meet ``tol``.

    ``A`` ``(..., m, n)`` is the matrix the products of ``op`` multiply with (detached, scaled
    as ``op``); ``op`` is the solver's view of it (float64 bases for a float32 ``A``), through
    which the refinement and the check run. ``residuals`` are ``‖A v_i − σ_i u_i‖ / σ_1``.
    """
    m, n = A.shape[-2], A.shape[-1]
    if m < n:
        r, ok = gram_topk(A.mH, op.H, k, tol, gen)
        return KrylovResult(r.Vh.mH, r.S, r.U.mH, r.next_sigma, r.residuals, 0), ok
    p = min(n, k + OVERSAMPLE)
    # eigh in the precision of A: its backward error, eps·‖G‖, is that of forming G anyway.
    _, vectors = torch.linalg.eigh(A.mH @ A)
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
    return KrylovResult(U_rows.mT, S[..., :k], Yh[..., :k, :], nxt, residuals, 0), ok


def dense_shifted_solve(
    op: LinearOperator,
    shifts: torch.Tensor,
    rhs: torch.Tensor,
    Q: torch.Tensor,
    Q_aux: torch.Tensor,
    *,
    active: torch.Tensor,
) -> CGResult:
    """The problem of `torchsvd._cg.projected_shifted_cg`, solved by one eigendecomposition.

    ``(s_i I − G) x_i = (I − QᴴQ) b_i`` on the complement of the rows of ``Q`` (the top-k left
    singular vectors, ``s_i = σ_i²``), with ``G = A Aᴴ`` formed from ``m`` products of each kind
    (``op`` is ``m × n`` with ``m`` the short side). ``G`` maps the complement to itself, so
    with the deflated ``G' = G − Qᴴ diag(s) Q`` (zero on span(Q), ``G`` on the complement),
    ``G' = W Λ Wᴴ`` and ``x_i = Σ_j w_j (w_jᴴ b_i) / (s_i − λ_j)``: the right-hand sides have no
    component along span(Q), where ``s_i − λ_j = s_i``. Deflating by ``Q`` rather than dropping
    the top eigenpairs keeps the complement that of ``Q`` when null vectors are among them (any
    basis of a null space). Same results as CG at its tolerance, in one ``m³`` solve instead
    of iterations whose number grows as the gap ``σ_k − σ_{k+1}`` shrinks. ``indefinite``
    flags columns with ``λ_j >= s_i`` (no gap), returned as zero.
    """
    m = op.shape[-2]
    eye = torch.eye(m, dtype=op.dtype, device=op.device).expand(*op.batch_shape, m, m)
    G = op.matmat_rows(op.rmatmat_rows(eye)).mT  # row i of the product is (G e_i)ᵀ
    G = G - (Q.mT * shifts.unsqueeze(-2).to(Q.dtype)) @ Q.conj()
    lam, W = torch.linalg.eigh(0.5 * (G + G.mH))
    r = _project(Q, rhs)
    r = torch.where(active.unsqueeze(-1), r, torch.zeros_like(r))
    denom = shifts.unsqueeze(-1) - lam.unsqueeze(-2)  # (..., k, m)
    indefinite = active & (denom <= 0).any(dim=-1)
    inverse = torch.where(denom > 0, 1 / torch.where(denom > 0, denom, 1.0), 0.0)
    x = ((r @ W.conj()) * inverse.to(r.dtype)) @ W.mT
    keep = (active & ~indefinite).unsqueeze(-1)
    x = _project(Q, torch.where(keep, x, torch.zeros_like(x)))
    aux = _project(Q_aux, op.rmatmat_rows(x))
    residuals = torch.zeros(shifts.shape, dtype=shifts.dtype, device=shifts.device)
    return CGResult(x, aux, active & ~indefinite, indefinite, residuals, 0)
