"""Weighted orthogonal Procrustes: the best rotation or reflection from one point set to another."""

from __future__ import annotations

import torch

from torchsvd._spectral import polar
from torchsvd._validate import all_finite, check_matrix, is_transformed

__all__ = ["procrustes"]


def procrustes(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    special: bool = False,
) -> torch.Tensor:
    r"""The orthogonal ``R`` minimising ``Σᵢ wᵢ ‖aᵢ R − bᵢ‖²`` over the rows aᵢ, bᵢ of ``A``, ``B``.

    The convention of :func:`scipy.linalg.orthogonal_procrustes` (which minimises
    ``‖A R − B‖_F``): points are rows and ``R`` acts from the right, so ``A @ R ≈ B``. Expanding
    the square, only ``tr(Rᵀ M)`` with ``M = Aᵀ diag(w) B`` depends on ``R``, and its maximum over
    orthogonal matrices is the polar factor ``R = U Vᵀ`` of ``M = U Σ Vᵀ`` (Schönemann 1966); over
    rotations (``special=True``) it is ``U diag(1, …, 1, det(U Vᵀ)) Vᵀ`` (Kabsch 1976; Umeyama
    1991). The derivative goes through :func:`torchsvd.polar`, whose backward is exact at repeated
    singular values of ``M``.

    Parameters
    ----------
    A, B : Tensor of shape ``(..., N, n)``
        N ≥ 1 points in n dimensions (rows), float32/float64 (complex for ``special=False``,
        where ``Aᴴ`` replaces ``Aᵀ`` and ``R`` is unitary); batch dimensions broadcast.
        Centre the points first (subtract the weighted means) to fit a rigid motion
        ``b ≈ a R + t``.
    weights : Tensor of shape ``(..., N)``, optional
        Finite, non-negative weight of each pair of points; broadcasts against the batch.
        Default: all ones.
    special : bool
        If True, ``R`` is the best rotation (det R = +1; real square problems only). Without it a
        mirrored point set yields a reflection (det R = −1).

    Returns
    -------
    R : Tensor of shape ``(..., n, n)``

    Warns
    -----
    DegenerateGradientWarning
        From :func:`torchsvd.polar`, when ``M`` is rank-deficient, e.g. for collinear or (with
        ``special=False``) coplanar points in 3-D: ``R`` is then not unique and the partial
        isometry over the non-zero singular values of ``M`` is returned. With ``special=True``
        coplanar points determine the rotation (the normal follows from det R = +1).

    Notes
    -----
    :func:`scipy.linalg.orthogonal_procrustes` also returns ``scale``, the sum of the singular
    values of ``M``; it equals ``tr(Rᵀ M)``, here ``(R * M).sum((-2, -1))`` with
    ``M = (A * weights[..., None]).mT @ B``. The least-squares scale ``c`` of ``A R c ≈ B`` is
    ``scale / Σᵢ wᵢ ‖aᵢ‖²``.

    Examples
    --------
    Recover a rotation from noisy points:

    >>> import torch, torchsvd
    >>> g = torch.Generator().manual_seed(0)
    >>> A = torch.randn(100, 3, generator=g, dtype=torch.float64)
    >>> Q = torchsvd.testing.random_unitary(3, seed=1)
    >>> R = torchsvd.procrustes(A, A @ Q + 1e-3 * torch.randn(100, 3, generator=g, dtype=A.dtype))
    >>> bool((R - Q).abs().max() < 1e-3)
    True

    References
    ----------
    .. [1] P. H. Schönemann, "A generalized solution of the orthogonal Procrustes problem",
           Psychometrika 31, 1966.
    .. [2] W. Kabsch, "A solution for the best rotation to relate two sets of vectors",
           Acta Crystallographica A32, 1976.
    .. [3] S. Umeyama, "Least-squares estimation of transformation parameters between two point
           patterns", IEEE TPAMI 13(4), 1991.
    """
    check_matrix(A, "A")
    check_matrix(B, "B")
    if A.dtype != B.dtype:
        raise TypeError(
            f"procrustes: A and B must have the same dtype, got {A.dtype} and {B.dtype}"
        )
    if A.shape[-2:] != B.shape[-2:]:
        raise ValueError(
            "procrustes: A and B must both have shape (..., N, n) with the same N points in the "
            f"same n dimensions, got shapes {tuple(A.shape)} and {tuple(B.shape)}"
        )
    N, n = A.shape[-2], A.shape[-1]
    if N < 1 or n < 1:
        raise ValueError(
            f"procrustes: A and B need N >= 1 points of n >= 1 coordinates, got shape "
            f"(..., N={N}, n={n})"
        )
    try:
        torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    except RuntimeError as err:
        raise ValueError(
            f"procrustes: the batch shapes of A {tuple(A.shape[:-2])} and B "
            f"{tuple(B.shape[:-2])} do not broadcast"
        ) from err
    if not isinstance(special, bool):
        raise TypeError(f"procrustes: special must be a bool, got {type(special).__name__}")
    if weights is None:
        M = A.mH @ B
    else:
        M = (A * _check_weights(weights, A).unsqueeze(-1)).mH @ B
    if special:
        return polar(M, special=True)
    return polar(M)


def _check_weights(weights: object, A: torch.Tensor) -> torch.Tensor:
    """``weights`` as a real tensor of A's real dtype, shape ``(..., N)``, finite, ≥ 0."""
    N = A.shape[-2]
    if not isinstance(weights, torch.Tensor):
        raise TypeError(
            f"procrustes: weights must be a torch.Tensor of shape (..., N={N}), got "
            f"{type(weights).__name__}"
        )
    if not weights.dtype.is_floating_point:
        raise TypeError(f"procrustes: weights must have a real floating dtype, got {weights.dtype}")
    if weights.ndim < 1 or weights.shape[-1] != N:
        raise ValueError(
            f"procrustes: weights must have shape (..., N) with N = {N} (one per point), got "
            f"shape {tuple(weights.shape)}"
        )
    try:
        torch.broadcast_shapes(weights.shape[:-1], A.shape[:-2])
    except RuntimeError as err:
        raise ValueError(
            f"procrustes: the batch shape {tuple(weights.shape[:-1])} of weights does not "
            f"broadcast against the batch shape {tuple(A.shape[:-2])} of A and B"
        ) from err
    if weights.numel() and not is_transformed(weights):
        if not all_finite(weights):
            raise ValueError("procrustes: weights must be finite, got NaN or infinite entries")
        if bool((weights < 0).any()):
            low = float(weights.detach().min())
            raise ValueError(f"procrustes: weights must be >= 0, got a minimum of {low:g}")
    real = A.real.dtype if A.is_complex() else A.dtype
    return weights.to(real)
