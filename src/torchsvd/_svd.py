"""``svd`` and ``svdvals`` whose backward and forward-mode rules stay finite at ties and zeros.

Derivation (real or complex A = U Σ Vᴴ, reduced, k = min(m, n)). Write dP = Uᴴ dA V and
Ω_U = Uᴴ dU, Ω_V = Vᴴ dV (both skew-Hermitian). Differentiating A V = U Σ and Aᴴ U = V Σ gives,
entry (i, j) of the k×k block,

    dP_ij = (Ω_U)_ij σ_j − σ_i (Ω_V)_ij + δ_ij dσ_i.

Taking this equation and the conjugate of its (j, i) mirror, then adding and subtracting them,
splits the classic 1/(σ_j² − σ_i²) into two partial fractions:

    (Ω_U + Ω_V)_ij = (dP + dPᴴ)_ij / (σ_j − σ_i)      singular at ties σ_i = σ_j
    (Ω_U − Ω_V)_ij = (dP − dPᴴ)_ij / (σ_j + σ_i)      singular only at σ_i = σ_j = 0

The diagonal of the second line is the complex phase term i·Im(dP_ii)/σ_i (the phase of the pair
(u_i, v_i) is free; we split it evenly between U and V). The components of dU and dV outside the
span of U and V are (I − UUᴴ) dA V Σ⁻¹ and (I − VVᴴ) dAᴴ U Σ⁻¹.

The reverse rule is the adjoint of this map. With J = UᴴŪ − ŪᴴU and K = VᴴV̄ − V̄ᴴV,

    Ā = U [ ½ (J + K) ∘ D  +  ½ (J − K) ∘ E  +  diag(S̄) ] Vᴴ
        + (I − UUᴴ) Ū Σ⁻¹ Vᴴ  +  U Σ⁻¹ V̄ᴴ (I − VVᴴ),     D_ij = 1/(σ_j − σ_i), E_ij = 1/(σ_j + σ_i),

which is PyTorch's ``svd_backward`` (Townsend 2016; Ionescu et al. 2015) with its
1/(σ_j² − σ_i²) factored — never formed, so nothing overflows for large σ.

Where the decomposition is not unique, the reciprocals are replaced by zero:

- D at ties (|σ_j − σ_i| ≤ rtol·σ_max): a loss that does not depend on the basis chosen inside a
  group of tied singular values has (J + K)_ij = 0 there, so dropping the term is exact for it
  (e.g. U Vᴴ at an orthogonal matrix, projectors onto a block containing a tie);
- E when σ_i + σ_j ≤ rtol·σ_max (two zero singular values: their vectors rotate independently);
- Σ⁻¹ for zero singular values (the corresponding columns are free in the complement).

A loss that does depend on these free choices has no derivative; the backward warns
(`DegenerateGradientWarning`) and returns the derivative of its gauge-invariant part. The masked
reciprocal of a near tie can optionally be Lorentzian-broadened, d/(d² + (ε σ_max)²).

References
----------
.. [1] J. Townsend, "Differentiating the singular value decomposition", 2016.
.. [2] C. Ionescu, O. Vantzos, C. Sminchisescu, "Matrix backpropagation for deep networks with
       structured layers", ICCV 2015.
.. [3] PyTorch, ``torch/csrc/autograd/FunctionsManual.cpp``: ``svd_backward``, ``linalg_svd_jvp``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from torchsvd import _small
from torchsvd._errors import DegenerateGradientWarning
from torchsvd._validate import check_matrix, compute_dtype, is_transformed

__all__ = ["default_rtol", "gauge_reciprocals", "svd", "svd_backward", "svdvals"]


def default_rtol(dtype: torch.dtype) -> float:
    """Default tie / zero tolerance relative to σ_max: √eps of the (real) dtype.

    Rounding leaves a numerator that should vanish at about eps·‖cotangent‖; divided by a gap of
    at least √eps·σ_max it contributes at most √eps relative error, while a gap below the threshold
    would amplify it past that.
    """
    real = dtype.to_real() if dtype.is_complex else dtype
    return float(torch.finfo(real).eps) ** 0.5


def _masked_reciprocal(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # 1/x where keep, else 0 — as 1/inf, so that neither this value nor its derivative
    # (−1/x², taken through the kept branch only) is ever inf or NaN, in double backward too.
    return torch.where(keep, x, torch.inf).reciprocal()


def gauge_reciprocals(
    S: torch.Tensor, rtol: float, broadening: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked reciprocals used by both the forward and reverse rule.

    Returns ``D`` with D_ij = 1/(σ_j − σ_i), ``E`` with E_ij = 1/(σ_j + σ_i), ``inv_s`` = 1/σ (each
    zero where the decomposition is not unique, see the module docstring) and the boolean mask
    of separated pairs (|σ_j − σ_i| > rtol·σ_max; False on the diagonal).
    """
    tol = rtol * S[..., :1]  # S is descending: σ_max first
    diff = S.unsqueeze(-2) - S.unsqueeze(-1)  # (i, j) -> σ_j − σ_i
    total = S.unsqueeze(-2) + S.unsqueeze(-1)
    separated = diff.abs() > tol.unsqueeze(-1)
    if broadening > 0:
        # Lorentzian d/(d² + ε²) = 1/(d + ε²/d), scale-aware: ε = broadening·σ_max.
        d = torch.where(separated, diff, torch.inf)
        D = (d + (broadening * S[..., :1]).unsqueeze(-1) ** 2 / d).reciprocal()
    else:
        D = _masked_reciprocal(diff, separated)
    E = _masked_reciprocal(total, total > tol.unsqueeze(-1))
    inv_s = _masked_reciprocal(S, S > tol)
    return D, E, inv_s, separated


def _warn_if_gauge_dependent(
    J: torch.Tensor,
    K: torch.Tensor,
    S: torch.Tensor,
    separated: torch.Tensor,
    inv_s: torch.Tensor,
    rtol: float,
    cotangents: tuple[torch.Tensor | None, ...],
) -> None:
    """Warn when the loss depends on the basis inside a tie or on the complex phase.

    For a gauge-invariant loss these numerators vanish up to rounding and the gap below the tie
    threshold; "clearly non-zero" means above 10·rtol times the size of the cotangents.
    """
    if is_transformed(J) or J.numel() == 0:
        return
    with torch.no_grad():
        # S is sorted, so a tie anywhere implies a small gap between neighbours: this cheap
        # test on k−1 gaps spares the k×k checks in the common case (real, no tie).
        gaps = S[..., :-1] - S[..., 1:]
        has_tie = bool((gaps <= rtol * S[..., :1]).any())
        if not has_tie and not J.is_complex():
            return
        scale = sum(g.abs().amax() for g in cotangents if g is not None and g.numel())
        if not isinstance(scale, torch.Tensor) or not bool(scale > 0):
            return
        limit = 10 * rtol * scale
        eye = torch.eye(J.shape[-1], dtype=torch.bool, device=J.device)
        tie = ~separated & ~eye
        if has_tie and bool(((J + K).abs() * tie).amax() > limit):
            warnings.warn(
                "svd backward: the loss depends on the choice of singular vectors inside a group "
                "of tied singular values, so it has no gradient there; returning the gradient of "
                "its basis-independent part.",
                DegenerateGradientWarning,
                stacklevel=3,
            )
        if J.is_complex():
            phase = (J + K).diagonal(dim1=-2, dim2=-1).imag.abs() * (inv_s > 0)
            if bool(phase.amax() > limit):
                warnings.warn(
                    "svd backward: the loss depends on the phase of the complex singular vectors, "
                    "which the SVD leaves free (u_i and v_i may both be multiplied by e^{iφ}); "
                    "returning the gradient of its phase-independent part.",
                    DegenerateGradientWarning,
                    stacklevel=3,
                )


def svd_backward(
    U: torch.Tensor,
    S: torch.Tensor,
    Vh: torch.Tensor,
    gU: torch.Tensor | None,
    gS: torch.Tensor | None,
    gVh: torch.Tensor | None,
    rtol: float,
    broadening: float = 0.0,
) -> torch.Tensor:
    """Reverse rule of the reduced SVD (see the module docstring), masked at ties and zeros.

    Shapes: ``U`` (..., m, k), ``S`` (..., k), ``Vh`` (..., k, n); cotangents alike or None.
    Differentiable itself (double backward) when the inputs require grad.
    """
    if gU is None and gVh is None:
        if gS is None:
            return torch.zeros(
                (*S.shape[:-1], U.shape[-2], Vh.shape[-1]), dtype=U.dtype, device=U.device
            )
        return (U * gS.unsqueeze(-2).to(U.dtype)) @ Vh
    m, k, n = U.shape[-2], S.shape[-1], Vh.shape[-1]
    D, E, inv_s, separated = gauge_reciprocals(S, rtol, broadening)
    V = Vh.mH
    UhgU = U.mH @ gU if gU is not None else None
    VhgV = V.mH @ gVh.mH if gVh is not None else None
    zero = torch.zeros((*S.shape[:-1], k, k), dtype=U.dtype, device=U.device)
    J = UhgU - UhgU.mH if UhgU is not None else zero
    K = VhgV - VhgV.mH if VhgV is not None else zero
    _warn_if_gauge_dependent(J, K, S, separated, inv_s, rtol, (gU, gVh))
    inner = 0.5 * ((J + K) * D + (J - K) * E)
    if gS is not None:
        inner = inner + torch.diag_embed(gS.to(U.dtype))
    gA = U @ inner @ Vh
    if m > k and gU is not None and UhgU is not None:
        gA = gA + ((gU - U @ UhgU) * inv_s.unsqueeze(-2)) @ Vh
    if n > k and gVh is not None and VhgV is not None:
        gA = gA + U @ ((gVh.mH - V @ VhgV) * inv_s.unsqueeze(-2)).mH
    return gA


def _svd_jvp(
    U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, dA: torch.Tensor, rtol: float, b: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward rule of the reduced SVD: the map whose adjoint is `svd_backward`."""
    m, k, n = U.shape[-2], S.shape[-1], Vh.shape[-1]
    D, E, inv_s, _ = gauge_reciprocals(S, rtol, b)
    V = Vh.mH
    dAV = dA @ V
    dP = U.mH @ dAV
    dS = dP.diagonal(dim1=-2, dim2=-1).real
    herm, skew = dP + dP.mH, dP - dP.mH
    omega_u = 0.5 * (herm * D + skew * E)
    omega_v = 0.5 * (herm * D - skew * E)
    dU = U @ omega_u
    dV = V @ omega_v
    if m > k:
        dU = dU + (dAV - U @ dP) * inv_s.unsqueeze(-2)
    if n > k:
        dAhU = dA.mH @ U
        dV = dV + (dAhU - V @ dP.mH) * inv_s.unsqueeze(-2)
    return dU, dS, dV.mH


def _fold_extra_columns(Q: torch.Tensor, gQ: torch.Tensor, k: int) -> torch.Tensor:
    """Cotangent of the first k columns equivalent to one on all columns of a full basis Q.

    The extra columns Q⊥ of a full SVD span the complement of range(Q_k) in a basis that is
    free. For a loss that depends on them only through that subspace (e.g. Q⊥Q⊥ᴴ),
    d(Q⊥) = −Q_k dQ_kᴴ Q⊥ up to a rotation of the free basis, so its cotangent moves to
    −Q⊥ Q̄⊥ᴴ Q_k on Q_k. A loss that depends on the basis itself has no derivative.
    """
    Qk, Qp = Q[..., :k], Q[..., k:]
    return gQ[..., :k] - Qp @ (gQ[..., k:].mH @ Qk)


class _SVD(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(
        A: torch.Tensor, full_matrices: bool, rtol: float, broadening: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # A plain tuple: vmap's generated rule does not flatten torch's named tuple.
        U, S, Vh = torch.linalg.svd(A, full_matrices=full_matrices)
        return U, S, Vh

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _, full_matrices, rtol, broadening = inputs
        U, S, Vh = output
        ctx.full_matrices = full_matrices
        ctx.rtol = rtol
        ctx.broadening = broadening
        ctx.save_for_backward(U, S, Vh)
        ctx.save_for_forward(U, S, Vh)

    @staticmethod
    def backward(
        ctx: Any, gU: torch.Tensor | None, gS: torch.Tensor | None, gVh: torch.Tensor | None
    ) -> tuple[torch.Tensor, None, None, None]:
        U, S, Vh = ctx.saved_tensors
        k = S.shape[-1]
        if ctx.full_matrices:
            if gU is not None and U.shape[-1] > k:
                gU = _fold_extra_columns(U, gU, k)
            if gVh is not None and Vh.shape[-2] > k:
                gVh = _fold_extra_columns(Vh.mH, gVh.mH, k).mH
            U, Vh = U[..., :k], Vh[..., :k, :]
        gA = svd_backward(U, S, Vh, gU, gS, gVh, ctx.rtol, ctx.broadening)
        return gA, None, None, None

    @staticmethod
    def jvp(ctx: Any, dA: torch.Tensor, *_: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        U, S, Vh = ctx.saved_tensors
        k = S.shape[-1]
        if not ctx.full_matrices:
            return _svd_jvp(U, S, Vh, dA, ctx.rtol, ctx.broadening)
        Uk, Vhk = U[..., :k], Vh[..., :k, :]
        dUk, dS, dVhk = _svd_jvp(Uk, S, Vhk, dA, ctx.rtol, ctx.broadening)
        # Extra columns move only to stay orthogonal to the first k (see _fold_extra_columns).
        Up, Vp = U[..., k:], Vh[..., k:, :].mH
        dU = torch.cat([dUk, -Uk @ (dUk.mH @ Up)], dim=-1)
        dVh = torch.cat([dVhk, -(Vhk.mH @ (dVhk @ Vp)).mH], dim=-2)
        return dU, dS, dVh


def _check_options(rtol: float | None, broadening: float, dtype: torch.dtype) -> float:
    if rtol is None:
        return default_rtol(dtype)
    if not isinstance(rtol, (int, float)) or not 0 <= rtol < 1:
        raise ValueError(f"rtol must be a float in [0, 1), got {rtol!r}")
    if not isinstance(broadening, (int, float)) or broadening < 0:
        raise ValueError(f"broadening must be a float >= 0, got {broadening!r}")
    return float(rtol)


def svd(
    A: torch.Tensor,
    full_matrices: bool = False,
    *,
    rtol: float | None = None,
    broadening: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Singular value decomposition with gradients that are finite at ties and zeros.

    Returns exactly what :func:`torch.linalg.svd` returns — ``A = U diag(S) Vh`` with singular
    values in descending order — but differentiates it with a rule that never divides by a
    zero gap or a zero singular value (module docstring of ``torchsvd._svd``, and
    ``docs/math.md``).

    Parameters
    ----------
    A : Tensor of shape ``(..., m, n)``
        float32, float64, complex64 or complex128; float16/bfloat16 are computed in float32 and the
        results cast back.
    full_matrices : bool
        As in :func:`torch.linalg.svd`. With ``True`` the extra columns of ``U`` (or rows of
        ``Vh``) are an arbitrary orthonormal basis of the complement. Their cotangents are kept:
        they are mapped to the first ``min(m, n)`` columns as for a loss that depends on that
        complement only as a subspace (e.g. its projector), which is the only kind of loss of
        them that has a derivative. (``torch.linalg.svd`` drops them.)
    rtol : float, optional
        Singular values closer than ``rtol·σ_max`` count as tied, and singular values below it as
        zero, in the backward pass. Default √eps of the dtype.
    broadening : float
        Opt-in Lorentzian broadening ε: the reciprocal gap 1/d of separated singular values is
        replaced by d/(d² + (ε·σ_max)²), which bounds it near ties at the price of a bias
        (common in tensor-network codes). Default 0 (exact).

    Returns
    -------
    U : Tensor ``(..., m, k)`` (``(..., m, m)`` if full_matrices)
    S : Tensor ``(..., k)``, real, descending
    Vh : Tensor ``(..., k, n)`` (``(..., n, n)`` if full_matrices)

    Warns
    -----
    DegenerateGradientWarning
        In the backward pass, when the loss depends on the basis chosen inside a group of tied
        singular values, or on the phase of complex singular vectors. The returned gradient is
        that of the part of the loss that does not.

    Notes
    -----
    For a loss that *is* invariant under the free choices (projectors, ``U @ Vh``, functions of
    ``S``) the gradient is exact. For ``U diag(f(S)) Vh`` with non-constant ``f`` at a tie the
    true derivative depends on f′, which no SVD backward sees: use :func:`torchsvd.svd_apply`.

    Examples
    --------
    The polar factor of an orthogonal matrix: all singular values are tied, PyTorch's gradient
    is NaN, this one is finite and correct.

    >>> import torch, torchsvd
    >>> Q = torchsvd.testing.random_unitary(4, seed=0).requires_grad_()
    >>> U, S, Vh = torchsvd.svd(Q)
    >>> (U @ Vh).sum().backward()
    >>> bool(torch.isfinite(Q.grad).all())
    True

    References
    ----------
    .. [1] J. Townsend, "Differentiating the singular value decomposition", 2016.
    .. [2] PyTorch issue #49886 (NaN gradients at repeated singular values).
    """
    check_matrix(A)
    dtype = compute_dtype(A.dtype)
    rtol_value = _check_options(rtol, broadening, dtype)
    if not isinstance(full_matrices, bool):
        raise TypeError(f"full_matrices must be a bool, got {type(full_matrices).__name__}")
    work = A.to(dtype)
    if A.numel() == 0:
        U, S, Vh = torch.linalg.svd(work, full_matrices=full_matrices)
    elif _small.eligible(work, full_matrices):
        U, S, Vh = _small.svd(work, rtol_value, float(broadening))
    else:
        U, S, Vh = _SVD.apply(work, full_matrices, rtol_value, float(broadening))
    if dtype != A.dtype:
        return U.to(A.dtype), S.to(A.dtype), Vh.to(A.dtype)
    return U, S, Vh


def svdvals(A: torch.Tensor) -> torch.Tensor:
    """Singular values of ``(..., m, n)`` matrices, descending, with an always finite derivative.

    Same result as :func:`torch.linalg.svdvals`; when a derivative is needed it goes through
    :func:`svd` (gradient ``U diag(S̄) Vh``; the second derivative is finite at ties too, where
    PyTorch's is NaN).

    Examples
    --------
    >>> import torch, torchsvd
    >>> torchsvd.svdvals(torch.tensor([[3.0, 0.0], [4.0, 0.0]]))
    tensor([5., 0.])
    """
    check_matrix(A)
    if A.requires_grad or is_transformed(A) or _has_tangent(A):
        return svd(A)[1]
    dtype = compute_dtype(A.dtype)
    return torch.linalg.svdvals(A.to(dtype)).to(A.dtype.to_real() if A.is_complex() else A.dtype)


def _has_tangent(A: torch.Tensor) -> bool:
    import torch.autograd.forward_ad as fwAD

    return fwAD.unpack_dual(A).tangent is not None
