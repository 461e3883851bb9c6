r"""Subspaces and low-rank approximation from the SVD: ``null_space``, ``orth``, ``low_rank``.

With the full SVD A = U Σ Vᴴ of an m×n matrix and its numerical rank r (the number of singular
values above ``rtol·σ_max``),

    range(A) = span(u_1, …, u_r),        null(A) = span(v_{r+1}, …, v_n),

and the best approximation of rank at most k in the 2-norm and the Frobenius norm is the
truncated sum A_k = Σ_{i≤k} σ_i u_i v_iᴴ (Eckart–Young–Mirsky), with

    ‖A − A_k‖₂ = σ_{k+1},        ‖A − A_k‖_F² = Σ_{i>k} σ_i².

All three go through :func:`torchsvd.svd`, so their gradients stay finite at tied and zero
singular values. A basis of a subspace is only defined up to a rotation; a loss of ``null_space``
or ``orth`` has a gradient when it depends on the subspace only (e.g. through the projector
Q Qᴴ), and ``low_rank`` has one when σ_k > σ_{k+1} (otherwise the best approximation is not
unique).

Rank, pseudo-inverse, condition number and norms are in :mod:`torch.linalg`
(``matrix_rank``, ``pinv``, ``cond``, ``matrix_norm``); the same tolerance convention applies there.

References
----------
.. [1] C. Eckart, G. Young, "The approximation of one matrix by another of lower rank",
       Psychometrika 1, 1936.
.. [2] SciPy, ``scipy.linalg.null_space`` and ``scipy.linalg.orth``.
"""

from __future__ import annotations

import warnings

import torch

from torchsvd._errors import DegenerateGradientWarning
from torchsvd._svd import svd
from torchsvd._validate import (
    check_int,
    check_matrix,
    check_real,
    compute_dtype,
    is_transformed,
    rank_rtol,
)

__all__ = ["low_rank", "null_space", "orth"]


def _rtol_value(rtol: float | None, m: int, n: int, dtype: torch.dtype) -> float:
    """The rank tolerance relative to σ_max: ``max(m, n)·eps`` of the compute dtype unless given.

    A tolerance of 1 or more would call every singular value zero, and a NaN would compare
    False everywhere: both are rejected rather than returning a silently empty basis.
    """
    if rtol is None:
        return rank_rtol(m, n, dtype)
    return check_real(rtol, "rtol", low=0.0, high=1.0, high_open=True)


def _common_rank(S: torch.Tensor, rtol: float, name: str) -> int:
    """Number of singular values above ``rtol·σ_max``, which must agree across the batch."""
    if S.shape[-1] == 0:
        return 0
    tol = rtol * S[..., :1]
    ranks = (S > tol).sum(dim=-1).reshape(-1)
    if ranks.numel() == 0:  # an empty batch: any rank is consistent, use the full one
        return S.shape[-1]
    lo, hi = int(ranks.min()), int(ranks.max())
    if lo != hi:
        found = sorted({int(r) for r in ranks.tolist()})
        raise ValueError(
            f"{name} returns one basis of the same size for every matrix of a batch, but the "
            f"numerical ranks differ across the batch (found ranks {found} at rtol={rtol:.3g}); "
            "call it on each matrix separately"
        )
    return lo


def null_space(A: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
    r"""Orthonormal basis of the null space of ``A``, as :func:`scipy.linalg.null_space`.

    The columns are the right singular vectors v_{r+1}, …, v_n of the full SVD, where the
    numerical rank r counts the singular values above ``rtol·σ_max``.

    Parameters
    ----------
    A : Tensor of shape ``(..., m, n)``
        float32/float64/complex64/complex128 (half precision is computed in float32).
    rtol : float, optional
        Relative tolerance in [0, 1); default ``max(m, n)·eps(dtype)``, as numpy/scipy and
        :func:`torch.linalg.matrix_rank`.

    Returns
    -------
    Tensor of shape ``(..., n, n - r)``
        Columns orthonormal and orthogonal to every row of ``A``: ``A @ N ≈ 0``.

    Raises
    ------
    ValueError
        The numerical rank differs between the matrices of a batch (the bases would have
        different sizes), or ``rtol`` is not a finite float in [0, 1).

    Notes
    -----
    Differentiable through :func:`torchsvd.svd` for losses of the subspace (such as the
    projector ``N @ N.mH``); the basis inside the subspace is arbitrary. Not usable under
    ``torch.func.vmap``: the output shape depends on the data.

    Examples
    --------
    A 2×3 matrix of rank 2; its null space is spanned by (2, −2, −1)/3.

    >>> import torch, torchsvd
    >>> A = torch.tensor([[3.0, 2.0, 2.0], [2.0, 3.0, -2.0]], dtype=torch.float64)
    >>> N = torchsvd.null_space(A)
    >>> N.shape
    torch.Size([3, 1])
    >>> (N * N[0].sign() * 3).squeeze().round(decimals=12)
    tensor([ 2., -2., -1.], dtype=torch.float64)

    References
    ----------
    .. [1] SciPy, ``scipy.linalg.null_space``.
    """
    check_matrix(A)
    m, n = A.shape[-2], A.shape[-1]
    tol = _rtol_value(rtol, m, n, compute_dtype(A.dtype))
    _, S, Vh = svd(A, full_matrices=True)
    r = _common_rank(S, tol, "null_space")
    return Vh[..., r:, :].mH


def orth(A: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
    r"""Orthonormal basis of the range (column space) of ``A``, as :func:`scipy.linalg.orth`.

    The columns are the left singular vectors u_1, …, u_r for the singular values above
    ``rtol·σ_max``.

    Parameters
    ----------
    A : Tensor of shape ``(..., m, n)``
    rtol : float, optional
        Relative tolerance in [0, 1); default ``max(m, n)·eps(dtype)``.

    Returns
    -------
    Tensor of shape ``(..., m, r)``
        ``r`` the numerical rank, the same for every matrix of the batch.

    Raises
    ------
    ValueError
        The numerical rank differs across the batch, or ``rtol`` is invalid.

    Examples
    --------
    >>> import torch, torchsvd
    >>> A = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]], dtype=torch.float64)
    >>> Q = torchsvd.orth(A)
    >>> Q.shape
    torch.Size([3, 1])
    >>> torch.allclose(Q @ Q.mT @ A, A)
    True

    References
    ----------
    .. [1] SciPy, ``scipy.linalg.orth``.
    """
    check_matrix(A)
    m, n = A.shape[-2], A.shape[-1]
    tol = _rtol_value(rtol, m, n, compute_dtype(A.dtype))
    # The reduced U holds the whole range; the full SVD is not needed here.
    U, S, _ = svd(A)
    r = _common_rank(S, tol, "orth")
    return U[..., :r]


def low_rank(A: torch.Tensor, k: int) -> torch.Tensor:
    r"""Best approximation of rank at most ``k``: A_k = U_k diag(σ_1, …, σ_k) V_kᴴ.

    By the Eckart–Young–Mirsky theorem A_k minimises both ‖A − B‖₂ and ‖A − B‖_F over the
    matrices B of rank at most k, with ‖A − A_k‖₂ = σ_{k+1} and ‖A − A_k‖_F² = Σ_{i>k} σ_i².

    Parameters
    ----------
    A : Tensor of shape ``(..., m, n)``
    k : int
        Target rank, ``0 <= k <= min(m, n)``.

    Returns
    -------
    Tensor of shape ``(..., m, n)``, same dtype as ``A``

    Notes
    -----
    Computed as U_k U_kᴴ A, a function of the projector onto the top-k left singular subspace,
    and differentiable through :func:`torchsvd.svd`, exactly so at ties inside the kept or the
    discarded block. A_k is unique, and differentiable, where σ_k > σ_{k+1}; at
    σ_k = σ_{k+1} > 0 any choice inside the tie is a best approximation and the backward warns
    with :class:`~torchsvd.DegenerateGradientWarning`. So does the forward when k exceeds the
    numerical rank (σ_k = σ_{k+1} = 0: A_k = A, but not differentiably); at k = min(m, n) the
    result is A itself, with the identity as derivative. Storing A_k takes k(m + n + 1) numbers
    instead of mn.

    Examples
    --------
    >>> import torch, torchsvd
    >>> A = torch.tensor([[3.0, 2.0, 2.0], [2.0, 3.0, -2.0]], dtype=torch.float64)
    >>> A1 = torchsvd.low_rank(A, 1)
    >>> A1.round(decimals=12)  # 5 u_1 v_1ᵀ with u_1 = (1, 1)/√2, v_1 = (1, 1, 0)/√2
    tensor([[2.5000, 2.5000, 0.0000],
            [2.5000, 2.5000, 0.0000]], dtype=torch.float64)
    >>> round(float(torch.linalg.matrix_norm(A - A1, ord=2)), 12)  # σ_2
    3.0

    References
    ----------
    .. [1] C. Eckart, G. Young, Psychometrika 1, 211–218, 1936.
    .. [2] L. Mirsky, "Symmetric gauge functions and unitarily invariant norms", 1960.
    """
    check_matrix(A)
    kmax = min(A.shape[-2], A.shape[-1])
    check_int(k, "k", minimum=0, maximum=kmax, what=f"min(m, n) for A of shape {tuple(A.shape)}")
    if k == 0:
        # A * 0 rather than zeros_like: stays attached to the graph (zero gradient) like k > 0.
        return A * 0
    if k == kmax:
        # A itself, at every rank: its derivative is the identity (through U_k U_kᴴ A it would
        # depend on the free basis of the null space of a rank-deficient A).
        return A.clone()
    # A_k = U_k U_kᴴ A rather than U_k Σ_k V_kᴴ: the same matrix, but a function of the projector
    # U_k U_kᴴ only, which does not change under rotations inside a tie within the kept (or the
    # discarded) block. The SVD backward is exact for such a loss; for U_k Σ_k V_kᴴ at a tie
    # inside the block the derivative would need f′ (see ``torchsvd.svd``, Notes).
    U, S, _ = svd(A)
    if A.requires_grad and S.numel() and not is_transformed(S):
        # σ_k = σ_{k+1} = 0 (k above the numerical rank): A_k = A here, but near A the best
        # rank-k approximation drops a direction chosen by the perturbation, so A ↦ A_k has no
        # derivative; the SVD backward sees two zeros, not a tie, and cannot tell.
        zero = S[..., k - 1] <= rank_rtol(A.shape[-2], A.shape[-1], S.dtype) * S[..., 0]
        if bool(zero.any()):
            warnings.warn(
                f"low_rank: k = {k} exceeds the numerical rank of A, so σ_k = σ_(k+1) = 0 and the "
                "best rank-k approximation (A itself) has no derivative there; the gradient "
                "returned is that of the projection onto the non-zero part.",
                DegenerateGradientWarning,
                stacklevel=2,
            )
    Uk = U[..., :k]
    return Uk @ (Uk.mH @ A)
