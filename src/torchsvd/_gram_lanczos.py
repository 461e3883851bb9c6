"""Top-k singular triplets by thick-restarted block Lanczos on the Gram operator ``Aᴴ A``.

The forward of `svds` for real, unbatched sparse and dense matrices (and operators that
declare `LinearOperator.cheap_products`). Golub–
Kahan–Lanczos (`torchsvd._lanczos`) keeps two bases, of ``A V`` and of ``Aᴴ U``, and
orthogonalizes against both at every step; here only the basis ``V`` of the short side is kept,
the Krylov space ``K(Aᴴ A, V_0)`` is the same (so are the products, one ``matmat`` and one
``rmatmat`` per block step), and half the Gram–Schmidt work and the memory are saved. On a
sparse 100000² matrix with 10⁶ non-zeros that made `svds` about twice as fast; on dense
matrices, whose products are the cost, it took 0.60–1.05× the time (docs/performance.md).

Method (rows ``V`` (d×n), orthonormal; ``T = Vᴴ Aᴴ A V`` (d×d, real symmetric)):

1. ``W = Aᴴ (A V_new)``, projected off ``V``. In exact arithmetic ``W`` has components only
   along the two newest blocks (the three-term recurrence), or along the kept rows right after
   a thick restart: those go first (`_project_out`). The coefficients are the new columns
   and rows of ``T``.
2. The Ritz pairs ``T = Y Θ Yᵀ``: ``Aᴴ A (V y_i) − θ_i V y_i = Wᵀ⊥ y_i[new rows]``, whose norm,
   divided by ``σ_i = √θ_i``, estimates the residual ``‖Aᴴ u_i − σ_i v_i‖`` of the triplet
   ``v_i = V y_i``, ``u_i = A v_i / σ_i``. When the estimates say converged, a Rayleigh–Ritz
   step on both sides makes ``U`` and ``V`` orthonormal with ``A v_i = σ_i u_i`` (`_triplets`),
   and one more product checks the true residual.
3. Thick restart on the leading Ritz vectors, ``T ← Θ_p`` (Wu & Simon).

A float32 operator (seen in float64, `LinearOperator.promoted`) keeps a float32 basis whose
inner products are summed in float64 (`_Accumulating`): the products are float32 anyway, and
the basis's traffic halves (on the sparse 100000² matrix, 1.33 → 1.02 s). Its rounding sets a
floor near the default tol where the top singular values cluster; where the first converged
estimates then fail the true residual check, the solve goes on with a float64 basis.

Squaring costs accuracy where ``σ_i ≪ σ_1``: the products' rounding, about eps·σ_1² in ``W``,
is a residual of eps·σ_1²/σ_i in ``Aᴴ u_i − σ_i v_i``, σ_1/σ_i times more than in
Golub–Kahan–Lanczos, and a zero σ_i leaves ``u_i`` undefined. So `gram_lanczos` gives the
problem back (returns the Ritz vectors reached, a warm start for Golub–Kahan–Lanczos) where
``σ_1/σ_k`` is too large for ``tol``, where it stagnates, and for problems the dense path of
`block_lanczos` solves anyway.

References
----------
.. [1] K. Wu, H. Simon, "Thick-restart Lanczos method for large symmetric eigenvalue problems",
       SIAM J. Matrix Anal. Appl. 22(2), 2000.
.. [2] R. Lehoucq, D. Sorensen, C. Yang, "ARPACK Users' Guide", SIAM, 1998 (`scipy`'s `svds`
       runs ARPACK on the same operator ``Aᴴ A``, one vector at a time).
"""

from __future__ import annotations

import dataclasses

import torch

from torchsvd._errors import ConvergenceError
from torchsvd._lanczos import (
    _PROGRESS,
    _STAGNATION_RESTARTS,
    KrylovResult,
    _check_adjoint,
    _orthonormal_rows,
    _orthonormalize,
    _project_out,
    default_block_size,
)
from torchsvd._operators import LinearOperator, _Adjoint, _Promoted
from torchsvd._space import Space

__all__ = ["default_max_dim", "gram_lanczos", "suited"]

# Give the problem back when the products' rounding, magnified by σ_1/σ_k, could reach this
# fraction of tol: squaring then risks stagnating above tol.
_MARGIN = 0.1


def default_max_dim(k: int, block: int) -> int:
    """Largest basis before a thick restart: k + 20 blocks, at least 48.

    One basis costs half the Gram–Schmidt of Golub–Kahan–Lanczos's two, so it can be larger
    (fewer restarts): on a sparse 100000² matrix (k = 10, b = 2) 40–56 rows took 129–137
    block steps and about the same time, 32 rows 155 steps and a fifth more.
    """
    return max(k + 20 * block, 48)


def suited(op: LinearOperator) -> bool:
    """Whether `gram_lanczos` takes ``op``: cheap products, real, one matrix, held whole."""
    return (
        op.cheap_products
        and not op.dtype.is_complex
        and not op.batch_shape
        and not (op.spaces[0].split or op.spaces[1].split)
    )


def gram_lanczos(
    op: LinearOperator,
    k: int,
    *,
    tol: float,
    maxiter: int,
    v0: torch.Tensor | None = None,
    max_dim: int | None = None,
    seed: int = 0,
    float32_basis: bool = True,
) -> KrylovResult | torch.Tensor | None:
    """Top-k triplets of a `suited` ``op`` ``(m, n)`` to relative residual ``tol``.

    The block size is ``op.block_size``, else `torchsvd._lanczos.default_block_size`;
    ``max_dim``: the largest basis (default `default_max_dim`); ``v0`` (rows ``Vᴴ`` of a
    guess) and ``seed`` as in `torchsvd._lanczos.block_lanczos`. ``float32_basis``: whether a
    float32 operator seen in float64 (`LinearOperator.promoted`) keeps a float32 basis whose
    inner products are summed in float64 (`_Accumulating`); where that basis misses ``tol``
    (the first converged estimates fail the check with the true products), the solve goes on
    with a float64 basis, from the Ritz vectors reached.

    Returns
    -------
    KrylovResult
        Converged: ``‖Aᴴu_i − σ_i v_i‖ <= tol·σ_1`` (checked with the true products) and
        ``A v_i = σ_i u_i``.
    Tensor ``(k, n)`` or None
        The problem is given back (module docstring): rows ``Vᴴ`` of the Ritz vectors reached,
        a warm start for `block_lanczos`, or None when there are none yet.

    Raises
    ------
    ConvergenceError
        Not converged within ``maxiter`` block steps (``.result`` and ``.residuals`` as in
        `block_lanczos`).
    ValueError
        ``rmatmat`` is not the adjoint of ``matmat``.
    """
    m, n = op.shape
    if m < n:  # the basis lives on the short side: that of A v0 for a start v0 of the other
        start = None if v0 is None else op.matmat_rows(v0.to(op.dtype))
        back = gram_lanczos(
            op.H,
            k,
            tol=tol,
            maxiter=maxiter,
            v0=start,
            max_dim=max_dim,
            seed=seed,
            float32_basis=float32_basis,
        )
        if isinstance(back, KrylovResult):
            return KrylovResult(
                back.Vh.mH, back.S, back.U.mH, back.next_sigma, back.residuals, back.steps
            )
        return None if back is None else op.rmatmat_rows(back)
    b = op.block_size or default_block_size(k)
    dmax = max(default_max_dim(k, b) if max_dim is None else max_dim, k + 2 * max(b, k))
    if n <= dmax:
        return None  # `block_lanczos` decomposes A densely
    left, right = op.spaces
    low = _unpromoted(op) if float32_basis else None
    if low is not None:
        right = _Accumulating(n)
    else:
        low = op
    dtype, device = low.dtype, low.device
    tiny = torch.finfo(op.dtype).tiny
    eps = torch.finfo(op.product_dtype).eps
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    V = torch.empty((dmax, n), dtype=dtype, device=device)
    T = torch.zeros((dmax, dmax), dtype=op.dtype, device=device)
    start = right.randn((b,), gen, dtype, device)
    if v0 is not None:
        p = min(v0.shape[-2], b)
        start[:p] = v0[:p].to(dtype)
    V[:b] = _orthonormalize(start, V[:0], gen, space=right)
    d, fresh, local = 0, b, b  # T is filled for rows < d; rows d : d + fresh await products
    best, restarts, restarted = float("inf"), 0, False
    for step in range(1, maxiter + 1):
        new = V[d : d + fresh]
        AV = low.matmat_rows(new)
        W = low.rmatmat_rows(AV)
        if step == 1:
            # ⟨V, Aᴴ A V⟩ = ⟨A V, A V⟩
            _check_adjoint(right.dot(new, W), left.dot(AV, AV), eps)
        size = right.norm(W)
        Z, coef = _project_out(V[: d + fresh], W, local=local, space=right)
        coef = coef.to(T.dtype)
        diag = coef[:, d : d + fresh]
        coef[:, d : d + fresh] = (diag + diag.mT) / 2
        T[d : d + fresh, : d + fresh] = coef
        T[: d + fresh, d : d + fresh] = coef.mT
        d += fresh
        theta, Y = torch.linalg.eigh(T[:d, :d])
        theta, Y = theta.flip(-1).clamp_min(0), Y.flip(-1)
        sigma = theta.sqrt()
        if d >= k:
            s1 = float(sigma[0])
            # ‖Zᵀ y‖ from the Gram matrix of Z (fresh×fresh): a product of k rows with Z, as
            # skinny GEMMs go, cost more than all of this step's Gram–Schmidt.
            last = Y[d - fresh : d, :k]
            G = right.dot(Z, Z).to(T.dtype)
            estimate = ((last * (G @ last)).sum(dim=-2)).clamp_min(0).sqrt()
            rel = estimate / sigma[:k].clamp_min(tiny) / max(s1, tiny)
            converged = bool((rel <= tol).all())
            # Ritz values grow towards the singular values: σ_1/σ_k is judged once the basis
            # has filled, or when they have converged.
            if (restarted or converged) and float(sigma[k - 1]) * _MARGIN * tol < eps * s1:
                return _ritz_rows(Y, V[:d], k).to(op.dtype)
            if converged:
                U, S, Vk, res = _triplets(op, _ritz_rows(Y, V[:d], k).to(op.dtype), tiny)
                if bool((res <= tol).all()):
                    nxt = sigma[k] if d > k else torch.zeros_like(sigma[0])
                    return KrylovResult(U.mT, S, Vk.conj(), nxt, res, step)
                if isinstance(right, _Accumulating) and step < maxiter:
                    # The float32 basis's rounding (about 1e-7 of each row, 7e-7 of their
                    # orthogonality after many restarts) has set a floor near tol: on 100000
                    # clustered singular values the true residual stalled at 6.6e-6, above
                    # the default 6.4e-6, where the float64 basis went on to 6.2e-6.
                    wide = gram_lanczos(
                        op,
                        k,
                        tol=tol,
                        maxiter=maxiter - step,
                        v0=Vk,
                        max_dim=max_dim,
                        seed=seed,
                        float32_basis=False,
                    )
                    if isinstance(wide, KrylovResult):
                        return dataclasses.replace(wide, steps=wide.steps + step)
                    return wide
                rel = torch.maximum(rel, res)
            worst = float(rel.max())
            if worst < _PROGRESS * best:
                best, restarts = worst, 0
            if restarts >= _STAGNATION_RESTARTS:
                return _ritz_rows(Y, V[:d], k).to(op.dtype)
        if d + fresh > dmax:
            keep = max(k, min(d - fresh, (dmax + k) // 2))
            V[:keep] = _ritz_rows(Y, V[:d], keep)
            T.zero_()
            T[:keep, :keep] = torch.diag(theta[:keep])
            # The Ritz vectors in the restarted basis, for a budget that ends here.
            Y = torch.eye(keep, dtype=Y.dtype, device=device)
            d, local = keep, keep + fresh
            restarts, restarted = restarts + 1, True
        else:
            local = min(2 * fresh, d + fresh)
        V[d : d + fresh] = _orthonormalize(Z, V[:d], gen, size=size, space=right)
    U, S, Vk, res = _triplets(op, _ritz_rows(Y, V[:d], k).to(op.dtype), tiny)
    raise ConvergenceError(
        f"svds did not converge in {maxiter} block steps (block size {b}): the largest "
        f"relative residual is {float(res.max()):.3g}, tol is {tol:.3g}. The iterate is in "
        ".result (U, S, Vh); raise maxiter or tol, or warm-start with v0=.result[2].",
        residuals=res,
        result=(U.mT, S, Vk.conj()),
    )


def _ritz_rows(Y: torch.Tensor, V: torch.Tensor, j: int) -> torch.Tensor:
    """Rows of the ``j`` leading Ritz vectors ``(V Y_j)ᵀ``; ``Y_jᵀ`` made row-major first, since
    MKL ran this skinny GEMM several times slower with the transposed view."""
    return Y[:, :j].mT.to(V.dtype, memory_format=torch.contiguous_format) @ V


def _unpromoted(op: LinearOperator) -> LinearOperator | None:
    """The float32 operator under a `LinearOperator.promoted` one (or its adjoint), else None."""
    if isinstance(op, _Promoted):
        return op.base
    if isinstance(op, _Adjoint) and isinstance(op.base, _Promoted):
        return op.base.base.H
    return None


class _Accumulating(Space):
    """float32 vectors held whole, whose inner products are summed in float64 by chunks.

    The basis of a float32 operator is float32 (half the memory traffic of Gram–Schmidt and
    of the restarts, the bulk of a sparse solve), but a float32 GEMM over 10⁵ entries errs by
    about 2e-7 of ``‖x‖‖y‖`` (MKL sums in float32), 4e-5 on sums that grow with the length,
    and the basis would lose orthogonality by as much. The entries are cut into chunks of
    1000: one batched float32 product gives each chunk's partial inner products, summed in
    float64 (1e-9 of ``‖x‖‖y‖``): 1.5 ms against 1.2 ms for the float32 GEMM and 3 ms for the
    float64 one (2 × 10⁵ against 50 × 10⁵, one thread). Norms stay float32: they only decide
    thresholds (repeated Gram–Schmidt, vanishing rows).
    """

    chunk = 1000

    def dot(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        N, c = X.shape[-1], self.chunk
        N0 = N - N % c
        out = X[..., N0:].double() @ Y[..., N0:].double().mT
        if N0:
            Xc = X[..., :N0].reshape(X.shape[-2], N0 // c, c).transpose(0, 1)
            Yc = Y[..., :N0].reshape(Y.shape[-2], N0 // c, c).permute(1, 2, 0)
            out = out + torch.bmm(Xc, Yc).sum(0, dtype=torch.float64)
        return out.to(X.dtype)


def _triplets(
    op: LinearOperator, Vk: torch.Tensor, tiny: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``U``, ``σ`` and rows ``V`` from the Ritz rows ``Vk``, and the true residuals.

    ``u_i = A v_i / σ_i`` would leave ``U`` orthogonal only to about tol·σ_1/σ_k: instead
    ``A Vk`` is orthonormalized, ``A Vkᵀ = Qᵀ M``, and the SVD ``M = P Σ Rᵀ`` (k×k) gives
    ``U = Pᵀ Q`` and ``V = Rᵀ Vk``, orthonormal to working precision with ``A vᵢ = σ_i u_i``;
    the residuals ``‖Aᴴ u_i − σ_i v_i‖ / σ_1`` are measured with one more product. (The dense
    path's refinement, `torchsvd._gram._right_gram_topk`, also forms ``Qᴴ A`` with a product, to
    improve its start beyond its span: one product more than converged Ritz rows need.)
    """
    right = op.spaces[1]
    AV = op.matmat_rows(Vk)
    Q = _orthonormal_rows(AV)[0]
    P, S, Rh = torch.linalg.svd(Q @ AV.mT)
    U, V = P.mT @ Q, Rh @ Vk
    res = right.norm(op.rmatmat_rows(U) - S.unsqueeze(-1) * V)
    return U, S, V, res / S[0].clamp_min(tiny)
