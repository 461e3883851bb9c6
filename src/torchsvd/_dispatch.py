"""How `svds` solves: a cost model that chooses the dense path or the Krylov solver.

Both paths return triplets that meet the same residual test, ``‖A v_i − σ_i u_i‖ <= tol·σ_1``
and ``‖Aᴴ u_i − σ_i v_i‖ <= tol·σ_1`` (one by construction, one checked with a product), and
`svds`'s implicit backward needs only the triplets, so the choice changes the time, not the
result. The model counts multiply-adds for an ``l × s`` matrix (``l = max(m, n)``,
``s = min(m, n)``), block size ``b``, mean basis size ``d``:

- dense (`torchsvd._gram`): ``l s²`` for the Gram matrix and ``EIGH · s³`` for its eigensolve,
  at the GEMM rate; ``3 l s p`` for the refinement and the check (``p = k + 10`` vectors), at
  the rate of products with a block of vectors;
- Krylov (`torchsvd._lanczos`): ``STEPS + k`` block steps, each two products with ``b``
  vectors (``2 b l s``) and the float64 Gram–Schmidt of both new blocks against the bases
  (``8 b d (l + s)``: two passes over each basis, at half the float32 rate), plus a fixed
  ``STEP_SECONDS`` per step (the small SVD of the projected matrix, checks, Python); a real,
  unbatched matrix is solved with one basis of the short side (`torchsvd._gram_lanczos`),
  about half that Gram–Schmidt, which the model does not count;
- with a backward (grad mode on and a tensor the gradients reach requiring grad): CG steps of
  two products with the ``k`` columns each, ``DENSE_CG_STEPS`` preconditioned ones after the
  dense forward, ``CG_STEPS`` plain ones after Krylov (`torchsvd._topk`), and the cotangent of
  ``A``, common to both.

Multiply-adds become seconds at ``GEMM_RATE`` and ``PRODUCT_RATE`` (float32; float64 at half
of them, a complex multiply-add as four real ones); a product with few vectors takes at least
the time to stream ``A`` at ``BANDWIDTH``. The constants were fitted to one thread of
a 2-core x86-64 machine (``benchmarks/bench_svds.py --table methods``, docs/performance.md)
with MKL's products; float32 CPU products by oneDNN (`torchsvd._operators._onednn_products`)
came later and are about twice as fast, so there the model now overprices Krylov (it picks
dense where Krylov might have been faster; both meet ``tol``);
the number of Krylov steps, forward and backward, depends on the spectrum, which is not known
beforehand: ``STEPS + k`` and ``CG_STEPS`` lie between what a decaying spectrum needs (about 7
block steps at k = 10) and a flat one (about 40, and a hundred CG steps), so on the boundary
the model's pick can be the slower path for a given spectrum (by up to 2.7× in that table).
Only a dense (strided) tensor, or an operator that forms its dense matrix in one pass
(``_as_dense``: the centred operator of `torchsvd.pca` on a dense tensor), can take the dense
path: a sparse matrix or a `LinearOperator` is solved by Krylov.

The probe. Where the model picks dense for one real matrix on the CPU (the one-basis solver's
case, `torchsvd._gram_lanczos.suited`), the Krylov solver gets a first try of `probe_steps`
block steps, whose estimate is ``PROBE`` of the dense forward's (for the two-basis solver too,
where the one-basis solver gives the problem back); the dense path runs only if the probe has
not converged by then, or may have cut a tie. A decaying spectrum converges within it (block
step 4 at k = 1, 6 at k = 10 on σ_i = 1/i, where the model expects ``STEPS + k``), a flat one
does not (23–32 steps). On two threads (``--table methods``, docs/performance.md) the decaying
rows the model prices dense then took 0.23–0.57× the dense path's time, within 4 % of the
faster path, and the Gaussian rows probed in vain 1.24–1.35× the faster path's; the worst
pick over the table fell from 4.3× the faster path's time to 1.74× (a decaying row whose probe
would be too short to try). The budget depends on the shape, ``k`` and the dtype only, so the
result is deterministic, and it meets ``tol`` either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchsvd._errors import ConvergenceError
from torchsvd._gram import OVERSAMPLE, GramEigen, gram_topk
from torchsvd._gram_lanczos import gram_lanczos, suited
from torchsvd._lanczos import KrylovResult, block_lanczos, default_block_size, default_max_dim
from torchsvd._operators import LinearOperator, _DenseOperator

__all__ = [
    "METHODS",
    "Costs",
    "choose_method",
    "densifiable",
    "estimate_costs",
    "probe_steps",
    "solve",
]

METHODS = ("auto", "krylov", "dense")

GEMM_RATE = 3.5e10  # float32 multiply-adds per second of a GEMM (the Gram matrix, refinement)
PRODUCT_RATE = 2.0e10  # float32 multiply-adds per second of a product with a block of vectors
BANDWIDTH = 2.0e10  # bytes of A per second that a product with a vector or two streams at most
EIGH = 5.0  # torch.linalg.eigh of an s×s matrix: about EIGH·s³ GEMM multiply-adds' time
STEP_SECONDS = 2.5e-3  # fixed cost of one Krylov block step
STEPS = 20  # expected Krylov block steps: STEPS + k
CG_STEPS = 50  # expected steps of the backward's plain CG (Krylov path)
DENSE_CG_STEPS = 2  # steps of the backward's preconditioned CG (dense path)
PROBE = 0.5  # a probe's Krylov steps may cost this fraction of the dense forward's estimate
# A smaller probe only adds its cost: on σ_i = 1/i the one-basis solver's estimates converged
# at block step 4 (k = 1) and 6 (k = 10), on flat spectra after 23–32.
MIN_PROBE_STEPS = 4


@dataclass(frozen=True)
class Costs:
    """Estimated seconds of the two paths for one matrix."""

    dense: float
    krylov: float


def estimate_costs(
    m: int,
    n: int,
    k: int,
    block: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    backward: bool = False,
) -> Costs:
    """The cost model of the module docstring for an ``m × n`` matrix and ``k`` triplets.

    ``dtype``: that of the matrix (float64 runs at half the float32 rates; a complex
    multiply-add is four real ones). ``backward``: add the backward's linear solves.
    """
    long, short = max(m, n), min(m, n)
    b = block or default_block_size(k)
    mean_basis = default_max_dim(k, b) / 2
    p = min(short, k + OVERSAMPLE)
    # Multiply-adds in the matrix's precision; slowdown: real float32 multiply-adds per one.
    slowdown = (1 if dtype.to_real().itemsize <= 4 else 2) * (4 if dtype.is_complex else 1)
    gemm = GEMM_RATE / slowdown

    def product(width: int) -> float:
        """Seconds of one product of A with ``width`` vectors: compute- or memory-bound."""
        return max(
            width * long * short * slowdown / PRODUCT_RATE,
            long * short * dtype.itemsize / BANDWIDTH,
        )

    # The solvers' bases are float64 (complex128) whatever the matrix: Gram–Schmidt, two
    # passes over each basis for both new blocks, at the float64 product rate.
    basis_rate = PRODUCT_RATE / (2 * (4 if dtype.is_complex else 1))
    dense = (long * short * short + EIGH * short**3) / gemm + 3 * product(p)
    steps = STEPS + k
    per_step = 2 * product(b) + 8 * b * mean_basis * (long + short) / basis_rate
    krylov = steps * (per_step + STEP_SECONDS)
    if backward:
        # Each CG step: one product with A and one with Aᴴ on the k columns, and the
        # projection off the k singular vectors; the dense path's preconditioner adds two
        # s×s×k products. The cotangent of A (an l×s outer product) is common to both.
        cg_step = 2 * product(k) + 4 * k * k * (long + short) / basis_rate
        common = 2 * k * long * short / gemm
        dense += DENSE_CG_STEPS * (cg_step + 4 * k * short * short / gemm) + common
        krylov += CG_STEPS * cg_step + common
    return Costs(dense=dense, krylov=krylov)


def probe_steps(
    m: int, n: int, k: int, block: int | None = None, *, dtype: torch.dtype = torch.float32
) -> int:
    """Krylov block steps whose estimated forward cost is ``PROBE`` of the dense forward's.

    Forward costs only: a probe that converges leaves the backward to Krylov's CG, which a
    spectrum that let the forward converge that fast lets converge fast too.
    """
    costs = estimate_costs(m, n, k, block, dtype=dtype)
    return int(PROBE * costs.dense / (costs.krylov / (STEPS + k)))


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
    ``"krylov"``; ``"probe"`` instead of ``"dense"`` where the probe (module docstring) has
    at least ``MIN_PROBE_STEPS``.

    The backward is priced in where one will follow: grad mode is on and a tensor the
    operator's gradients reach requires grad.
    """
    if not densifiable(op):
        return "krylov"
    backward = torch.is_grad_enabled() and any(p.requires_grad for p in op.params)
    m, n = op.shape[-2], op.shape[-1]
    costs = estimate_costs(m, n, k, op.block_size, dtype=op.dtype, backward=backward)
    if costs.dense > costs.krylov:
        return "krylov"
    # Measured on CPUs only (meta: shapes only, nothing runs).
    probe = suited(op) and op.device.type in ("cpu", "meta")
    if probe and probe_steps(m, n, k, op.block_size, dtype=op.dtype) >= MIN_PROBE_STEPS:
        return "probe"
    return "dense"


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

    ``method``: ``"dense"``, ``"krylov"`` or ``"probe"`` (`probe_steps` Krylov steps for a
    `suited` ``work``, then dense); `svds` resolves ``"auto"`` (`choose_method`) before its
    autograd function runs, where grad mode still tells whether a backward will follow.
    The dense path falls back to Krylov, warm-started from its triplets, when they miss ``tol``;
    it returns the eigendecomposition of the scaled Gram matrix too (the backward's
    preconditioner), also after a fallback; the Krylov path returns None. The Krylov path is
    `gram_lanczos` for `suited` operators (real, unbatched matrices), else (or where it gives the
    problem back) `block_lanczos`, and is solved again with a wider block where a tie may have
    been cut short (`cut_tie`).
    """
    block = work.block_size or default_block_size(k)
    if method == "probe" and suited(work):
        m, n = op.shape
        steps = min(maxiter, probe_steps(m, n, k, op.block_size, dtype=op.dtype))
        try:
            probed = _krylov(work, k, tol=tol, maxiter=steps, v0=v0)
        except ConvergenceError:
            probed = None
        # A tie the block may have cut short is left to the dense path, which sees every copy.
        if probed is not None and cut_tie(probed.S, block, tol) is None:
            return probed, None
    if method in ("dense", "probe") and densifiable(op):
        A = _matrix(op)
        if scale is not None:
            A = A * scale.to(device=A.device, dtype=A.dtype.to_real())[..., None, None]
        gen = torch.Generator(device=work.device)
        gen.manual_seed(0)
        res, ok, eigen = gram_topk(A, work, k, tol, gen)
        if ok:
            return res, eigen
        return block_lanczos(work, k, tol=tol, maxiter=maxiter, v0=res.Vh), eigen
    res = _krylov(work, k, tol=tol, maxiter=maxiter, v0=v0)
    while (wider := cut_tie(res.S, block, tol)) is not None:
        # Warm-started from the triplets up to the tie, with room for one random vector more.
        block = wider
        res = block_lanczos(
            work, k, tol=tol, maxiter=maxiter, v0=res.Vh[..., : block - 1, :], block=block
        )
    return res, None


def _krylov(
    work: LinearOperator, k: int, *, tol: float, maxiter: int, v0: torch.Tensor | None
) -> KrylovResult:
    """`gram_lanczos` for a `suited` ``work``, else (or where it gives the problem back, warm-
    started from what it reached) `block_lanczos`, each within ``maxiter`` block steps."""
    found = gram_lanczos(work, k, tol=tol, maxiter=maxiter, v0=v0) if suited(work) else None
    if isinstance(found, KrylovResult):
        return found
    return block_lanczos(work, k, tol=tol, maxiter=maxiter, v0=v0 if found is None else found)


def cut_tie(S: torch.Tensor, block: int, tol: float) -> int | None:
    """A block size that can hold every copy of a tie ``S`` may have cut short, or None.

    A block Krylov method with ``b`` vectors sees at most ``b`` copies of an exactly repeated
    singular value (in exact arithmetic; rounding brings in the others too slowly to matter):
    with blocks of 2, a top singular value of multiplicity 3 came out twice and the third copy
    was silently replaced by the next value, with residuals and orthogonality perfect. So a
    group of at least ``block`` tied values (within ``100·tol·σ_1``) above ``σ_k`` — not
    reaching ``σ_k``, where missing copies change neither ``S`` nor the validity of the
    vectors — asks for a solve with a block of the group's end + 2: the triplets up to the
    group and one random vector, which has a component along any copy still missing.
    """
    k = S.shape[-1]
    wider = None
    for row in S.detach().reshape(-1, k).tolist():
        near = 100 * tol * row[0]
        start = 0
        for i in range(1, k):
            if row[i - 1] - row[i] > near:  # a group ends at i - 1, strictly above σ_k
                if i - start >= block:
                    wider = max(wider or 0, i + 1)
                start = i
    return wider
