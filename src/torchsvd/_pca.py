r"""Principal component analysis: the top-k SVD of the centred matrix, never formed.

With the column means μ = (1/m) 1ᵀA (one mean per feature, over the m rows of samples) the
centred matrix is A_c = A − 1μ = C A, C = I − 11ᵀ/m. Its products need only those of A:

    A_c X = A X − 1 (μ X),        A_cᴴ Y = Aᴴ Y − μᴴ (1ᵀ Y),

one extra row of work per block, so a sparse A stays sparse and a matrix-free A stays matrix-free.
Since C is symmetric, the cotangent of A for a cotangent Ā_c = L Rᴴ of the centred matrix is

    ⟨L Rᴴ, C dA⟩ = ⟨(C L) Rᴴ, dA⟩   ⇒   Ā = (L − 1 mean(L)) Rᴴ,

so the gradient reaches A (its stored values when sparse, its parameters when an operator)
through the operator's own gradient rule with the left factor centred.

References
----------
.. [1] I. T. Jolliffe, J. Cadima, "Principal component analysis: a review and recent
       developments", Phil. Trans. R. Soc. A 374, 2016.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchsvd import _distributed
from torchsvd._operators import (
    _HIGHER,
    LinearOperator,
    _DenseOperator,
    _rebased,
    _SparseOperator,
    aslinearoperator,
)
from torchsvd._topk import svds

__all__ = ["pca"]


class _CenteredOperator(LinearOperator):
    """``A − 1μ`` for an operator ``A`` and its column means ``μ`` (module docstring)."""

    def __init__(self, base: LinearOperator) -> None:
        with torch.no_grad():
            mean = _column_means(base)
        self.base = base
        self.mean = mean
        if isinstance(base, _DenseOperator):
            # svds's dense path (small or skinny data) needs the centred matrix: one pass.
            self._as_dense = lambda: base.matrix.detach() - mean
        super().__init__(
            base.shape,
            lambda X: base.matmat(X) - mean @ X,
            lambda Y: base.rmatmat(Y) - mean.mH @ Y.sum(dim=-2, keepdim=True),
            dtype=base.dtype,
            device=base.device,
            params=base.params,
            # The rank-one correction costs a pass over a block: a sparse base stays cheap.
            block_size=base.block_size,
            cheap_products=base.cheap_products,
        )

    def _resolved(self) -> LinearOperator:
        return _rebased(self, self.base._resolved())

    def param_grads(
        self, left: torch.Tensor, right: torch.Tensor, needs: Sequence[bool]
    ) -> tuple[torch.Tensor | None, ...]:
        return self.base.param_grads(left - left.mean(dim=-2, keepdim=True), right, needs)


# Rows of the data summed per chunk by one product with a block of chunk indicators, for
# operators whose sums torch cannot form itself; at most this many entries in the block.
_INDICATOR_ENTRIES = 2**22


def _column_means(base: LinearOperator) -> torch.Tensor:
    """``μ = 1ᵀA / m`` ``(..., 1, n)``, in the base's dtype, summed to about its rounding.

    A float32 product ``Aᵀ 1`` over many rows errs far more than that: MKL's GEMV over 60000
    image patches erred by 3e-4 of a mean (flat image regions round the same way at every
    step), and the centred operator's products then carried ``1 (δμ · v)``: a component along
    ``1`` that the residual check cannot see (``A_cᴴ 1 = 0``), 2.4e-4·σ_1 in ``u_1``, 37 times
    the default tol. A dense base is summed by torch's own reduction (cascade summation on
    CPU: 2e-7 there, in 3 ms against 68 ms for a float64 sum), a sparse one in float64 over
    its stored values; another operator's rows are summed per chunk (one product with a block
    of chunk indicators) and the chunks in float64.
    """
    m, n = base.shape[-2], base.shape[-1]
    wide = _HIGHER.get(base.dtype, base.dtype)
    if isinstance(base, _DenseOperator):
        total = base.matrix.detach().sum(dim=-2, keepdim=True)
    elif isinstance(base, _SparseOperator):
        A = base.matrix.detach()
        cols = A.col_indices() if A.layout == torch.sparse_csr else A.indices()[1]
        total = torch.zeros(n, dtype=wide, device=A.device)
        total = total.index_add_(0, cols, A.values().to(wide)).unsqueeze(0)
    elif base.spaces[0].split:  # rows spread over processes: the operator sums them
        ones = torch.ones((*base.batch_shape, m, 1), dtype=base.dtype, device=base.device)
        total = base.rmatmat(ones).mH.to(wide)
    else:
        chunks = max(1, min(64, m, _INDICATOR_ENTRIES // m))
        which = torch.arange(m, device=base.device) * chunks // m
        block = (which.unsqueeze(-1) == torch.arange(chunks, device=base.device)).to(base.dtype)
        block = block.expand(*base.batch_shape, m, chunks)
        total = base.rmatmat(block).mH.to(wide).sum(dim=-2, keepdim=True)
    return (total / m).to(base.dtype)


def pca(
    A: torch.Tensor | LinearOperator,
    k: int,
    *,
    center: bool = True,
    tol: float | None = None,
    maxiter: int | None = None,
    v0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Top-k principal components: the SVD ``(U, S, Vh)`` of ``A − mean(A, dim=-2)``.

    Rows of ``A`` are samples, columns are features. The centred matrix is never formed: its
    products are those of ``A`` minus a rank-one correction (module docstring of
    ``torchsvd._pca``), so a sparse or matrix-free ``A`` keeps its cost, and the result is
    differentiable through the implicit backward of `torchsvd.svds`.

    Parameters
    ----------
    A : Tensor ``(..., m, n)``, sparse COO/CSR Tensor ``(m, n)``, or `LinearOperator`
        The data, ``m`` samples of ``n`` features; dtypes as `torchsvd.svds`.
    k : int
        Number of components, ``1 <= k <= min(m, n)``.
    center : bool
        Subtract the column means (default). ``False`` is plain `torchsvd.svds` (uncentred PCA,
        as for data that is centred already, or truncated SVD / LSA).
    tol, maxiter, v0 :
        As in `torchsvd.svds`.

    Returns
    -------
    U : Tensor ``(..., m, k)``
        ``U * S`` are the principal component scores of the samples.
    S : Tensor ``(..., k)``, descending
        The explained variances are ``S**2 / (m - 1)``; their share of the total variance is
        ``S**2 / ‖A − 1μ‖_F²``.
    Vh : Tensor ``(..., k, n)``
        The principal axes (rows), sklearn's ``components_``; ``torch.pca_lowrank`` returns
        ``Vh.mH`` as ``V``.

    Raises
    ------
    TypeError, ValueError, ConvergenceError
        As `torchsvd.svds`; ``center`` not a bool.

    Notes
    -----
    Unlike ``torch.pca_lowrank`` (randomized, a fixed number of power iterations, so its
    accuracy depends on the spectrum), the result meets the residual tolerance ``tol``; unlike
    sklearn's PCA it is batched, runs on the GPU and is differentiable. Singular vectors are
    defined up to sign (phase): compare subspaces or projectors, not raw vectors. Comparison
    and timings: ``docs/pca.md``. Samples sharded over processes (a DTensor of rows):
    ``docs/distributed.md``.

    Examples
    --------
    >>> import torch, torchsvd
    >>> gen = torch.Generator().manual_seed(0)
    >>> X = torch.randn(500, 3, generator=gen, dtype=torch.float64) @ torch.diag(
    ...     torch.tensor([3.0, 1.0, 0.1], dtype=torch.float64)) + 10.0  # far from the origin
    >>> U, S, Vh = torchsvd.pca(X, 2)
    >>> Xc = X - X.mean(dim=0)
    >>> torch.allclose(S, torch.linalg.svdvals(Xc)[:2])
    True
    >>> (S**2 / (X.shape[0] - 1)).round()  # explained variances, about 3² and 1²
    tensor([9., 1.], dtype=torch.float64)
    """
    if not isinstance(center, bool):
        raise TypeError(f"center must be a bool, got {type(center).__name__}")
    if _distributed.is_dtensor(A):
        return _distributed.pca(A, k, center=center, tol=tol, maxiter=maxiter, v0=v0)
    if not center:
        return svds(A, k, tol=tol, maxiter=maxiter, v0=v0)
    base = aslinearoperator(A)
    U, S, Vh = svds(_CenteredOperator(base), k, tol=tol, maxiter=maxiter, v0=v0)
    if isinstance(A, torch.Tensor) and A.dtype != base.dtype:
        return U.to(A.dtype), S.to(A.dtype), Vh.to(A.dtype)
    return U, S, Vh
