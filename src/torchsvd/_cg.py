"""Batched conjugate gradients for shifted Gram systems on the complement of a subspace.

Solves, for every column i of a block at once (each with its own shift),

    (s_i I − G) x_i = b_i,    x_i ⟂ span(Q),    G = C Cᴴ,

where ``Q`` has orthonormal rows and the operator is positive definite on the complement of
span(Q) (in `svds`: G = AAᴴ or AᴴA, s_i = σ_i², Q the top-k singular vectors). Each step costs
one product with ``Cᴴ`` and one with ``C`` on the whole block (two GEMMs, not 2k GEMVs). The
search directions are re-projected onto the complement at every step, so rounding never lets
them drift into span(Q), where the operator is indefinite. Converged columns are frozen. ``Cᴴ x``
is accumulated along the way (``Cᴴ x = Σ α_j Cᴴ p_j``), which saves one product at the end.
Inner products run in a `torchsvd._space.Space` (vectors split over processes: partial sums
reduced), so every decision (convergence, curvature) is the same on every process.

With a preconditioner (an approximate inverse of each column's operator, symmetric positive
definite on the complement) the iteration is preconditioned CG: the same products per step, and
for an inverse built from an eigendecomposition of ``G`` a step count that no longer grows as
the gap ``s_i − λ_{k+1}`` shrinks. Convergence is still judged on the unpreconditioned
residual, so the stopping rule means the same with or without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from torchsvd._space import Space

__all__ = ["CGResult", "projected_shifted_cg"]


@dataclass
class CGResult:
    """Solution rows ``x`` (..., k, N), ``aux`` = rows of ``Cᴴ x``, and per-column flags."""

    x: torch.Tensor
    aux: torch.Tensor
    converged: torch.Tensor
    indefinite: torch.Tensor
    residuals: torch.Tensor
    steps: int


def _project(Q: torch.Tensor, W: torch.Tensor, space: Space | None = None) -> torch.Tensor:
    if space is None:
        return W - (W @ Q.mH) @ Q
    return W - space.dot(W, Q) @ Q


def _dot(a: torch.Tensor, b: torch.Tensor, space: Space | None = None) -> torch.Tensor:
    """Row-wise ``Re ⟨a, b⟩``; real on the Hermitian operators CG sees."""
    partial = (a.conj() * b).real.sum(-1)
    return partial if space is None else space.reduce(partial)


def projected_shifted_cg(
    gram: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    shifts: torch.Tensor,
    rhs: torch.Tensor,
    Q: torch.Tensor,
    Q_aux: torch.Tensor,
    *,
    active: torch.Tensor,
    tol: float,
    maxiter: int,
    space: Space | None = None,
    aux_space: Space | None = None,
    precondition: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> CGResult:
    """Solve ``(s_i I − G) x_i = (I − QᴴQ) b_i`` on the complement of the rows of ``Q``.

    Parameters
    ----------
    gram : callable
        ``gram(P)`` for rows ``P`` (..., k, N) returns ``(G P, Cᴴ P)`` as rows.
    shifts : Tensor (..., k)
    rhs : Tensor (..., k, N)
    Q : Tensor (..., q, N), orthonormal rows (``Q Qᴴ = I``) spanning the excluded subspace.
    Q_aux : Tensor (..., q, N'), orthonormal rows; ``Cᴴ x`` is re-projected off them at the end
        (for x ⟂ Q it is exactly orthogonal to them when ``C Q_aux ⊂ span(Q)``).
    active : bool Tensor (..., k)
        Columns to solve; the others return zero.
    tol : float
        Stop a column when its residual is below ``tol`` times its right-hand side.
    maxiter : int
    space, aux_space : Space, optional
        Where the rows of ``rhs``, ``Q`` (length N) and of ``Q_aux`` (N') live; default: held
        whole.
    precondition : callable, optional
        ``precondition(R)`` for residual rows ``R`` (..., k, N) returns rows of ``M_i⁻¹ r_i``,
        an approximation of ``(s_i I − G)⁻¹`` that is symmetric positive definite on the
        complement (its output is projected onto it). Vectors held whole (no split ``space``).

    Returns
    -------
    CGResult
        ``indefinite`` flags columns that met non-positive curvature (no gap: the operator is
        not positive definite there); they are frozen at their last iterate.
    """
    if precondition is not None and space is not None and space.split:
        raise ValueError("projected_shifted_cg: a preconditioner needs vectors held whole")

    def preconditioned(r: torch.Tensor) -> torch.Tensor:
        return r if precondition is None else _project(Q, precondition(r))

    # Row-major rows (rhs may be a transposed view): every iterate inherits the layout, and
    # MKL ran the projections' GEMMs several times slower on column-major ones.
    r = _project(Q, rhs.contiguous(), space)
    r = torch.where(active.unsqueeze(-1), r, torch.zeros_like(r))
    x = torch.zeros_like(r)
    z = preconditioned(r)
    p = z
    aux = None
    rs = _dot(r, r, space)
    rz = _dot(r, z, space)  # ⟨r, M⁻¹ r⟩; equal to rs without a preconditioner
    rs0 = torch.where(rs > 0, rs, torch.ones_like(rs))
    target = (tol * tol) * rs
    live = active & (rs > 0)
    indefinite = torch.zeros_like(live)
    steps = 0
    while bool(live.any()) and steps < maxiter:
        Gp, aux_p = gram(p)
        if aux is None:
            aux = torch.zeros_like(aux_p)
        Mp = _project(Q, shifts.unsqueeze(-1) * p - Gp, space)
        curvature = _dot(p, Mp, space)
        bad = live & (curvature <= 0)
        indefinite = indefinite | bad
        live = live & ~bad
        alpha = torch.where(live, rz / torch.where(live, curvature, torch.ones_like(rs)), 0.0)
        x = x + alpha.unsqueeze(-1) * p
        aux = aux + alpha.unsqueeze(-1) * aux_p
        r = r - alpha.unsqueeze(-1) * Mp
        rs = _dot(r, r, space)
        live = live & (rs > target)
        z = preconditioned(r)
        rz_new = _dot(r, z, space)
        beta = torch.where(live, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)), 0.0)
        p = _project(Q, z + beta.unsqueeze(-1) * p, space)
        rz = rz_new
        steps += 1
    if aux is None:
        aux = torch.zeros((*rhs.shape[:-1], Q_aux.shape[-1]), dtype=rhs.dtype, device=rhs.device)
    converged = active & ~indefinite & ~live
    residuals = (rs / rs0).sqrt()  # relative to the right-hand side
    return CGResult(
        _project(Q, x, space),
        _project(Q_aux, aux, aux_space),
        converged,
        indefinite,
        residuals,
        steps,
    )
