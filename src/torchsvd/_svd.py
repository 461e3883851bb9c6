"""``svd`` and ``svdvals``: exact gradients where the decomposition is smooth, loud where it is not.

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

Two different questions decide where a reciprocal is replaced by zero:

- **Ties** (a relative gap): a pair with |σ_j − σ_i| ≤ tie_rtol·σ_max (default √eps) is a near
  tie. A loss invariant under rotations inside the pair (U Vᴴ, a projector onto a block holding
  both, a function of S) has (J + K)_ij = 0 there, and the quotient would only divide its
  rounding by the small gap: the term is dropped (D_ij := 0) wherever the numerator is at its
  rounding level, 16·eps times the largest column norms of Ū and V̄ (`numerator_noise`). Where
  the numerator is clearly above it, the loss depends on the basis inside the pair; if the gap
  is resolved, above 100·max(m, n)·eps·σ_max (a hundred times the rounding of the computed
  singular values of an exact tie), the SVD determines that basis and the quotient is the
  derivative: the term is kept (`resolved_near_ties`), accurate to about eps·σ_max/gap relative,
  the conditioning of the pair's singular vectors. Small singular values far apart relative to
  themselves (1e-9 and 5e-10 next to σ_max = 1) are such a pair. Below that level (an exact tie,
  or a gap at rounding level) the basis is rounding: the term is dropped, with a warning if the
  numerator is clearly non-zero. Beyond tie_rtol·σ_max every term is kept (its rounding error is
  at most √eps relative). The forward-mode rule sees no cotangent: it keeps the term of every
  resolved gap (`forward_tie_rtol`) and drops only unresolved pairs, whose basis has no
  derivative (exact there for invariant losses only).
- **Zeros** (numerical rank, as ``torch.linalg.matrix_rank``): σ ≤ max(m, n)·eps·σ_max is zero.
  Σ⁻¹ is replaced by zero there, and E where both values are zero (their vectors rotate
  independently). Every resolved σ keeps its 1/σ and its 1/(σ_i + σ_j), however small; where
  σ_i + σ_j ≤ tie_rtol·σ_max and the numerator (J − K)_ij is at its rounding level (a loss that
  does not depend on the pair's relative rotation or phase, such as the projector onto all of
  range(U)) the E term is dropped (`quiet_small_sums`), which only removes amplified rounding.

What no SVD backward can do. It sees the cotangents (Ū, S̄, V̄), never the loss. For the
reconstruction U diag(f(S)) Vᴴ (f(σ) = σ: U S Vh and its truncations U_k S_k Vh_k) the numerator
(J + K)_ij = (M + Mᴴ)_ij (f(σ_j) − f(σ_i)), M = UᴴWV, vanishes like the gap, and the limit of the
quotient, (M + Mᴴ)_ij f′(σ), depends on f′, which the cotangents do not carry: at a tie the
cotangents of U S Vh are exactly those of U diag(c) Vh with the constant c = S.detach(), whose
gradient is the masked one. So reconstructions and truncations are differentiated by
``low_rank`` / ``svd_apply``, and the gradient of U S Vh here is exact only at separated spectra
and resolved near ties (there the numerator is above its rounding and is kept).
At a numerically zero σ its cotangents vanish, and the gradient returned is that of the top-r
truncation (r the numerical rank), not W.

Warnings (`DegenerateGradientWarning`, "clearly non-zero" meaning above 10·√eps times the size of
the cotangents, per matrix of the batch, except for tie numerators, compared with their rounding
level above):

- a tie (a pair inside tie_rtol·σ_max whose term is dropped) where (J + K)_ij is clearly
  non-zero: the loss depends on the basis inside the tie;
- complex: Im(J + K)_ii clearly non-zero at a non-zero σ_i: the loss depends on the phase;
- a numerically zero σ_i where the out-of-span cotangent (I − UUᴴ)Ū_i or (I − VVᴴ)V̄_i, the
  entries J_ij or K_ij between two zeros (left and right null vectors rotate independently), or
  (complex) Im J_ii or Im K_ii (independent phases) is clearly non-zero: the loss depends on the
  arbitrary basis of a null space;
- a tie where the cotangents have the structure of a reconstruction — the dropped Hermitian part
  of (UᴴŪ + VᴴV̄)_ij is clearly non-zero and Re(u_iᴴŪ_i) = Re(v_iᴴV̄_i) = σ_i S̄_i for both
  indices, as for any loss of U diag(S) Vh alone. A loss that adds other terms of U, S or Vh to
  a reconstruction breaks that identity and is not recognised.

At a single zero σ_i of a real square matrix the free choice is discrete: u_i and v_i flip sign
independently and U Vᴴ jumps. No cotangent test decides it exactly ((u_iᵀx)²(v_iᵀy)², smooth
there, and c·(u_iᵀx)(v_iᵀy), which flips, have the same cotangents for a suitable c); the backward
warns on the signature of a loss of u_i v_iᴴ, Re(u_iᴴŪ_i) = Re(v_iᴴV̄_i) ≠ 0, which catches U @ Vh
and spares the null-space projectors u_i u_iᴴ and v_i v_iᴴ (``docs/math.md`` says what it misses).

The checks run on the values themselves, also under ``torch.func`` transforms (the flags are
computed with tensor operations and read on the unwrapped tensors); they are skipped under
``torch.compile`` and for meta tensors, where values do not exist.

Second derivatives of `svdvals`. The gradient of ℓ(S) is G = U diag(S̄) Vᴴ with S̄ = ∇ℓ(S).
Differentiating it with S̄ held fixed is the spectral-function rule with f_i = S̄_i:
Uᴴ dG V = P∘sym(dP) + Q∘skew(dP) (+ rectangular terms with S̄_i/σ_i), P_ij = (S̄_i − S̄_j)/(σ_i −
σ_j), P_ii = 0, Q_ij = (S̄_i + S̄_j)/(σ_i + σ_j); the dependence of S̄ on S is differentiated by
autograd through the loss. At a tie, P_ij is 0/0; its limit is H_ii − H_ij, H the Hessian of ℓ in
S (Lewis & Sendov 2001), and at zeros Q_ij, Q_ii, S̄_i/σ_i tend to H_ii. One Hessian-vector
product with ℓ's own graph gives all of them: with d = e_a − e_b for the first two indices a, b of
every group of tied non-zero values and d_i = 1 at every zero, (Hd)_a − (Hd)_b = 2(H_aa − H_ab) and
(Hd)_i = H_ii, because the symmetry that makes ℓ∘σ twice differentiable (ℓ symmetric inside
each group, even in each zero σ) cancels every cross term. This product needs ℓ's graph, which
exists in reverse mode (``create_graph=True``); under ``torch.func`` transforms and in forward
mode the masked value 0 is used, with a warning wherever the spectrum has a tie or a zero.

References
----------
.. [1] J. Townsend, "Differentiating the singular value decomposition", 2016.
.. [2] C. Ionescu, O. Vantzos, C. Sminchisescu, "Matrix backpropagation for deep networks with
       structured layers", ICCV 2015.
.. [3] A. S. Lewis, H. S. Sendov, "Twice differentiable spectral functions", SIAM J. Matrix
       Anal. Appl. 23(2), 2001.
.. [4] PyTorch, ``torch/csrc/autograd/FunctionsManual.cpp``: ``svd_backward``, ``linalg_svd_jvp``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch

from torchsvd import _small
from torchsvd._errors import DegenerateGradientWarning
from torchsvd._validate import (
    check_matrix,
    check_real,
    compute_dtype,
    eps,
    is_transformed,
    rank_rtol,
    real_dtype,
)

__all__ = [
    "NUMERATOR_NOISE",
    "RESOLVED_GAP",
    "default_rtol",
    "gap_reciprocal",
    "gauge_reciprocals",
    "numerator_noise",
    "quiet_small_sums",
    "resolved_near_ties",
    "svd",
    "svd_backward",
    "svdvals",
]


def default_rtol(dtype: torch.dtype) -> float:
    """Default tie tolerance relative to σ_max: √eps of the (real) dtype.

    Rounding leaves a numerator that should vanish at about eps·‖cotangent‖; divided by a gap of
    at least √eps·σ_max it contributes at most √eps relative error, while a gap below the threshold
    would amplify it past that.
    """
    return eps(dtype) ** 0.5


def _masked_reciprocal(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # 1/x where keep, else 0, with a denominator x + 1 + 2|x| ≥ max(|x|, 1) where masked (the
    # 2 keeps it positive after rounding for x < 0), so that neither this value nor its
    # derivative (zero there) is ever inf or NaN, in double backward too. Arithmetic on the
    # 0/1 mask: torch.where with a scalar is several times slower on CPU.
    k = keep.to(x.dtype)
    return k / (x + (1 - k) * (1 + 2 * x.abs()))


def gap_reciprocal(
    diff: torch.Tensor, keep: torch.Tensor, broadening: float, top: torch.Tensor
) -> torch.Tensor:
    """D_ij = 1/(σ_j − σ_i) where ``keep``, else 0; with ``broadening`` ε > 0 the Lorentzian
    d/(d² + (ε·σ_max)²) instead (``top``: σ_max, broadcastable against ``diff``)."""
    if broadening > 0:
        # d/(d² + ε²) = 1/(d + ε²/d), scale-aware: ε = broadening·σ_max.
        d = torch.where(keep, diff, torch.inf)
        return (d + (broadening * top) ** 2 / d).reciprocal()
    return _masked_reciprocal(diff, keep)


#: Multiple of the numerical-rank level max(m, n)·eps·σ_max above which a gap counts as resolved:
#: the computed singular values of an exact tie differ by up to about that level (measured up
#: to 1.25 times it), so below it the basis inside the pair is rounding.
RESOLVED_GAP = 100.0

#: Multiple of the rounding level (relative to the cotangents' column norms) above which a
#: numerator (J + K)_ij counts as non-zero: for losses invariant inside a pair it was measured
#: at up to 2·eps on random shapes up to 12×9, real and complex.
NUMERATOR_NOISE = 16.0


def numerator_noise(
    gU: torch.Tensor | None, gVh: torch.Tensor | None, noise: float, dtype: torch.dtype
) -> torch.Tensor | None:
    """(...,) the level below which (J + K)_ij is rounding: NUMERATOR_NOISE·noise times the
    largest column norm of Ū plus that of V̄ (rows of ``gVh``), per matrix; None without
    cotangents."""
    with torch.no_grad():
        size = None
        for g, dim in ((gU, -2), (gVh, -1)):
            if g is not None:
                col = _column_norms(g, dim).amax(-1).to(dtype)
                size = col if size is None else size + col
        return None if size is None else NUMERATOR_NOISE * noise * size


def _column_norms(g: torch.Tensor, dim: int) -> torch.Tensor:
    """‖g‖₂ along ``dim`` of a (..., r, c) tensor, scaled by its largest entry against overflow.

    A sum of squares: ``Tensor.norm`` over the middle dimension of a batch of small matrices is
    an order of magnitude slower on CPU.
    """
    a = g.abs()
    top = a.amax(dim=(-2, -1), keepdim=True)
    top = top + (top == 0).to(top.dtype)  # an all-zero matrix: norms 0, not 0/0
    a = a / top
    return (a * a).sum(dim).sqrt() * top.squeeze(-1)


def resolved_near_ties(
    JK: torch.Tensor,
    diff: torch.Tensor,
    separated: torch.Tensor,
    floor: torch.Tensor,
    level: torch.Tensor,
) -> torch.Tensor:
    """Pairs inside the tie tolerance whose term (J + K)_ij/(σ_j − σ_i) is kept (bool).

    Those whose gap is resolved (``diff`` = σ_j − σ_i above ``floor``, `RESOLVED_GAP` times the
    numerical-rank level max(m, n)·eps·σ_max) and whose numerator is clearly non-zero (above
    ``level``, the rounding of `numerator_noise`): the loss depends on the basis inside the
    pair, which the SVD determines there, and the quotient is its derivative, accurate to about
    eps·σ_max/gap. All arguments broadcast against ``JK``; the diagonal (diff = 0) is never kept.
    """
    with torch.no_grad():
        return ~separated & (diff.abs() > floor) & (JK.abs() > level)


def quiet_small_sums(
    JmK: torch.Tensor,
    E: torch.Tensor,
    total: torch.Tensor,
    small: torch.Tensor,
    level: torch.Tensor,
) -> torch.Tensor:
    """E with the entries zeroed whose numerator (J − K)_ij is at its rounding level (``level``,
    broadcastable) and whose σ_i + σ_j (``total``) is at most ``small`` (tie_rtol·σ_max).

    Such a numerator is exactly zero for a loss that does not depend on the relative phase or
    rotation of the pair (the projector onto all of range(U), say), and 1/(σ_i + σ_j) of a
    resolved small σ would only amplify its rounding; a genuine numerator that small
    contributes no more than that rounding either way.
    """
    with torch.no_grad():
        quiet = (total <= small) & (JmK.abs() <= level)
    return E * (~quiet).to(E.dtype)


def quiet_small_columns(
    out: torch.Tensor,
    inv_s: torch.Tensor,
    S: torch.Tensor,
    small: torch.Tensor,
    level: torch.Tensor,
) -> torch.Tensor:
    """1/σ with the entries zeroed whose out-of-span cotangent column (``out`` (..., r, k)) is at
    its rounding ``level`` (...,) and whose σ is at most ``small`` (tie_rtol·σ_max, (..., 1)).

    The counterpart of `quiet_small_sums` for the rectangular part: that column is exactly zero
    for a loss that does not rotate u_j (v_j) into the complement of the basis (the projector
    onto a full U's last columns, say), and 1/σ of a resolved small σ would only amplify its
    rounding; a genuine column that small contributes no more than that rounding either way.
    """
    with torch.no_grad():
        quiet = (S <= small) & (_column_norms(out, -2) <= level.unsqueeze(-1))
    return inv_s * (~quiet).to(inv_s.dtype)


def gauge_reciprocals(
    S: torch.Tensor, tie_rtol: float, broadening: float = 0.0, *, zero_rtol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked reciprocals used by both the forward and reverse rule.

    Returns ``D`` with D_ij = 1/(σ_j − σ_i), zero at ties (|σ_j − σ_i| ≤ tie_rtol·σ_max); ``E``
    with E_ij = 1/(σ_j + σ_i), zero where σ_i + σ_j ≤ zero_rtol·σ_max; ``inv_s`` = 1/σ, zero where
    σ ≤ zero_rtol·σ_max; and the boolean mask of separated pairs (False on the diagonal).
    """
    pairs = _Pairs(S, tie_rtol, zero_rtol)
    D = gap_reciprocal(pairs.diff, pairs.separated, broadening, pairs.top)
    return D, pairs.E, pairs.inv_s, pairs.separated


class _Pairs:
    """The pair quantities of S (..., k) both rules start from: ``top`` σ_max (..., 1, 1),
    ``diff`` σ_j − σ_i and ``total`` σ_i + σ_j (..., k, k), the mask of ``separated`` pairs
    (|σ_j − σ_i| > tie_rtol·σ_max, False on the diagonal), and the masked reciprocals ``E`` =
    1/(σ_i + σ_j) and ``inv_s`` = 1/σ, zero at or below zero_rtol·σ_max."""

    def __init__(self, S: torch.Tensor, tie_rtol: float, zero_rtol: float) -> None:
        self.top = S[..., :1].unsqueeze(-1)  # S is descending: σ_max first
        self.diff = S.unsqueeze(-2) - S.unsqueeze(-1)  # (i, j) -> σ_j − σ_i
        self.total = S.unsqueeze(-2) + S.unsqueeze(-1)
        self.separated = self.diff.abs() > tie_rtol * self.top
        zero_tol = zero_rtol * S[..., :1]
        self.E = _masked_reciprocal(self.total, self.total > zero_tol.unsqueeze(-1))
        self.inv_s = _masked_reciprocal(S, S > zero_tol)


def _values_known(x: torch.Tensor) -> bool:
    """Whether the values of ``x`` can be read: not traced by torch.compile, not a meta tensor."""
    return not torch.compiler.is_compiling() and x.device.type != "meta"


def _read_flags(code: torch.Tensor) -> int:
    """Bitwise OR of an integer tensor's entries (bits 1, 2, 4, 8), read through any torch.func
    wrappers, in one transfer.

    Under ``vmap`` the unwrapped tensor holds one entry per batch element; under ``grad`` it is
    the value itself. Either way the flags are data, never traced control flow.
    """
    while torch._C._functorch.is_functorch_wrapped_tensor(code):
        code = torch._C._functorch.get_unwrapped(code)
    code = code.detach()
    present = torch.stack([(code & bit).ne(0).any() for bit in (1, 2, 4, 8)]).tolist()
    return sum(bit for bit, p in zip((1, 2, 4, 8), present, strict=True) if p)


_TIE, _PHASE, _NULL, _RECONSTRUCTION = 1, 2, 4, 8

_MESSAGES = {
    _TIE: "svd backward: the loss depends on the choice of singular vectors inside a group of "
    "tied singular values (|σ_i − σ_j| <= tie_rtol·σ_max), so it has no gradient there; "
    "returning the gradient of its basis-independent part.",
    _PHASE: "svd backward: the loss depends on the phase of the complex singular vectors, which "
    "the SVD leaves free (u_i and v_i may both be multiplied by e^{iφ}); returning the gradient "
    "of its phase-independent part.",
    _NULL: "svd backward: the loss depends on the singular vectors of numerically zero singular "
    "values (<= max(m, n)·eps·σ_max), an arbitrary basis of the null spaces of A and Aᴴ, so it "
    "has no gradient there (e.g. U @ Vh of a rank-deficient matrix: use torchsvd.polar, which "
    "says what it returns); returning the gradient of its basis-independent part.",
    _RECONSTRUCTION: "svd backward: the loss looks like a reconstruction U diag(S) Vh (or a "
    "truncation U_k S_k Vh_k) at tied singular values; its gradient there needs a term the SVD "
    "backward cannot see, and the one returned is wrong. Use torchsvd.low_rank(A, k) for "
    "truncations, or torchsvd.svd_apply(A, f) for U diag(f(S)) Vh.",
}


def _gauge_flags(
    S: torch.Tensor,
    separated: torch.Tensor,
    zero: torch.Tensor,
    G: torch.Tensor | None,
    H: torch.Tensor | None,
    gS: torch.Tensor | None,
    out_u: torch.Tensor | None,
    out_v: torch.Tensor | None,
    scale: torch.Tensor,
    noise: float | None = None,
    level: torch.Tensor | None = None,
) -> torch.Tensor:
    """The warnings due, as an integer tensor of bits (module docstring, "Warnings").

    ``G = UᴴŪ``, ``H = VᴴV̄`` (k×k, or None), ``out_u``, ``out_v`` the out-of-span cotangents
    (I − UUᴴ)Ū and (I − VVᴴ)V̄ (or None), ``scale`` (...,) the size of the cotangents,
    ``level`` (...,) the rounding level of the tie numerators (default: the 10·√eps limit).
    """
    k = S.shape[-1]
    limit = 10 * (eps(S.dtype) if noise is None else noise) ** 0.5 * scale
    lim2 = limit[..., None, None]
    eye = torch.eye(k, dtype=torch.bool, device=S.device)
    zi, zj = zero.unsqueeze(-1), zero.unsqueeze(-2)
    both_zero = zi & zj & ~eye
    tied = ~separated & ~eye & ~(zi & zj)
    ref = G if G is not None else H
    if ref is None:
        return torch.zeros(S.shape[:-1], dtype=torch.int64, device=S.device)
    zero_m = torch.zeros_like(ref)
    Gz = G if G is not None else zero_m
    Hz = H if H is not None else zero_m
    J, K = Gz - Gz.mH, Hz - Hz.mH
    JK = J + K
    tie_lim = lim2 if level is None else level[..., None, None]
    flags = ((JK.abs() > tie_lim) & tied).flatten(-2).any(-1) * _TIE
    null = ((J.abs() > lim2) | (K.abs() > lim2)) & both_zero
    null_any = null.flatten(-2).any(-1)
    for out in (out_u, out_v):
        if out is not None:
            null_any = null_any | ((out.norm(dim=-2) > limit[..., None]) & zero).any(-1)
    if G is not None and H is not None:
        # The pair (u_i, v_i) of a zero σ_i enters as u_i v_iᴴ (as in U @ Vh), whose sign is free
        # (u_i and v_i flip independently there): Re(u_iᴴŪ_i) = Re(v_iᴴV̄_i) ≠ 0 is its trace. A
        # loss of u_i u_iᴴ or v_i v_iᴴ alone (smooth projectors) gives unequal values.
        g_ii, h_ii = G.diagonal(dim1=-2, dim2=-1).real, H.diagonal(dim1=-2, dim2=-1).real
        pair = ((g_ii - h_ii).abs() <= limit[..., None]) & (g_ii.abs() > limit[..., None])
        null_any = null_any | (pair & zero).any(-1)
    if JK.is_complex():
        im_j = J.diagonal(dim1=-2, dim2=-1).imag.abs()
        im_k = K.diagonal(dim1=-2, dim2=-1).imag.abs()
        phase = (JK.diagonal(dim1=-2, dim2=-1).imag.abs() > limit[..., None]) & ~zero
        flags = flags + phase.any(-1) * _PHASE
        zero_phase = ((im_j > limit[..., None]) | (im_k > limit[..., None])) & zero
        null_any = null_any | zero_phase.any(-1)
    flags = flags + null_any * _NULL
    if G is not None and H is not None and gS is not None:
        # Scaled by σ_i/σ_max: for a reconstruction, column i of Ū and V̄ is of size σ_i·|W|,
        # and the dropped term (M + Mᴴ)_ij is the Hermitian part of (G + H)_ij over σ_i + σ_j.
        top = S[..., :1].clamp_min(torch.finfo(S.dtype).tiny)
        rel_s = S / top
        lim1 = limit[..., None] * rel_s
        sg = S * gS
        looks = (
            ((G.diagonal(dim1=-2, dim2=-1).real - sg).abs() <= lim1)
            & ((H.diagonal(dim1=-2, dim2=-1).real - sg).abs() <= lim1)
            & (sg.abs() > lim1)
            & ~zero
        )
        GH = G + H
        dropped = (GH + GH.mH).abs() > 2 * lim2 * (rel_s.unsqueeze(-1) + rel_s.unsqueeze(-2))
        recon = dropped & tied & looks.unsqueeze(-1) & looks.unsqueeze(-2)
        flags = flags + recon.flatten(-2).any(-1) * _RECONSTRUCTION
    # Bits are distinct per flag; a batch is folded by the OR in _read_flags.
    return flags.to(torch.int64)


def _warn_gauge(
    S: torch.Tensor,
    separated: torch.Tensor,
    zero: torch.Tensor,
    G: torch.Tensor | None,
    H: torch.Tensor | None,
    gS: torch.Tensor | None,
    out_u: torch.Tensor | None,
    out_v: torch.Tensor | None,
    cotangents: tuple[torch.Tensor | None, ...],
    noise: float | None = None,
    *,
    level: torch.Tensor | None = None,
) -> None:
    """Issue the warnings of the module docstring that apply to these cotangents.

    ``noise``: the relative rounding of the cotangents when it exceeds eps of S's dtype (float32
    products seen in float64 bases); the thresholds scale with its square root. ``level``
    (...,): the rounding level of the tie numerators (`numerator_noise`), above which a dropped
    one warns; ``separated`` must then include the near ties whose terms were kept.
    """
    if S.numel() == 0 or not _values_known(S):
        return
    with torch.no_grad():
        complex_ = any(t is not None and t.is_complex() for t in (G, H))
        if not complex_ and not is_transformed(S):
            # S is sorted, so a tie anywhere implies one between neighbours: this test on k − 1
            # gaps and the smallest σ picks the matrices of the batch that need the k×k checks
            # (none in the common case: real, no tie, full rank).
            neighbours_tied = ~separated.diagonal(offset=1, dim1=-2, dim2=-1)
            needs = neighbours_tied.any(-1) | zero[..., -1]
            if not bool(needs.any()):
                return
            if needs.ndim and not bool(needs.all()):
                sel = needs.nonzero(as_tuple=True)
                S, separated, zero = S[sel], separated[sel], zero[sel]
                G, H, gS, out_u, out_v, level = (
                    None if t is None else t[sel] for t in (G, H, gS, out_u, out_v, level)
                )
                cotangents = tuple(None if t is None else t[sel] for t in cotangents)
        scale = torch.zeros(S.shape[:-1], dtype=S.dtype, device=S.device)
        for g in cotangents:
            if g is not None:
                scale = scale + g.abs().amax(dim=(-2, -1)).to(S.dtype)
        bits = _read_flags(
            _gauge_flags(S, separated, zero, G, H, gS, out_u, out_v, scale, noise, level)
        )
    for bit, message in _MESSAGES.items():
        if bits & bit:
            warnings.warn(message, DegenerateGradientWarning, stacklevel=4)


def svd_backward(
    U: torch.Tensor,
    S: torch.Tensor,
    Vh: torch.Tensor,
    gU: torch.Tensor | None,
    gS: torch.Tensor | None,
    gVh: torch.Tensor | None,
    tie_rtol: float,
    broadening: float = 0.0,
    *,
    zero_rtol: float | None = None,
    noise: float | None = None,
    resolved_rtol: float | None = None,
) -> torch.Tensor:
    """Reverse rule of the reduced SVD (see the module docstring), masked at ties and zeros.

    Shapes: ``U`` (..., m, k), ``S`` (..., k), ``Vh`` (..., k, n); cotangents alike or None.
    ``tie_rtol`` is the tie tolerance relative to σ_max; ``zero_rtol`` the numerical-rank
    tolerance, default max(m, n)·eps; ``noise`` the rounding level of the cotangents when it is
    above eps of the dtype (it scales the warning thresholds); ``resolved_rtol`` the gap,
    relative to σ_max, above which a pair inside the tie tolerance counts as resolved (default
    ``RESOLVED_GAP·zero_rtol``; ``tie_rtol`` where the vectors are not accurate one by one inside
    a near tie). Warns (`DegenerateGradientWarning`) where the loss depends on a free choice.
    Differentiable itself (double backward).
    """
    m, k, n = U.shape[-2], S.shape[-1], Vh.shape[-1]
    if gU is None and gVh is None:
        if gS is None:
            return torch.zeros((*S.shape[:-1], m, n), dtype=U.dtype, device=U.device)
        return (U * gS.unsqueeze(-2).to(U.dtype)) @ Vh
    zero_rtol = rank_rtol(m, n, S.dtype) if zero_rtol is None else zero_rtol
    if broadening == 0 and _clear_spectrum(U, S, gU, gVh, tie_rtol, zero_rtol, m != n):
        return _clear_backward(U, S, Vh, gU, gS, gVh)
    pairs = _Pairs(S, tie_rtol, zero_rtol)
    separated, top, diff = pairs.separated, pairs.top, pairs.diff
    V = Vh.mH
    G = U.mH @ gU if gU is not None else None  # Uᴴ Ū
    H = V.mH @ gVh.mH if gVh is not None else None  # Vᴴ V̄
    out_u = gU - U @ G if m > k and gU is not None and G is not None else None
    out_v = gVh.mH - V @ H if n > k and gVh is not None and H is not None else None
    zero = S <= zero_rtol * S[..., :1]
    zero_kk = torch.zeros((*S.shape[:-1], k, k), dtype=U.dtype, device=U.device)
    J = G - G.mH if G is not None else zero_kk
    K = H - H.mH if H is not None else zero_kk
    # Near ties whose gap the SVD resolves and where the loss depends on the basis inside the
    # pair keep their exact term (module docstring, "Ties").
    level = numerator_noise(gU, gVh, eps(S.dtype) if noise is None else noise, S.dtype)
    assert level is not None  # gU or gVh is given
    floor = (RESOLVED_GAP * zero_rtol if resolved_rtol is None else resolved_rtol) * top
    keep = resolved_near_ties(J + K, diff, separated, floor, level[..., None, None])
    D = gap_reciprocal(diff, separated | keep, broadening, top)
    separated = separated | keep
    _warn_gauge(S, separated, zero, G, H, gS, out_u, out_v, (gU, gVh), noise, level=level)
    E = quiet_small_sums(J - K, pairs.E, pairs.total, tie_rtol * top, level[..., None, None])
    inner = 0.5 * ((J + K) * D + (J - K) * E)
    if gS is not None:
        inner = inner + torch.diag_embed(gS.to(U.dtype))
    gA = U @ inner @ Vh
    small = tie_rtol * S[..., :1]
    if out_u is not None:
        inv_u = quiet_small_columns(out_u, pairs.inv_s, S, small, level)
        gA = gA + (out_u * inv_u.unsqueeze(-2)) @ Vh
    if out_v is not None:
        inv_v = quiet_small_columns(out_v, pairs.inv_s, S, small, level)
        gA = gA + U @ (out_v * inv_v.unsqueeze(-2)).mH
    return gA


def _clear_spectrum(
    U: torch.Tensor,
    S: torch.Tensor,
    gU: torch.Tensor | None,
    gVh: torch.Tensor | None,
    tie_rtol: float,
    zero_rtol: float,
    rectangular: bool,
) -> bool:
    """Whether every mask of `svd_backward` is settled for the whole batch, so that
    `_clear_backward` returns its gradient: real, values readable, and for every matrix no
    pair inside the tie tolerance, no numerically zero σ, and, for a rectangular matrix, no σ
    at or below tie_rtol·σ_max (`quiet_small_columns`). One read of one boolean.

    The comparisons are those of the general rule, on the k − 1 neighbour gaps and the
    smallest value only: S is descending and rounding is monotone, so fl(σ_i − σ_j) ≥
    fl(σ_i − σ_{i+1}) for i < j, and every off-diagonal fl(σ_i + σ_j) ≥ fl(σ_i − σ_j) is above
    tie_rtol·σ_max too, which leaves nothing for `quiet_small_sums` to zero off the diagonal.
    The diagonal of (J − K) ∘ E is exactly zero for real cotangents (J − K is skew by
    construction, to every order of differentiation), so E_ii, which `quiet_small_sums` may
    zero, never matters there; complex cotangents (a phase term on that diagonal, and phase
    warnings) always take the general rule.
    """
    if U.is_complex() or S.numel() == 0 or not _values_known(S):
        return False
    if any(t is not None and is_transformed(t) for t in (S, gU, gVh)):
        return False
    return _clear_values(S, tie_rtol, zero_rtol, rectangular)


def _clear_values(
    S: torch.Tensor, tie_rtol: float, zero_rtol: float, rectangular: bool, squares: bool = False
) -> bool:
    """The test of `_clear_spectrum` on the values ``S`` (..., k) alone, for the whole batch.

    ``squares``: also that the formula in squares, ``1/(σ_j² − σ_i²)`` (torch's), neither
    overflows nor leaves the normal range, where the library's ``1/(σ_j − σ_i)`` and
    ``1/(σ_i + σ_j)`` do not: σ_max between 6e-132 and 7e153 in float64, 3e-10 and 9e18 in
    float32 (8×8, default tie tolerance; a sufficient test, from the clear spectrum's own
    bounds).
    """
    k = S.shape[-1]
    with torch.no_grad():
        top = S[..., :1]
        small = tie_rtol * top
        smallest = S[..., -1:]
        clear = smallest > zero_rtol * top
        if k > 1:
            clear = clear & ((S[..., :-1] - S[..., 1:]) > small)
        if rectangular:
            clear = clear & (smallest > small)
        if squares:
            # Every σ_i² − σ_j² (i < j) lies between gap·σ_min > tie_rtol·zero_rtol·σ_max² and
            # σ_max², and σ_min² > zero_rtol²·σ_max²: bounds on σ_max alone keep them normal.
            info = torch.finfo(S.dtype)
            least = min(tie_rtol * zero_rtol, zero_rtol * zero_rtol)
            if least <= 0:  # tie_rtol = 0: no bound on the gaps
                return False
            low, high = (info.tiny / info.eps / least) ** 0.5, (info.max / 4) ** 0.5
            clear = clear & (top > low) & (top < high)
        return bool(clear.all())


def _clear_backward(
    U: torch.Tensor,
    S: torch.Tensor,
    Vh: torch.Tensor,
    gU: torch.Tensor | None,
    gS: torch.Tensor | None,
    gVh: torch.Tensor | None,
) -> torch.Tensor:
    """`svd_backward` where `_clear_spectrum` holds: every reciprocal is kept, so the masks
    are constants and the same arithmetic gives the same gradient in fewer operations."""
    m, k, n = U.shape[-2], S.shape[-1], Vh.shape[-1]
    eye, off = _eye_masks(k, S.dtype, S.device)
    V = Vh.mH
    G = U.mH @ gU if gU is not None else None
    H = V.mH @ gVh.mH if gVh is not None else None
    if G is not None and H is not None:
        J, K = G - G.mH, H - H.mH
        JpK, JmK = J + K, J - K
    elif G is not None:
        JpK = JmK = G - G.mH
    else:
        assert H is not None  # svd_backward returns before here without gU and gVh
        JpK = H - H.mH
        JmK = -JpK
    # The values of `_masked_reciprocal` with every entry kept (1/diff, 0 on the diagonal).
    D = off / (S.unsqueeze(-2) - S.unsqueeze(-1) + eye)
    E = 1.0 / (S.unsqueeze(-2) + S.unsqueeze(-1))
    inner = 0.5 * (JpK * D + JmK * E)
    if gS is not None:
        inner = inner + torch.diag_embed(gS.to(U.dtype))
    gA = U @ inner @ Vh
    if m > k and gU is not None and G is not None:
        gA = gA + ((gU - U @ G) * (1.0 / S).unsqueeze(-2)) @ Vh
    if n > k and gVh is not None and H is not None:
        gA = gA + U @ ((gVh.mH - V @ H) * (1.0 / S).unsqueeze(-2)).mH
    return gA


@functools.lru_cache(maxsize=64)
def _eye_masks(k: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The identity and its complement as (k, k) ``dtype`` constants, made once per key."""
    with torch.inference_mode(False), torch.no_grad():
        eye = torch.eye(k, dtype=dtype, device=device)
        return eye, 1 - eye


def forward_tie_rtol(tie_rtol: float, zero_rtol: float) -> float:
    """The tie tolerance of the forward-mode rule: every resolved gap keeps its term.

    The forward rule sees no cotangent, so it cannot tell, as the reverse rule does, whether a
    loss depends on the basis inside a near tie. The tangent of U and V is defined wherever the
    gap is resolved (above `RESOLVED_GAP` times the numerical-rank level ``zero_rtol·σ_max``),
    and the rule returns it there, accurate to about eps·σ_max/gap relative; only an unresolved
    pair, whose basis has no derivative, is dropped.
    """
    return min(tie_rtol, RESOLVED_GAP * zero_rtol)


def _svd_jvp(
    U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, dA: torch.Tensor, tie_rtol: float, b: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward rule of the reduced SVD: the map whose adjoint is `svd_backward`."""
    m, k, n = U.shape[-2], S.shape[-1], Vh.shape[-1]
    zero_rtol = rank_rtol(m, n, S.dtype)
    D, E, inv_s, _ = gauge_reciprocals(
        S, forward_tie_rtol(tie_rtol, zero_rtol), b, zero_rtol=zero_rtol
    )
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


def _decompose(A: torch.Tensor, full_matrices: bool) -> tuple[torch.Tensor, ...]:
    """torch.linalg.svd, with its failure on non-finite input turned into a ValueError.

    The input check reads values, which is impossible under torch.func transforms; there a NaN
    or infinity first shows up as LAPACK's non-convergence.
    """
    try:
        U, S, Vh = torch.linalg.svd(A, full_matrices=full_matrices)
    except torch.linalg.LinAlgError as err:
        raise ValueError(
            f"A: the SVD failed to converge ({err}); A most likely contains NaN or infinite "
            "entries (they cannot be checked beforehand under torch.func transforms)"
        ) from err
    return U, S, Vh


class _SVDReverse(torch.autograd.Function):
    """The reduced or full SVD with the robust reverse rule; `_SVD` adds the forward rule.

    Dynamo cannot trace a Function that defines ``jvp``, so `svd` uses this one under
    ``torch.compile`` (where forward-mode AD is not traced either).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        A: torch.Tensor,
        full_matrices: bool,
        tie_rtol: float,
        broadening: float,
        given: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # ``given``: the detached factors of A, already computed (`_general`): not again.
        # A plain tuple: vmap's generated rule does not flatten torch's named tuple.
        U, S, Vh = _decompose(A, full_matrices) if given is None else given
        return U, S, Vh

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _, full_matrices, tie_rtol, broadening, *_ = inputs
        U, S, Vh = output
        ctx.full_matrices = full_matrices
        ctx.tie_rtol = tie_rtol
        ctx.broadening = broadening
        ctx.save_for_backward(U, S, Vh)

    @staticmethod
    def backward(
        ctx: Any, gU: torch.Tensor | None, gS: torch.Tensor | None, gVh: torch.Tensor | None
    ) -> tuple[torch.Tensor, None, None, None, None]:
        U, S, Vh = ctx.saved_tensors
        m, k, n = U.shape[-2], S.shape[-1], Vh.shape[-1]
        if ctx.full_matrices:
            if gU is not None and U.shape[-1] > k:
                gU = _fold_extra_columns(U, gU, k)
            if gVh is not None and Vh.shape[-2] > k:
                gVh = _fold_extra_columns(Vh.mH, gVh.mH, k).mH
            U, Vh = U[..., :k], Vh[..., :k, :]
        gA = svd_backward(
            U, S, Vh, gU, gS, gVh, ctx.tie_rtol, ctx.broadening, zero_rtol=rank_rtol(m, n, S.dtype)
        )
        return gA, None, None, None, None


class _SVD(_SVDReverse):
    """`_SVDReverse` with the forward-mode rule (the map whose adjoint is its backward)."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _SVDReverse.setup_context(ctx, inputs, output)
        ctx.save_for_forward(*output)

    @staticmethod
    def jvp(ctx: Any, dA: torch.Tensor, *_: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        U, S, Vh = ctx.saved_tensors
        k = S.shape[-1]
        if not ctx.full_matrices:
            return _svd_jvp(U, S, Vh, dA, ctx.tie_rtol, ctx.broadening)
        Uk, Vhk = U[..., :k], Vh[..., :k, :]
        dUk, dS, dVhk = _svd_jvp(Uk, S, Vhk, dA, ctx.tie_rtol, ctx.broadening)
        # Extra columns move only to stay orthogonal to the first k (see _fold_extra_columns).
        Up, Vp = U[..., k:], Vh[..., k:, :].mH
        dU = torch.cat([dUk, -Uk @ (dUk.mH @ Up)], dim=-1)
        dVh = torch.cat([dVhk, -(Vhk.mH @ (dVhk @ Vp)).mH], dim=-2)
        return dU, dS, dVh


_HESSIAN_UNAVAILABLE = (
    "svdvals second derivative: at tied or numerically zero singular values it needs the "
    "Hessian of the loss in S, which is not available under torch.func transforms or in "
    "forward mode; the terms inside the tie are set to 0, which is exact only where the loss "
    "is linear in S. Use torch.autograd.grad(..., create_graph=True) (exact there), or, for a "
    "loss Σ g(σ_i), the first derivative of torchsvd.svd_apply(A, g′)."
)


def _tie_structure(
    S: torch.Tensor, tie_rtol: float, zero_rtol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks of a descending spectrum: zeros, tied pairs of non-zero values, both-zero pairs,
    and the index where each value's group of tied non-zero values starts."""
    k = S.shape[-1]
    top = S[..., :1]
    zero = S <= zero_rtol * top
    eye = torch.eye(k, dtype=torch.bool, device=S.device)
    zi, zj = zero.unsqueeze(-1), zero.unsqueeze(-2)
    close = (S.unsqueeze(-1) - S.unsqueeze(-2)).abs() <= (tie_rtol * top).unsqueeze(-1)
    tied = close & ~eye & ~zi & ~zj
    link = (S[..., :-1] - S[..., 1:] <= tie_rtol * top) & ~zero[..., 1:]  # i tied to i + 1
    # (Not link[..., :1] for the leading False: with k = 1, link is empty and so would be that.)
    start = ~torch.cat([torch.zeros_like(zero[..., :1]), link], dim=-1)
    index = torch.arange(k, device=S.device).expand_as(S)
    first = torch.cummax(torch.where(start, index, 0), dim=-1).values
    return zero, tied, zi & zj & ~eye, first


def _loss_hessian_terms(
    gS: torch.Tensor, S_graph: torch.Tensor, zero: torch.Tensor, first: torch.Tensor
) -> torch.Tensor:
    """(...,) per index: H_aa − H_ab of the group of tied non-zero values it is in (a, b its
    first two indices; 0 alone), or H_ii at a zero — from one Hessian-vector product of the loss
    (module docstring, "Second derivatives of svdvals")."""
    k = gS.shape[-1]
    index = torch.arange(k, device=gS.device).expand_as(gS)
    pair_start = (first == index) & torch.cat(
        [first[..., 1:] == index[..., :-1], torch.zeros_like(zero[..., :1])], dim=-1
    )
    d = pair_start.to(gS.dtype)
    d = d - torch.cat([torch.zeros_like(d[..., :1]), d[..., :-1]], dim=-1) + zero.to(gS.dtype)
    (hd,) = torch.autograd.grad(
        gS, S_graph, d, retain_graph=True, create_graph=torch.is_grad_enabled(), allow_unused=True
    )
    if hd is None:  # S̄ does not depend on S: the loss is linear in S
        return torch.zeros_like(gS)
    half_gap = torch.cat([hd[..., :-1] - hd[..., 1:], torch.zeros_like(hd[..., :1])], dim=-1) / 2
    alpha = torch.where(pair_start, half_gap, 0.0).gather(-1, first)
    return torch.where(zero, hd, alpha)


def _fixed_cotangent_rule(
    U: torch.Tensor,
    S: torch.Tensor,
    Vh: torch.Tensor,
    f: torch.Tensor,
    h: torch.Tensor,
    tied: torch.Tensor,
    zero: torch.Tensor,
    both_zero: torch.Tensor,
    Z: torch.Tensor,
) -> torch.Tensor:
    """The derivative of A ↦ U diag(f) Vᴴ with f held fixed, applied to Z (self-adjoint).

    U [P∘sym(Γ) + Q∘skew(Γ)] Vᴴ + rectangular terms with R = f/σ, Γ = Uᴴ Z V; P, Q, R take the
    limits h at ties and zeros (module docstring).
    """
    m, k, n = U.shape[-2], S.shape[-1], Vh.shape[-1]
    eye = torch.eye(k, dtype=torch.bool, device=S.device)
    si, sj = S.unsqueeze(-1), S.unsqueeze(-2)
    fi, fj = f.unsqueeze(-1), f.unsqueeze(-2)
    hi = h.unsqueeze(-1).expand(*S.shape, k)
    quotient = ~eye & ~tied & ~both_zero
    P = torch.where(quotient, (fi - fj) / torch.where(quotient, si - sj, 1.0), 0.0)
    P = torch.where(tied | both_zero, hi, P)
    total = si + sj
    nonzero_pair = ~(zero.unsqueeze(-1) & zero.unsqueeze(-2))
    Q = torch.where(nonzero_pair, (fi + fj) / torch.where(nonzero_pair, total, 1.0), hi)
    R = torch.where(zero, h, f / torch.where(zero, 1.0, S))
    V = Vh.mH
    ZV = Z @ V
    gamma = U.mH @ ZV
    inner = P * (gamma + gamma.mH) / 2 + Q * (gamma - gamma.mH) / 2
    gA = U @ inner.to(U.dtype) @ Vh
    Rc = R.to(U.dtype)
    if m > k:
        gA = gA + ((ZV - U @ gamma) * Rc.unsqueeze(-2)) @ Vh
    if n > k:
        gA = gA + U @ (Rc.unsqueeze(-1) * (U.mH @ Z - gamma @ Vh))
    return gA


class _SVDVals(torch.autograd.Function):
    """S of A, with the gradient U diag(S̄) Vᴴ computed by `_SVDValsGrad`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        U, S, Vh = _decompose(A, False)
        return S, U, Vh

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        (A,) = inputs
        S, U, Vh = output
        ctx.mark_non_differentiable(U, Vh)
        ctx.save_for_backward(A, S, U, Vh)
        ctx.save_for_forward(U, Vh)

    @staticmethod
    def backward(ctx: Any, gS: torch.Tensor, *_: Any) -> torch.Tensor:
        A, S, U, Vh = ctx.saved_tensors
        return _SVDValsGrad.apply(A, gS, S, U, Vh)

    @staticmethod
    def jvp(ctx: Any, dA: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        U, Vh = ctx.saved_tensors
        return (U.mH @ dA @ Vh.mH).diagonal(dim1=-2, dim2=-1).real, None, None


class _SVDValsGrad(torch.autograd.Function):
    """G = U diag(S̄) Vᴴ, the gradient of a loss of S; its own derivative is exact at ties.

    ``S`` is the output of `_SVDVals` from which the loss computed S̄: the backward
    differentiates S̄ with respect to it (one Hessian-vector product) where values are tied.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        A: torch.Tensor, gS: torch.Tensor, S: torch.Tensor, U: torch.Tensor, Vh: torch.Tensor
    ) -> torch.Tensor:
        return (U * gS.unsqueeze(-2).to(U.dtype)) @ Vh

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        A, gS, S, U, Vh = inputs
        ctx.save_for_backward(gS, S, U, Vh)
        ctx.save_for_forward(gS, S, U, Vh)
        ctx.tie_rtol = default_rtol(A.dtype)
        ctx.zero_rtol = rank_rtol(A.shape[-2], A.shape[-1], A.dtype)

    @staticmethod
    def backward(ctx: Any, Z: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        gS, S_graph, U, Vh = ctx.saved_tensors
        S = S_graph.detach()
        zero, tied, both_zero, first = _tie_structure(S, ctx.tie_rtol, ctx.zero_rtol)
        h = torch.zeros_like(S)
        if S.numel() and _values_known(S):
            singular = _read_flags((tied.flatten(-2).any(-1) | zero.any(-1)).to(torch.int64))
            if singular and (is_transformed(gS) or is_transformed(Z)):
                warnings.warn(_HESSIAN_UNAVAILABLE, DegenerateGradientWarning, stacklevel=2)
            elif singular and gS.requires_grad and S_graph.grad_fn is not None:
                h = _loss_hessian_terms(gS, S_graph, zero, first)
        gA = _fixed_cotangent_rule(U, S, Vh, gS, h, tied, zero, both_zero, Z)
        ggS = (U.mH @ Z @ Vh.mH).diagonal(dim1=-2, dim2=-1).real
        return gA, ggS, None, None, None

    @staticmethod
    def jvp(ctx: Any, dA: torch.Tensor | None, dgS: torch.Tensor | None, *_: Any) -> torch.Tensor:
        gS, S_in, U, Vh = ctx.saved_tensors
        S = S_in.detach()
        out = torch.zeros(
            (*S.shape[:-1], U.shape[-2], Vh.shape[-1]), dtype=U.dtype, device=U.device
        )
        if dgS is not None:
            out = out + (U * dgS.unsqueeze(-2).to(U.dtype)) @ Vh
        if dA is None:
            return out
        zero, tied, both_zero, _first = _tie_structure(S, ctx.tie_rtol, ctx.zero_rtol)
        if S.numel() and _values_known(S):
            if _read_flags((tied.flatten(-2).any(-1) | zero.any(-1)).to(torch.int64)):
                warnings.warn(_HESSIAN_UNAVAILABLE, DegenerateGradientWarning, stacklevel=2)
        h = torch.zeros_like(S)
        return out + _fixed_cotangent_rule(U, S, Vh, gS, h, tied, zero, both_zero, dA)


def _check_options(tie_rtol: float | None, broadening: float, dtype: torch.dtype) -> float:
    check_real(broadening, "broadening", low=0.0)
    if tie_rtol is None:
        return default_rtol(dtype)
    return check_real(tie_rtol, "tie_rtol", low=0.0, high=1.0, high_open=True)


def svd(
    A: torch.Tensor,
    full_matrices: bool = False,
    *,
    tie_rtol: float | None = None,
    broadening: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Singular value decomposition whose gradient is exact where it exists and loud where not.

    Returns exactly what :func:`torch.linalg.svd` returns — ``A = U diag(S) Vh`` with singular
    values in descending order — but differentiates it with a rule that never divides by a
    zero gap or a numerically zero singular value (module docstring of ``torchsvd._svd``, and
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
    tie_rtol : float, optional
        Tie tolerance, in ``[0, 1)``: in the backward pass, for two singular values closer than
        ``tie_rtol·σ_max`` the 1/(σ_j − σ_i) term is dropped where its numerator is at rounding
        level (the loss does not depend on the basis inside the pair), and kept where it is
        clearly non-zero and the gap is resolved (above ``100·max(m, n)·eps·σ_max``); the
        forward-mode rule keeps it wherever the gap is resolved. Default √eps of the dtype
        (1.5e-8 in float64). Zeros are a separate, fixed test: σ at or below
        ``max(m, n)·eps·σ_max`` (the numerical rank of ``torch.linalg.matrix_rank``).
    broadening : float
        Opt-in Lorentzian broadening ε ≥ 0: the reciprocal gap 1/d of separated singular values
        is replaced by d/(d² + (ε·σ_max)²), which bounds it near ties at the price of a bias
        (common in tensor-network codes). Default 0 (exact).

    Returns
    -------
    U : Tensor ``(..., m, k)`` (``(..., m, m)`` if full_matrices)
    S : Tensor ``(..., k)``, real, descending
    Vh : Tensor ``(..., k, n)`` (``(..., n, n)`` if full_matrices)

    Raises
    ------
    TypeError
        ``A`` is not a floating tensor, or an option has the wrong type.
    ValueError
        ``A`` has fewer than 2 dimensions or non-finite entries, or an option is out of range.

    Warns
    -----
    DegenerateGradientWarning
        In the backward pass, when the loss depends on the basis chosen inside a group of tied
        singular values, on the phase of complex singular vectors, or on the arbitrary basis of
        a null space; and when its cotangents have the structure of a reconstruction
        ``U diag(S) Vh`` at a tie (see Notes). The gradient returned is finite.

    Notes
    -----
    The gradient is exact for losses that are invariant under the free choices of the SVD and
    are not reconstructions: projectors onto blocks that do not split a tie or include null
    vectors, ``U @ Vh`` at full rank, functions of ``S`` alone, ``|u_iᴴ x|²`` of a separated
    ``σ_i`` — at every resolved σ, however small — and for losses that depend on the basis
    inside a near tie whose gap is resolved (accurate to about eps·σ_max/gap). It is *not*
    exact for reconstructions ``U diag(f(S)) Vh`` (``f(σ) = σ`` included, and truncations
    ``U_k S_k Vh_k``) at unresolved ties, where their gradient depends on f′, which no SVD
    backward sees, nor at numerically zero singular values, where their cotangents vanish and
    the gradient returned is that of the truncation to the numerical rank. Use
    :func:`torchsvd.low_rank` for truncations and :func:`torchsvd.svd_apply` for
    ``U diag(f(S)) Vh``. A warning is issued for a loss of
    ``U diag(S) Vh`` alone at a tie; other such losses are not recognised. For a real square
    matrix with a single zero singular value the signs of its singular vectors are free and
    ``U @ Vh`` jumps there; the warning is issued for losses of ``u_i v_iᵀ`` such as ``U @ Vh``
    (a heuristic: ``docs/math.md``); :func:`torchsvd.polar` always warns there. Under
    ``torch.compile`` the checks that issue these warnings are skipped.

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

    A resolved small singular value keeps its 1/σ: here d(U Vh)[2, 1]/dA[2, 1] = 1/σ_2 = 1e9.

    >>> A = torch.tensor([[1.0, 0.0], [0.0, 1e-9], [0.0, 0.0]], dtype=torch.float64)
    >>> A = A.requires_grad_()
    >>> U, S, Vh = torchsvd.svd(A)
    >>> (U @ Vh)[2, 1].backward()
    >>> f"{float(A.grad[2, 1]):.6e}"
    '1.000000e+09'

    References
    ----------
    .. [1] J. Townsend, "Differentiating the singular value decomposition", 2016.
    .. [2] PyTorch issue #49886 (NaN gradients at repeated singular values).
    """
    check_matrix(A, check_finite=not _is_meta(A))
    dtype = compute_dtype(A.dtype)
    tie_value = _check_options(tie_rtol, broadening, dtype)
    if not isinstance(full_matrices, bool):
        raise TypeError(f"full_matrices must be a bool, got {type(full_matrices).__name__}")
    work = A.to(dtype)
    if A.numel() == 0:
        U, S, Vh = torch.linalg.svd(work, full_matrices=full_matrices)
    elif _small.eligible(work, full_matrices):
        U, S, Vh = _small.svd(work, tie_value, float(broadening))
    else:
        U, S, Vh = _general(work, full_matrices, tie_value, float(broadening))
    if dtype != A.dtype:
        return U.to(A.dtype), S.to(A.dtype), Vh.to(A.dtype)
    return U, S, Vh


def _general(
    A: torch.Tensor, full_matrices: bool, tie_rtol: float, broadening: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The SVD of the general path, differentiated by the robust rule wherever it matters.

    Where the exact rule needs no mask for the whole batch (real, no pair inside the tie
    tolerance, no small σ: `_clear_values`) it is the textbook formula that torch's own
    ``svd_backward`` evaluates in C++, with fewer operations than a Python backward; there the
    factors keep torch's autograd graph. Anywhere else, and where the forward-mode rule or a
    transform may ask for the derivative, the factors already computed go to `_SVD`.
    """
    if torch.compiler.is_compiling():
        return _SVDReverse.apply(A, full_matrices, tie_rtol, broadening)
    if not _native_candidate(A, full_matrices, broadening):
        return _SVD.apply(A, full_matrices, tie_rtol, broadening)
    m, n = A.shape[-2], A.shape[-1]
    U, S, Vh = _decompose(A, full_matrices)
    if _clear_values(S, tie_rtol, rank_rtol(m, n, S.dtype), m != n, squares=True):
        return U, S, Vh
    given = (U.detach(), S.detach(), Vh.detach())
    return _SVD.apply(A, full_matrices, tie_rtol, broadening, given)


def _native_candidate(A: torch.Tensor, full_matrices: bool, broadening: float) -> bool:
    """Whether only plain reverse mode can differentiate this SVD, with the exact rule's
    textbook form where the spectrum is clear: real, unbroadened, no extra columns (whose
    cotangents torch drops), values readable, no transform, no forward-mode tangent."""
    m, n = A.shape[-2], A.shape[-1]
    return (
        A.requires_grad
        and torch.is_grad_enabled()
        and not A.is_complex()
        and broadening == 0
        and (not full_matrices or m == n)
        and _values_known(A)
        and not is_transformed(A)
        and not _has_tangent(A)
    )


def svdvals(A: torch.Tensor) -> torch.Tensor:
    r"""Singular values of ``(..., m, n)`` matrices, descending, with exact derivatives.

    Same result as :func:`torch.linalg.svdvals`. The gradient of a loss ℓ(S) is
    ``U diag(S̄) Vh``. Its derivative (the second derivative of ℓ(S(A))) is exact at separated
    spectra and, in reverse mode (``create_graph=True``), at ties and zeros too, where
    PyTorch's is NaN: the tie limits need the Hessian of ℓ in S, which is taken from ℓ's own
    graph (Lewis & Sendov 2001). Under ``torch.func`` transforms and in forward mode that graph
    is not available: the terms inside a tie are set to 0 there (exact only for a loss linear
    in S) and a `DegenerateGradientWarning` says so. A separable loss Σ g(σ_i) can always be
    differentiated twice exactly as the first derivative of ``svd_apply(A, g′)``, its gradient.

    Under ``torch.compile`` the values come from :func:`svd`: the same first derivative, and
    second derivatives exact at separated spectra only.

    At a tie, the gradient ``U diag(S̄) Vh`` itself is a derivative only when S̄ is equal on
    the tie (a loss symmetric in the tied values); otherwise (e.g. σ_1 alone at σ_1 = σ_2) it
    is one subgradient.

    Examples
    --------
    >>> import torch, torchsvd
    >>> torchsvd.svdvals(torch.tensor([[3.0, 0.0], [4.0, 0.0]]))
    tensor([5., 0.])

    The Hessian of ‖X‖_F² = Σ σ_i² is 2·I, also at the identity, where all σ are tied:

    >>> X = torch.eye(2, dtype=torch.float64, requires_grad=True)
    >>> (g,) = torch.autograd.grad(torchsvd.svdvals(X).pow(2).sum(), X, create_graph=True)
    >>> torch.autograd.grad(g[0, 1], X)[0]
    tensor([[0., 2.],
            [0., 0.]], dtype=torch.float64)

    References
    ----------
    .. [1] A. S. Lewis, H. S. Sendov, "Twice differentiable spectral functions", SIAM J. Matrix
           Anal. Appl. 23(2), 2001.
    """
    check_matrix(A, check_finite=not _is_meta(A))
    dtype = compute_dtype(A.dtype)
    out_dtype = real_dtype(A.dtype)
    work = A.to(dtype)
    if torch.compiler.is_compiling():
        # Dynamo cannot trace _SVDVals (it defines jvp); first derivatives are the same.
        return svd(A)[1]
    if A.numel() and (A.requires_grad or is_transformed(A) or _has_tangent(A)):
        return _SVDVals.apply(work)[0].to(out_dtype)
    try:
        return torch.linalg.svdvals(work).to(out_dtype)
    except torch.linalg.LinAlgError as err:
        raise ValueError(f"A: the SVD failed to converge ({err})") from err


def _is_meta(A: object) -> bool:
    """A meta tensor has a shape but no values: the value checks are skipped for it."""
    return isinstance(A, torch.Tensor) and A.is_meta


def _has_tangent(A: torch.Tensor) -> bool:
    import torch.autograd.forward_ad as fwAD

    return fwAD.unpack_dual(A).tangent is not None
