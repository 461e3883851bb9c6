"""How `svds` solves: a cost model that chooses the dense path or the Krylov solver.

Both paths return triplets that meet the same residual test, ``‖A v_i − σ_i u_i‖ <= tol·σ_1``
and ``‖Aᴴ u_i − σ_i v_i‖ <= tol·σ_1`` (one by construction, one checked with a product), and
`svds`'s implicit backward needs only the triplets, so the choice changes the time, not the
result. The model counts multiply-adds for an ``l × s`` matrix (``l = max(m, n)``,
``s = min(m, n)``), block size ``b``, mean basis size ``d``:

- dense (`torchsvd._gram`): ``l s²`` for the Gram matrix, ``EIGH · s³`` for its eigensolve,
  ``3 l s p`` for the refinement and the check (``p = k + 10`` vectors);
- Krylov (`torchsvd._lanczos`): ``STEPS + k`` block steps, each two products with ``b``
  vectors (``2 b l s``) and the float64 Gram–Schmidt of both new blocks against the bases
  (``8 b d (l + s)``: two passes over each basis, at half the float32 rate), plus a fixed
  ``STEP_SECONDS`` per step (the small SVD of the projected matrix, checks, Python).

Multiply-adds become seconds at ``RATE``. The constants were measured on a 2-core x86-64
machine (docs/topk.md); the number of Krylov steps depends on the spectrum, which is not known
beforehand: ``STEPS + k`` lies between what a decaying spectrum needs (about 7 steps at
k = 10) and a flat one (about 40). Only a dense (strided) tensor, or an operator that forms its
dense matrix in one pass (``_as_dense``: the centred operator of `torchsvd.pca` on a dense
tensor), can take the dense path: a sparse matrix or a `LinearOperator` is solved by Krylov.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchsvd._gram import OVERSAMPLE, GramEigen, gram_topk
from torchsvd._lanczos import KrylovResult, block_lanczos, default_block_size, default_max_dim
from torchsvd._operators import LinearOperator, _DenseOperator

__all__ = ["METHODS", "Costs", "choose_method", "densifiable", "estimate_costs", "solve"]

METHODS = ("auto", "krylov", "dense")

RATE = 2.5e10  # multiply-adds per second, GEMM and skinny block products alike
STEP_SECONDS = 2.5e-3  # fixed cost of one Krylov block step
EIGH = 25.0  # torch.linalg.eigh of an s×s matrix: about EIGH·s³ multiply-adds' time
STEPS = 20  # expected Krylov block steps: STEPS + k


@dataclass(frozen=True)
class Costs:
    """Estimated seconds of the two paths for one matrix."""

    dense: float
    krylov: float


def estimate_costs(m: int, n: int, k: int, block: int | None = None) -> Costs:
    """The cost model of the module docstring for an ``m × n`` matrix and ``k`` triplets."""
    long, short = max(m, n), min(m, n)
    b = block or default_block_size(k)
    mean_basis = default_max_dim(k, b) / 2
    p = min(short, k + OVERSAMPLE)
    dense = long * short * short + EIGH * short**3 + 3 * long * short * p
    steps = STEPS + k
    per_step = 2 * b * long * short + 8 * b * mean_basis * (long + short)
    return Costs(dense=dense / RATE, krylov=steps * (per_step / RATE + STEP_SECONDS))


def densifiable(op: LinearOperator) -> bool:
    """Whether ``op`` is a dense tensor or forms its dense matrix cheaply (``_as_dense``)."""
    return isinstance(op, _DenseOperator) or getattr(op, "_as_dense", None) is not None


def _matrix(op: LinearOperator) -> torch.Tensor:
    if isinstance(op, _DenseOperator):
        return op.matrix.detach()
    matrix: torch.Tensor = op._as_dense()  # type: ignore[attr-defined]
    return matrix.detach()


def choose_method(op: LinearOperator, k: int) -> str:
    """``"dense"`` for a `densifiable` operator where the model says it is cheaper, else
    ``"krylov"``."""
    if not densifiable(op):
        return "krylov"
    costs = estimate_costs(op.shape[-2], op.shape[-1], k, op.block_size)
    return "dense" if costs.dense <= costs.krylov else "krylov"


def solve(
    op: LinearOperator,
    work: LinearOperator,
    scale: torch.Tensor | None,
    k: int,
    *,
    tol: float,
    maxiter: int,
    v0: torch.Tensor | None,
    method: str,
) -> tuple[KrylovResult, GramEigen | None]:
    """Top-k triplets of ``work`` (the solver's view of ``op``, scaled by ``scale``) by ``method``.

    The dense path falls back to Krylov, warm-started from its triplets, when they miss ``tol``;
    it returns the eigendecomposition of the scaled Gram matrix too (the backward's
    preconditioner), also after a fallback; the Krylov path returns None.
    """
    if method == "auto":
        method = choose_method(op, k)
    if method == "dense" and densifiable(op):
        A = _matrix(op)
        if scale is not None:
            A = A * scale.to(device=A.device, dtype=A.dtype.to_real())[..., None, None]
        gen = torch.Generator(device=work.device)
        gen.manual_seed(0)
        res, ok, eigen = gram_topk(A, work, k, tol, gen)
        if ok:
            return res, eigen
        return block_lanczos(work, k, tol=tol, maxiter=maxiter, v0=res.Vh), eigen
    return block_lanczos(work, k, tol=tol, maxiter=maxiter, v0=v0), None
