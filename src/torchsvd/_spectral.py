r"""Functions of the singular values, ``F(A) = U diag(f(σ)) Vᴴ``, with derivatives exact at ties.

This docstring is the one home of the derivations; ``docs/spectral.md`` explains their use.

**First order** (real or complex A = U Σ Vᴴ, reduced, k = min(m, n); Povey 2018 for the real
square case). With dP = Uᴴ dA V (k×k) the SVD perturbation rules (see ``torchsvd._svd``) give,
after the partial-fraction split of 1/(σ_j² − σ_i²),

    Uᴴ dF V = P∘sym(dP) + Q∘skew(dP),        sym(X) = (X + Xᴴ)/2,  skew(X) = (X − Xᴴ)/2,
    P_ij = (f(σ_i) − f(σ_j)) / (σ_i − σ_j),  P_ii = f′(σ_i)          (first divided difference)
    Q_ij = (f(σ_i) + f(σ_j)) / (σ_i + σ_j),  Q_ii = f(σ_i)/σ_i

and, for rectangular A, the part of dF outside the span of U (m > n) or V (m < n):

    (I − UUᴴ) dA V diag(f(σ)/σ) Vᴴ    (m > n),        U diag(f(σ)/σ) Uᴴ dA (I − VVᴴ)    (m < n).

The diagonal of Q∘skew(dP) is i·Im(dP_ii)·f(σ_i)/σ_i, the complex phase term. Unlike the SVD
backward, nothing here is singular at a tie: the two 1/(σ_i − σ_j) of dU and dV are multiplied
by f(σ_i) − f(σ_j) before they are ever formed, and P tends to f′ at a tie.

P and Q are real and symmetric and sym, skew are self-adjoint for ⟨X, Y⟩ = Re tr(XᴴY), so this
linear map L_A is its own adjoint: the forward-mode rule is dF = L_A(dA) and the reverse rule is
Ā = L_A(B̄) for the cotangent B̄ of F — one routine, `_spectral_map`, serves both.

**The dilation.** The Hermitian matrix H = [[0, A], [Aᴴ, 0]] has the eigenvalues ±σ_i, with
eigenvectors (u_i; ±v_i)/√2, and 0 on the null space (dimension |m − n|) of a rectangular A.
With g the odd extension of f (g(±σ) = ±f(σ), g(0) = 0), g(H) = [[0, F(A)], [F(A)ᴴ, 0]]: F is
a function of a Hermitian matrix, and the Daleckii–Krein formulas apply. Their first divided
differences g[σ_i, σ_j] = P_ij, g[σ_i, −σ_j] = Q_ij and g[σ_i, 0] = f(σ_i)/σ_i are the
coefficients above.

**Second order** (Lewis & Sendov 2001; Bhatia 1997, §V.3). With Ê = Wᴴ [[0, E], [Eᴴ, 0]] W in
the eigenvectors W of H and λ its eigenvalues,

    Wᴴ D²g(H)[X, Y] W = M,    M_ab = Σ_c g[λ_a, λ_c, λ_b] (X̂_ac Ŷ_cb + Ŷ_ac X̂_cb),

and D²F(A)[X, Y] is the upper right block of W M Wᴴ. The sum over the null space (a block with
the eigenvalue 0) is taken with the projector I − UUᴴ, never a basis of it, so the cost is a
few products of 2k×2k matrices and the memory O(k²) per matrix — no k³ tensor. The sum over c
is a matrix product once the second divided difference is split:

    apart (λ_a, λ_b not close):  Σ_c g[a, c, b] X_ac Y_cb = ((P∘X)Y − X(P∘Y))_ab / (λ_a − λ_b)
    close:                        ≈ ½ ((D∘X)Y + X(Dᵀ∘Y))_ab,   D_ac = g[λ_a, λ_a, λ_c],

the second from g[a, c, b] = ½(g[a, a, c] + g[b, b, c]) + O((λ_a − λ_b)²), exact at a tie. D_ac =
(g′(λ_a) − g[λ_a, λ_c])/(λ_a − λ_c), and its confluent limit (2g″(λ_a) + g″(λ_c))/6 when λ_a and
λ_c are close. "Close" is a relative gap ≤ eps^{1/4} (1.2e-4 in float64, 1.9e-2 in float32). For
an f that varies on the scale of σ the quotients are then accurate to about eps^{2/3}/eps^{1/4} =
eps^{5/12} relative (the first divided differences carry eps^{2/3}, below) and the confluent forms
to about (eps^{1/4})² = eps^{1/2}. Points apart relative to themselves but tiny next to σ_max (σ
just above the zero level, for an f smooth on the scale of σ_max) make the quotients cancel: their
rounding error, about eps·(|g′| + |g[λ_a, λ_c]|)/|λ_a − λ_c| (summed with |X|, |Y| in the
contraction), grows relative to the result as eps·σ_max/σ. It is estimated along with each
quotient, and the confluent form is used wherever the two agree to within four times it: where
they differ by more the quotient is the accurate one, and where they do not the confluent form
errs by at most five times the quotient's error, and by O(gap²) for an f smooth on that scale.
f″ is derived with ``torch.func.vjp`` of f′ (of ``df`` when
given); it is 0 for the named functions. The reverse rule needs no other formula: F is the
gradient of the spectral function Σ_i φ(σ_i) with φ′ = f, so ⟨C, D²F[X, Y]⟩ is symmetric in C, X
and Y, and the derivative in A of ⟨C, L_A(X)⟩ is D²F(A)[X, C]. Both `_SpectralMap`'s backward and
its forward-mode rule use `_second_order`. Third derivatives are not supported (the second-order
rule is not differentiable again).

For `svt` and `clip_singular_values` the derivative in a parameter p is U diag(∂f/∂p) Vᴴ;
∂f/∂p is piecewise constant in σ, on the pieces of f, so the mixed second derivatives are the
first-order map of ∂f/∂p, exact, and ∂²f/∂p² = 0 away from the kinks.

**Divided differences without cancellation.** Evaluated directly, P_ij loses digits when σ_i ≈ σ_j:
f(σ_i) and f(σ_j) each carry a rounding error of about eps·|f|, so the quotient has an absolute
error of about eps·|f|/|σ_i − σ_j|. The symmetric formula ½(f′(σ_i) + f′(σ_j)) has no
cancellation but a truncation error: with h = σ_i − σ_j and midpoint c,

    P_ij = f′(c) + f‴(c) h²/24 + O(h⁴),     ½(f′(σ_i) + f′(σ_j)) = f′(c) + f‴(c) h²/8 + O(h⁴),

so it is off by |f‴| h²/12. For f that varies on the scale of σ itself (|f‴| ≈ |f′|/σ²,
|f| ≈ σ|f′|: powers, exponentials of σ/σ_max, ...) both errors relative to |f′| are
eps·σ/|h| and (|h|/σ)²/12; they balance at |h| ≈ eps^{1/3}·σ. Hence: the symmetric formula is used
where |σ_i − σ_j| ≤ eps^{1/3}·(σ_i + σ_j)/2 (6e-6 in float64, 5e-3 in float32), the quotient
elsewhere, and either way the relative error of P is about eps^{2/3} (4e-11 in float64, 2e-5 in
float32). The named functions are piecewise linear (the polar factor, f = 1, has one piece), so
P is the slope of the common piece when σ_i and σ_j share one, and the quotient — whose two
differences are then exact — when they do not; the same holds for D on the dilation, where the
two branches ±σ count as different pieces. The polar factor thus has P = 0 and
Q = 2/(σ_i + σ_j).

**Zero singular values.** Singular values σ ≤ rtol·σ_max, rtol = max(m, n)·eps, are numerically
zero (the SVD cannot resolve them) and are set to exactly 0 before f is applied. The limits used
there are f(σ)/σ → f′(0) (Q_ii and the rectangular terms), Q_ij → f′(0) when σ_i = σ_j = 0, P_ij →
f′(0) at two zeros (a tie), and g″(0) = 0 (g is odd). They are the derivatives of F when f(0) = 0
(and, for the second order, f″(0) = 0: otherwise the odd extension is not twice differentiable at
0 and F has no second derivative at a rank-deficient A; the value with g″(0) = 0 is returned, with
a `DegenerateGradientWarning`). When f(0) ≠ 0 and A has a numerically zero singular value, F is
not defined: U f(Σ) Vᴴ depends on the arbitrary basis of the null spaces (the polar factor of a
singular matrix is not unique). Then the forward returns Σ_{σ_i > 0} f(σ_i) u_i v_iᴴ (the zero
singular values are dropped — the canonical partial isometry U_r V_rᴴ for ``polar``, the conjugate
transpose of the pseudo-inverse for f = 1/σ), warns with `DegenerateGradientWarning`, and treats
f, f′ and f″ as 0 at the dropped zeros: f is never evaluated there in a way that could reach the
result, so f(0) = ±inf gives finite values and derivatives. These are the derivatives of the
zero-dropped function Σ_{σ_i > c} f(σ_i) u_i v_iᴴ with any cutoff c between the zero and the
non-zero singular values, which is smooth near A (the zero-dropped function at constant rank: for
f = 1/σ, the derivative of ``torch.linalg.pinv``, Golub & Pereyra 1973).

**The nearest rotation** (``polar(A, special=True)``, real square A). With d = det(U Vᵀ) = ±1,
R = U diag(1, …, 1, d) Vᵀ is the polar factor of the signed SVD A = U′ Σ′ Vᵀ, U′ = U diag(1, …,
1, d), σ′_n = d·σ_n: f = 1 at signed singular values, so P = 0 and Q_ij = 2/(σ′_i + σ′_j), and
the second order is that of the dilation with the branch of (u′_n; ±v_n) carrying g = ±1. It is
finite except where σ′_{n−1} + σ′_n = 0 at the zero level, i.e. σ_{n−1} = σ_n with det A < 0 or
rank ≤ n − 2: the nearest rotation is then not unique; those coefficients are set to 0 and a
`DegenerateGradientWarning` is raised. With rank n − 1 it is unique and smooth (σ′_n = 0 is kept,
with f = 1). Kabsch 1976; Higham 2008, §8.

References
----------
.. [1] D. Povey, "Notes on derivatives of SVD", 2018.
.. [2] A. S. Lewis, H. S. Sendov, "Twice differentiable spectral functions", SIAM J. Matrix
       Anal. Appl. 23(2), 2001.
.. [3] N. J. Higham, "Functions of Matrices: Theory and Computation", SIAM 2008, §8 (polar
       decomposition) and §3.2 (divided differences).
.. [4] R. Bhatia, "Matrix Analysis", Springer 1997, §V.3 (derivatives of matrix functions).
.. [5] G. H. Golub, V. Pereyra, "The differentiation of pseudo-inverses and nonlinear least
       squares problems whose variables separate", SIAM J. Numer. Anal. 10(2), 1973.
.. [6] W. Kabsch, "A solution for the best rotation to relate two sets of vectors", Acta
       Cryst. A32, 1976.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from torchsvd import _small
from torchsvd._errors import DegenerateGradientWarning
from torchsvd._svd import _SVD, default_rtol
from torchsvd._validate import (
    check_matrix,
    compute_dtype,
    eps,
    is_transformed,
    rank_rtol,
    real_dtype,
)

__all__ = ["clip_singular_values", "polar", "svd_apply", "svt"]

Params = tuple[torch.Tensor | None, ...]  # in the order of `_Spec.params`; None: not given


def _near_tie_rtol(dtype: torch.dtype) -> float:
    """eps^{1/3}: the relative gap below which P uses ½(f′(σ_i) + f′(σ_j)) (module docstring)."""
    return eps(dtype) ** (1.0 / 3.0)


def _second_order_rtol(dtype: torch.dtype) -> float:
    """eps^{1/4}: the relative gap below which second divided differences use f″ (docstring)."""
    return eps(dtype) ** 0.25


#: Where a second divided difference's quotient and its confluent form agree to within this
#: many times the quotient's rounding error, the confluent form is used (`_second_order`).
_AGREE = 4.0


def _masked_div(num: torch.Tensor, den: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """num/den, and 0 where the float mask ``drop`` is 1.

    Written as arithmetic with the denominator replaced by 1 where dropped (not ``where``,
    several times slower on CPU), so that no dropped entry can be inf or NaN.
    """
    keep = 1 - drop
    return num / (den * keep + drop) * keep


class _Pairs:
    """Pairwise quantities (x_i, x_j) of the singular values, each computed once.

    Stored batch-last, (k, k, N) with N the flattened batch: broadcasting a (k, 1, N) against a
    (1, k, N) tensor runs over contiguous N-long rows, where (N, k, 1) against (N, 1, k) runs
    over rows of length k — 10-40 times slower for k = 3 or 8.
    """

    def __init__(self, S: torch.Tensor, fS: torch.Tensor, dfS: torch.Tensor) -> None:
        self.shape = S.shape
        self.S, self.fS, self.dfS = S, fS, dfS
        si, sj = self.split(S)
        fi, fj = self.split(fS)
        di, dj = self.split(dfS)
        self.gap = si - sj
        self.total = si + sj
        self.f_diff = fi - fj
        self.f_sum = fi + fj
        self.mean_slope = 0.5 * (di + dj)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_i, x_j) of shapes (k, 1, N) and (1, k, N) for x of shape (..., k)."""
        t = x.expand(self.shape).reshape(-1, self.shape[-1]).T.contiguous()
        return t.unsqueeze(1), t.unsqueeze(0)


def _as_param(x: torch.Tensor | None) -> torch.Tensor | None:
    # A scalar per matrix of the batch, lined up with the singular values (..., k).
    return None if x is None else x.unsqueeze(-1)


class _Param(NamedTuple):
    """A parameter of a spectral function: a non-negative real scalar or tensor."""

    name: str
    optional: bool = False  # None is accepted and means "no bound"


class _Spec:
    """The scalar function f, its derivatives, parameters and pieces; one per public op.

    ``S`` below is a real tensor of singular values (..., k) in which the numerically zero ones
    are exactly 0; ``p`` holds one real tensor (or None) per declared parameter, each
    broadcasting against S[..., 0].
    """

    name = "svd_apply"
    params: tuple[_Param, ...] = ()
    # True when f is linear on pieces labelled by `region`: then a divided difference between
    # two points of one piece is that piece's slope exactly, and of two pieces the quotient.
    piecewise = False

    def check_params(self, p: Params, given: tuple[object, ...]) -> None:
        """Checks that involve several parameters (each has been checked alone)."""

    def values(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        raise NotImplementedError

    def derivative(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        raise NotImplementedError

    def second_derivative(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        """f″ (zero for the piecewise linear functions, away from their kinks)."""
        return torch.zeros_like(S)

    def region(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        """The piece of each singular value (int), for a piecewise linear f."""
        raise NotImplementedError

    def param_partials(self, S: torch.Tensor, p: Params) -> Params:
        """∂f/∂p at S for each parameter (None for an absent one); piecewise constant in S."""
        return tuple(None for _ in self.params)

    def undefined_at_zero(self, f0: torch.Tensor, p: Params) -> torch.Tensor:
        """Where f(0) ≠ 0, given f evaluated at zeros (bool, broadcastable to f0)."""
        return f0 != 0


class _General(_Spec):
    """A user-supplied elementwise f, with f′ (and f″) given or derived by reverse-mode AD."""

    def __init__(
        self,
        f: Callable[[torch.Tensor], torch.Tensor],
        df: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> None:
        self.f = f
        self.df = df

    def values(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        return self.f(S).to(S.dtype)

    def _first(self, S: torch.Tensor) -> torch.Tensor:
        if self.df is not None:
            return self.df(S).to(S.dtype)
        # f acts elementwise, so its Jacobian is diagonal and one vector-Jacobian product with
        # ones returns all of f′. Reverse mode, because torch.func.jvp cannot nest inside the
        # forward-mode AD that runs our own jvp rule.
        pullback = torch.func.vjp(self.f, S)[1]
        return pullback(torch.ones_like(S))[0].to(S.dtype)

    def derivative(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        try:
            return self._first(S)
        except Exception as err:  # whatever f raised, the fix is the same
            raise TypeError(
                "svd_apply: could not derive f′ with torch.func.vjp "
                f"({type(err).__name__}: {err}); pass its derivative as df"
            ) from err

    def second_derivative(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        # The same vector-Jacobian product, of f′ (df when given, else the vjp of f above).
        try:
            pullback = torch.func.vjp(self._first, S)[1]
            return pullback(torch.ones_like(S))[0].to(S.dtype)
        except Exception as err:
            given = "df" if self.df is not None else "f"
            raise TypeError(
                "svd_apply: second derivatives need f″, which could not be derived from "
                f"{given} with torch.func.vjp ({type(err).__name__}: {err}); write {given} with "
                "differentiable torch operations"
            ) from err


class _Polar(_Spec):
    """f = 1: U Vᴴ; P = 0 between kept singular values, Q = 2/(σ_i + σ_j)."""

    name = "polar"
    piecewise = True  # one piece (constant), the dropped zeros another

    def values(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        return torch.ones_like(S)

    def derivative(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        return torch.zeros_like(S)

    def region(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        return torch.ones_like(S, dtype=torch.int64)

    def undefined_at_zero(self, f0: torch.Tensor, p: Params) -> torch.Tensor:
        return torch.ones_like(f0, dtype=torch.bool)


class _Rotation(_Polar):
    """The polar factor of the signed SVD A = U′ Σ′ Vᵀ (σ′_n = det(U Vᵀ)·σ_n): the nearest rotation.

    Its singular values come signed, and a zero one is kept: with rank n − 1 the nearest
    rotation is unique (its sign is fixed by det(U Vᵀ)).
    """

    name = "polar(special=True)"

    def undefined_at_zero(self, f0: torch.Tensor, p: Params) -> torch.Tensor:
        return torch.zeros_like(f0, dtype=torch.bool)


class _Shrink(_Spec):
    """f(σ) = max(σ − τ, 0), singular value soft-thresholding."""

    name = "svt"
    params = (_Param("tau"),)
    piecewise = True

    def values(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        return torch.clamp_min(S - _as_param(p[0]), 0)  # type: ignore[operator]

    def region(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        return (S >= _as_param(p[0])).to(torch.int64)  # type: ignore[operator]

    def derivative(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        # Right derivative at the kink σ = τ (so that τ = 0 gives the identity exactly).
        return self.region(S, p).to(S.dtype)

    def param_partials(self, S: torch.Tensor, p: Params) -> Params:
        return (-(S > _as_param(p[0])).to(S.dtype),)  # type: ignore[operator]

    def undefined_at_zero(self, f0: torch.Tensor, p: Params) -> torch.Tensor:
        return torch.zeros_like(f0, dtype=torch.bool)  # τ ≥ 0, so f(0) = 0


class _Clip(_Spec):
    """f(σ) = clamp(σ, lo, hi); an absent bound is no bound."""

    name = "clip_singular_values"
    params = (_Param("min", optional=True), _Param("max", optional=True))
    piecewise = True

    def check_params(self, p: Params, given: tuple[object, ...]) -> None:
        lo, hi = p
        if lo is None or hi is None or is_transformed(lo) or is_transformed(hi):
            return
        if lo.numel() and hi.numel() and bool((lo > hi).any()):
            raise ValueError(
                f"{self.name}: min must be <= max, got min={given[0]!r} and max={given[1]!r}"
            )

    def values(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        if p[0] is None and p[1] is None:
            return S
        return torch.clamp(S, _as_param(p[0]), _as_param(p[1]))

    def region(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        lo, hi = _as_param(p[0]), _as_param(p[1])
        reg = torch.ones_like(S, dtype=torch.int64)
        if lo is not None:
            reg = torch.where(S < lo, 0, reg)
        if hi is not None:
            reg = torch.where(S > hi, 2, reg)
        return reg

    def derivative(self, S: torch.Tensor, p: Params) -> torch.Tensor:
        return (self.region(S, p) == 1).to(S.dtype)

    def param_partials(self, S: torch.Tensor, p: Params) -> Params:
        lo, hi = _as_param(p[0]), _as_param(p[1])
        dlo = None if lo is None else (S < lo).to(S.dtype)
        dhi = None if hi is None else (S > hi).to(S.dtype)
        return dlo, dhi

    def undefined_at_zero(self, f0: torch.Tensor, p: Params) -> torch.Tensor:
        lo = _as_param(p[0])
        if lo is None:
            return torch.zeros_like(f0, dtype=torch.bool)
        return (lo > 0).expand_as(f0)


class _Points(NamedTuple):
    """f and f′ at the singular values, with the conventions at zeros (module docstring)."""

    S: torch.Tensor  # the singular values, the numerically zero ones exactly 0 (..., k)
    zero: torch.Tensor  # numerically zero (bool)
    drop: torch.Tensor  # zero where f(0) ≠ 0: f, f′ and f″ are taken as 0 there (bool)
    f: torch.Tensor
    df: torch.Tensor


def _values(
    spec: _Spec, S: torch.Tensor, rtol: float, p: Params
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """S with its numerically zero entries set to 0, their mask, the dropped ones, and f."""
    # |S|: the singular values of `polar(special=True)` come signed; S[..., 0] is the largest.
    zero = S.abs() <= rtol * S[..., :1].abs()
    S = S * ~zero
    fS = spec.values(S, p)
    drop = zero & spec.undefined_at_zero(fS, p)
    # `where`, not a product: f (and f′) may be infinite at a dropped zero (log, reciprocal).
    return S, zero, drop, torch.where(drop, 0, fS)


def _points(spec: _Spec, S: torch.Tensor, rtol: float, p: Params) -> _Points:
    S, zero, drop, f = _values(spec, S, rtol, p)
    return _Points(S, zero, drop, f, torch.where(drop, 0, spec.derivative(S, p)))


def _same_piece(spec: _Spec, pts: _Points, pairs: _Pairs, p: Params) -> torch.Tensor:
    """Pairs whose divided difference is ½(f′_i + f′_j), batch-last float mask (k, k, N)."""
    if spec.piecewise:
        # Zero singular values form a piece of their own: a dropped one (f = 0) breaks the
        # linearity of the piece it would belong to.
        reg = spec.region(pts.S.abs(), p).masked_fill(pts.zero, -1)
        ri, rj = pairs.split(reg)
        return (ri == rj).to(pairs.gap.dtype)
    # Near ties relative to the mean (σ_i + σ_j)/2; two zeros are a tie (0 <= 0).
    near = pairs.gap.abs() <= (0.5 * _near_tie_rtol(pts.S.dtype)) * pairs.total.abs()
    return near.to(pairs.gap.dtype)


class _Coefficients(NamedTuple):
    """What the linear map L_A needs, from `_first_order`."""

    plus: torch.Tensor  # (P + Q)/2, batch-last (k, k, N)
    minus: torch.Tensor  # (P − Q)/2, batch-last (k, k, N)
    ratio: torch.Tensor  # f(σ)/σ (f′(0) at zeros), (..., k)
    ratio_last: torch.Tensor  # the same, batch-last (k, N)


def _first_order(pairs: _Pairs, same: torch.Tensor, tol: torch.Tensor) -> _Coefficients:
    """P, Q and f/σ from the pairs of (σ, f, f′).

    ``same`` marks the pairs where P is the mean slope; ``tol`` (..., 1) is the zero level.
    """
    P = same * pairs.mean_slope + _masked_div(pairs.f_diff, pairs.gap, same)
    # |σ_i + σ_j| at the zero level: two zeros (limit f′(0)), or the signed pair of a
    # degenerate rotation (σ′_{n−1} = −σ′_n, no derivative: the polar slope 0 is used).
    ti, _ = pairs.split(tol.expand(pairs.shape))
    singular = (pairs.total.abs() <= ti).to(pairs.total.dtype)
    Q = singular * pairs.mean_slope + _masked_div(pairs.f_sum, pairs.total, singular)
    ratio_last = Q.diagonal().T  # Q_ii = f(σ_i)/σ_i, and f′(0) at zeros
    ratio = Q.diagonal().reshape(pairs.shape)
    return _Coefficients(0.5 * (P + Q), 0.5 * (P - Q), ratio, ratio_last)


class _Rule(NamedTuple):
    """First-order coefficients of f and of each ∂f/∂p, from `_rule`."""

    pts: _Points
    f: _Coefficients
    params: tuple[_Coefficients | None, ...]
    partials: Params  # ∂f/∂p at the singular values, 0 at dropped zeros


def _rule(spec: _Spec, S: torch.Tensor, rtol: float, p: Params, *, params: bool = True) -> _Rule:
    pts = _points(spec, S, rtol, p)
    tol = rtol * S[..., :1].abs()
    pairs = _Pairs(pts.S, pts.f, pts.df)
    same = _same_piece(spec, pts, pairs, p)
    coef = _first_order(pairs, same, tol)
    partials = tuple(
        None if d is None else torch.where(pts.drop, 0, d) for d in spec.param_partials(pts.S, p)
    )
    # ∂f/∂p is constant on each piece of f: the same pieces, slope 0.
    by_param = tuple(
        None
        if d is None or not params
        else _first_order(_Pairs(pts.S, d, torch.zeros_like(d)), same, tol)
        for d in partials
    )
    return _Rule(pts, coef, by_param, partials)


def _batch_last(X: torch.Tensor) -> torch.Tensor:
    """(..., a, b) -> (a, b, N), contiguous: elementwise k×k work runs over rows of length N."""
    return X.reshape(-1, *X.shape[-2:]).permute(1, 2, 0).contiguous()


def _batch_first(X: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """(a, b, N) -> (*batch, a, b), contiguous (batched matmul is slow on other strides)."""
    return X.permute(2, 0, 1).contiguous().reshape(*batch, X.shape[0], X.shape[1])


def _spectral_map(
    U: torch.Tensor, Vh: torch.Tensor, X: torch.Tensor, c: _Coefficients
) -> torch.Tensor:
    """L_A(X) = U [P∘sym(G) + Q∘skew(G)] Vᴴ + rectangular terms, G = Uᴴ X V.

    P∘sym(G) + Q∘skew(G) = plus∘G + minus∘Gᴴ with plus/minus = (P ± Q)/2. Four matrix
    products: the projection (I − UUᴴ) is folded into the k×k core, which is formed batch-last.
    """
    m, n = U.shape[-2], Vh.shape[-1]
    batch = U.shape[:-2]
    if _small.square(U, Vh) and X.shape == U.shape and X.dtype == U.dtype:
        # Large batches of real 2×2 and 3×3 matrices: the same products, entry by entry.
        G = _small.inner(U, X, Vh)
        return _small.sandwich(U, c.plus * G + c.minus * G.transpose(0, 1), Vh)
    if m >= n:  # V is square
        XV = X @ Vh.mH
        G = _batch_last(U.mH @ XV)
        core = c.plus * G + c.minus * G.transpose(0, 1).conj()
        if m == n:
            return U @ _batch_first(core, batch) @ Vh
        # (I − UUᴴ) X V diag(R) = X V diag(R) − U (G diag(R)), R on the columns
        core = core - G * c.ratio_last.unsqueeze(0)
        return (U @ _batch_first(core, batch) + XV * c.ratio.unsqueeze(-2)) @ Vh
    # m < n: U is square; diag(R) Uᴴ X (I − VVᴴ), R on the rows
    UhX = U.mH @ X
    G = _batch_last(UhX @ Vh.mH)
    core = c.plus * G + c.minus * G.transpose(0, 1).conj() - c.ratio_last.unsqueeze(1) * G
    return U @ (_batch_first(core, batch) @ Vh + c.ratio.unsqueeze(-1) * UhX)


def _lift(G: torch.Tensor) -> torch.Tensor:
    """Wᴴ [[0, X], [Xᴴ, 0]] W on the signed eigenvectors w = (u_i; ±v_i)/√2, G = Uᴴ X V."""
    herm, skew = 0.5 * (G + G.mH), 0.5 * (G - G.mH)
    return torch.cat([torch.cat([herm, -skew], -1), torch.cat([skew, -herm], -1)], -2)


def _blocks(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    k = M.shape[-1] // 2
    return M[..., :k, :k], M[..., :k, k:], M[..., k:, :k], M[..., k:, k:]


def _second_order(
    spec: _Spec,
    U: torch.Tensor,
    S: torch.Tensor,
    Vh: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    p: Params,
    rtol: float,
) -> torch.Tensor:
    """D²F(A)[X, Y], symmetric in X and Y, exact at ties (module docstring, "Second order").

    Written on the Hermitian dilation [[0, A], [Aᴴ, 0]], whose eigenvalues are ±σ_i (and 0 on
    the null space of a rectangular A), with g the odd extension of f: the second
    Daleckii–Krein formula, its sums over the middle index evaluated as matrix products.
    """
    m, n = U.shape[-2], Vh.shape[-1]
    if m < n:  # F(Aᴴ) = F(A)ᴴ
        return _second_order(spec, Vh.mH, S, U.mH, X.mH, Y.mH, p, rtol).mH
    pts = _points(spec, S, rtol, p)
    d2 = spec.second_derivative(pts.S, p)
    kept_zero = pts.zero & ~pts.drop
    if not is_transformed(d2) and bool((kept_zero & (d2 != 0)).any()):
        warnings.warn(
            f"{spec.name}: A has numerically zero singular values and f″(0) != 0, so F has no "
            "second derivative there (the odd extension of f is not twice differentiable at "
            "0); returning the one with f″(0) taken as 0.",
            DegenerateGradientWarning,
            stacklevel=2,
        )
    d2 = torch.where(pts.zero, 0, d2)  # g″(0) = 0: g is odd
    s = pts.S
    lam, g, g1, g2 = [
        torch.cat(x, -1) for x in ((s, -s), (pts.f, -pts.f), (pts.df, pts.df), (d2, -d2))
    ]
    labels = None
    if spec.piecewise:
        reg = (spec.region(s.abs(), p) + 1).masked_fill(pts.zero, 0)
        labels = torch.cat([reg, -reg], -1)
    k2 = lam.shape[-1]
    rect = m > n
    if rect:  # the null space of the dilation: eigenvalue 0, g = 0 there
        z = torch.zeros_like(s[..., :1])
        dz = spec.derivative(z, p)
        dz = torch.where(spec.undefined_at_zero(spec.values(z, p), p), 0, dz)
        lam, g, g1, g2 = [torch.cat(x, -1) for x in ((lam, z), (g, z), (g1, dz), (g2, z))]
        if labels is not None:
            labels = torch.cat([labels, torch.zeros_like(labels[..., :1])], -1)
    gap = lam.unsqueeze(-1) - lam.unsqueeze(-2)
    scale = lam.abs().unsqueeze(-1) + lam.abs().unsqueeze(-2)
    # Gaps at the zero level: ties of zeros, and the degenerate pair of a rotation.
    tiny = gap.abs() <= rtol * s[..., :1].abs().unsqueeze(-1)
    rel1, rel2 = 0.5 * _near_tie_rtol(s.dtype), 0.5 * _second_order_rtol(s.dtype)
    if labels is not None:
        same_label = labels.unsqueeze(-1) == labels.unsqueeze(-2)
        same1 = same2 = same_label | tiny
        near = (gap.abs() <= rel2 * scale) & same_label | tiny
    else:
        same1 = (gap.abs() <= rel1 * scale) | tiny
        same2 = near = (gap.abs() <= rel2 * scale) | tiny
    # First divided differences g[λ_a, λ_c] and the confluent second ones g[λ_a, λ_a, λ_c].
    P = torch.where(same1, 0.5 * (g1.unsqueeze(-1) + g1.unsqueeze(-2)), 0.0)
    P = P + (g.unsqueeze(-1) - g.unsqueeze(-2)) / torch.where(same1, 1, gap) * ~same1
    e = eps(s.dtype)
    # Rounding of P: eps·|g|/gap for the quotient, eps^{2/3} relative for the mean slope.
    g_abs = g.abs().unsqueeze(-1) + g.abs().unsqueeze(-2)
    P_err = torch.where(same1, e ** (2 / 3) * P.abs(), e * (P.abs() + g_abs / gap.abs()))
    P, gap, same2, near = P[..., :k2, :], gap[..., :k2, :], same2[..., :k2, :], near[..., :k2, :k2]
    P_err = P_err[..., :k2, :]
    confluent = (2 * g2[..., :k2].unsqueeze(-1) + g2.unsqueeze(-2)) / 6
    quotient = (g1[..., :k2].unsqueeze(-1) - P) / torch.where(same2, 1, gap)
    if labels is None:
        # Points apart relative to themselves but close on the scale on which f varies (tiny σ
        # next to σ_max for a smooth f): the quotient cancels, with an error of about
        # eps·(|f′| + |P|)/gap. Where it agrees with the confluent form to within that error,
        # the confluent form is the more accurate one (module docstring, "Second order").
        q_err = (e * g1[..., :k2].abs().unsqueeze(-1) + P_err) / gap.abs()
        same2 = same2 | ((quotient - confluent).abs() <= _AGREE * q_err)
    D = torch.where(same2, confluent, quotient)
    Pss, Dss, gss = P[..., :k2], D[..., :k2], torch.where(near, 1, gap[..., :k2])
    Perr_ss = P_err[..., :k2]

    def contract(Xh: torch.Tensor, Yh: torch.Tensor) -> torch.Tensor:
        # Σ_c g[λ_a, λ_c, λ_b] X_ac Y_cb. Apart: g[a, c, b] = (g[a, c] − g[c, b])/(λ_a − λ_b);
        # near: ½(g[a, a, c] + g[b, b, c]), accurate to O((λ_a − λ_b)²).
        apart = ((Pss * Xh) @ Yh - Xh @ (Pss * Yh)) / gss
        close = 0.5 * ((Dss * Xh) @ Yh + Xh @ (Dss.mT * Yh))
        if labels is not None:
            return torch.where(near, close, apart)
        # The quotient's rounding, summed over c, against its difference from the close form.
        Xa, Ya = Xh.abs().to(Perr_ss.dtype), Yh.abs().to(Perr_ss.dtype)
        err = ((Perr_ss * Xa) @ Ya + Xa @ (Perr_ss * Ya)) / gss.abs()
        use_close = near | ((apart - close).abs() <= _AGREE * err)
        return torch.where(use_close, close, apart)

    V = Vh.mH
    XV, YV = X @ V, Y @ V
    Gx, Gy = U.mH @ XV, U.mH @ YV
    Xh, Yh = _lift(Gx), _lift(Gy)
    M = contract(Xh, Yh) + contract(Yh, Xh)
    out: torch.Tensor | None = None
    if rect:
        # g[λ_a, 0, λ_b], the null space as the middle index.
        R, Dz, R_err = P[..., :k2, k2], D[..., k2], P_err[..., :k2, k2]
        Z_close = 0.5 * (Dz.unsqueeze(-1) + Dz.unsqueeze(-2))
        Z_apart = (R.unsqueeze(-1) - R.unsqueeze(-2)) / gss
        z_near = near
        if labels is None:
            z_err = (R_err.unsqueeze(-1) + R_err.unsqueeze(-2)) / gss.abs()
            z_near = near | ((Z_apart - Z_close).abs() <= _AGREE * z_err)
        Z = torch.where(z_near, Z_close, Z_apart)
        C = XV.mH @ YV - Gx.mH @ Gy  # Vᴴ Xᴴ (I − UUᴴ) Y V
        C = C + C.mH
        M = M + Z * 0.5 * torch.cat([torch.cat([C, -C], -1), torch.cat([-C, C], -1)], -2)

        def fold(W: torch.Tensor) -> torch.Tensor:
            a, b, c, d = _blocks(W)
            return 0.5 * (a - b - c + d)

        PX, PY = XV - U @ Gx, YV - U @ Gy  # (I − UUᴴ) X V
        out = PX @ fold(Z * Yh) + PY @ fold(Z * Xh)
    a, b, c, d = _blocks(M)
    core = U @ (0.5 * (a - b + c - d))
    return (core if out is None else core + out) @ Vh


def _inner_per_matrix(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Re tr(Xᴴ Y) for each matrix of the batch."""
    return (X.conj() * Y).real.sum((-2, -1))


def _zeros_like_output(U: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
    return torch.zeros((*U.shape[:-2], U.shape[-2], Vh.shape[-1]), dtype=U.dtype, device=U.device)


class _SpectralMap(torch.autograd.Function):
    """L_A(X), the derivative of F at A applied to X, with exact derivatives of its own.

    The backward of F (and its forward-mode rule). Its derivatives are second derivatives of
    F: in A, D²F(A)[X, ·] (`_second_order`, self-adjoint: ⟨C, D²F[X, Y]⟩ is symmetric in C, X
    and Y, as F is the gradient of Σ φ(σ_i) with φ′ = f); in X, L_A itself; in a parameter p,
    the map of ∂f/∂p. U, S, Vh get no gradient (the whole derivative goes to A), and the rule
    itself is not differentiable again (third derivatives are not supported).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        A: torch.Tensor,
        U: torch.Tensor,
        S: torch.Tensor,
        Vh: torch.Tensor,
        X: torch.Tensor,
        spec: _Spec,
        rtol: float,
        *p: torch.Tensor | None,
    ) -> torch.Tensor:
        if isinstance(spec, _Rotation) and _small.square(U, Vh) and X.dtype == U.dtype:
            return _small.rotation_map(U, S, Vh, X.expand_as(U), rtol)
        return _spectral_map(U, Vh, X, _rule(spec, S, rtol, p, params=False).f)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _, U, S, Vh, X, spec, rtol, *p = inputs
        ctx.spec, ctx.rtol = spec, rtol
        ctx.param_shapes = tuple(None if t is None else t.shape for t in p)
        ctx.save_for_backward(U, S, Vh, X, *p)
        ctx.save_for_forward(U, S, Vh, X, *p)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gG: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        U, S, Vh, X, *p = ctx.saved_tensors
        need_A, _, _, _, need_X, _, _, *need_p = ctx.needs_input_grad
        rule = _rule(ctx.spec, S, ctx.rtol, tuple(p), params=any(need_p))
        gA = _second_order(ctx.spec, U, S, Vh, X, gG, tuple(p), ctx.rtol) if need_A else None
        gX = _spectral_map(U, Vh, gG, rule.f) if need_X else None
        gp: list[torch.Tensor | None] = []
        for c, need, shape in zip(rule.params, need_p, ctx.param_shapes, strict=True):
            g = None
            if c is not None and need and shape is not None:
                g = _inner_per_matrix(X, _spectral_map(U, Vh, gG, c)).sum_to_size(shape)
            gp.append(g)
        return gA, None, None, None, gX, None, None, *gp

    @staticmethod
    def jvp(
        ctx: Any,
        dA: torch.Tensor | None,
        dU: Any,
        dS: Any,
        dVh: Any,
        dX: torch.Tensor | None,
        dspec: Any,
        drtol: Any,
        *dp: torch.Tensor | None,
    ) -> torch.Tensor:
        # U, S, Vh are functions of A: their tangents are part of dA's effect, already exact.
        U, S, Vh, X, *p = ctx.saved_tensors
        rule = _rule(ctx.spec, S, ctx.rtol, tuple(p))
        out = _zeros_like_output(U, Vh)
        if dA is not None:
            out = out + _second_order(ctx.spec, U, S, Vh, X, dA, tuple(p), ctx.rtol)
        if dX is not None:
            out = out + _spectral_map(U, Vh, dX, rule.f)
        for c, t in zip(rule.params, dp, strict=True):
            if c is not None and t is not None:
                out = out + _spectral_map(U, Vh, X, c) * t.unsqueeze(-1).unsqueeze(-1)
        return out


class _SpectralFunction(torch.autograd.Function):
    """F = U diag(f(σ)) Vᴴ from A and its SVD; the derivative goes to A directly.

    U, S, Vh are inputs so that the parameters' gradients, written with differentiable
    operations on them, have second derivatives (through `torchsvd.svd`'s backward; they are
    piecewise constant in σ, which that backward differentiates exactly). The derivative in A
    is `_SpectralMap`, whose own derivatives are exact.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        A: torch.Tensor,
        U: torch.Tensor,
        S: torch.Tensor,
        Vh: torch.Tensor,
        spec: _Spec,
        rtol: float,
        *p: torch.Tensor | None,
    ) -> torch.Tensor:
        f = _values(spec, S, rtol, p)[3]
        if _small.square(U, Vh):
            return _small.sandwich(U, _batch_last(f.unsqueeze(-1)).squeeze(1), Vh)
        return (U * f.unsqueeze(-2).to(U.dtype)) @ Vh

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        A, U, S, Vh, spec, rtol, *p = inputs
        ctx.spec, ctx.rtol = spec, rtol
        # Unmaterialized: with tangents on the parameters alone, dA is None and L_A is skipped.
        ctx.set_materialize_grads(False)
        ctx.param_shapes = tuple(None if t is None else t.shape for t in p)
        ctx.save_for_backward(A, U, S, Vh, *p)
        ctx.save_for_forward(A, U, S, Vh, *p)

    # Ā = U [P∘sym(Γ) + Q∘skew(Γ)] Vᴴ + (I − UUᴴ) B̄ V diag(f/σ) Vᴴ + U diag(f/σ) Uᴴ B̄ (I − VVᴴ),
    # Γ = Uᴴ B̄ V (module docstring; Povey's notes eq. 34-36), and
    # p̄ = Σ_i Re(Γ_ii) ∂f/∂p(σ_i), summed over the batch dimensions p was broadcast along.
    @staticmethod
    def backward(ctx: Any, gF: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        A, U, S, Vh, *p = ctx.saved_tensors
        if gF is None:
            return (None,) * (6 + len(p))
        need_A, _, _, _, _, _, *need_p = ctx.needs_input_grad
        gA = _SpectralMap.apply(A, U, S, Vh, gF, ctx.spec, ctx.rtol, *p) if need_A else None
        gp: list[torch.Tensor | None] = [None] * len(p)
        if any(need_p):
            partials = _rule(ctx.spec, S, ctx.rtol, tuple(p), params=False).partials
            gamma_diag = ((U.mH @ gF) * Vh.conj()).sum(-1)  # diag(Uᴴ B̄ V) without forming Γ
            weight = gamma_diag.real if gamma_diag.is_complex() else gamma_diag
            for i, (partial, need, shape) in enumerate(
                zip(partials, need_p, ctx.param_shapes, strict=True)
            ):
                if partial is not None and need and shape is not None:
                    gp[i] = (weight * partial).sum(-1).sum_to_size(shape)
        return gA, None, None, None, None, None, *gp

    @staticmethod
    def jvp(
        ctx: Any,
        dA: torch.Tensor | None,
        dU: Any,
        dS: Any,
        dVh: Any,
        dspec: Any,
        drtol: Any,
        *dp: torch.Tensor | None,
    ) -> torch.Tensor:
        # dF = L_A(dA) + U diag(Σ_p ∂f/∂p dp) Vᴴ: the same self-adjoint map as the backward.
        A, U, S, Vh, *p = ctx.saved_tensors
        if dA is None:
            dF = _zeros_like_output(U, Vh)
        else:
            dF = _SpectralMap.apply(A, U, S, Vh, dA, ctx.spec, ctx.rtol, *p)
        partials = _rule(ctx.spec, S, ctx.rtol, tuple(p), params=False).partials
        for partial, t in zip(partials, dp, strict=True):
            if partial is not None and t is not None:
                df = partial * t.to(partial.dtype).unsqueeze(-1)
                dF = dF + (U * df.unsqueeze(-2).to(U.dtype)) @ Vh
        return dF


class _SVDQuietZeros(_SVD):
    """`torchsvd.svd`'s Function, minus the work on all-zero cotangents.

    `_SpectralFunction` returns no gradient for U, S, Vh; without this the engine would still
    run a full SVD backward on zero-filled cotangents. Only the derivatives of the parameters'
    terms (p̄, and U diag(∂f/∂p dp) Vᴴ in the forward-mode rule) send it any.
    """

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _SVD.setup_context(ctx, inputs, output)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(
        ctx: Any, gU: torch.Tensor | None, gS: torch.Tensor | None, gVh: torch.Tensor | None
    ) -> Any:  # as _SVD.backward, or all None (no gradient to pass on)
        if gU is None and gS is None and gVh is None:
            return None, None, None, None, None
        return _SVD.backward(ctx, gU, gS, gVh)


def _real_param(
    x: object, name: str, op: str, real: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A non-negative real parameter (float or tensor) as a tensor of the compute dtype."""
    if isinstance(x, bool) or not isinstance(x, (int, float, torch.Tensor)):
        raise TypeError(f"{op}: {name} must be a float or a real tensor, got {type(x).__name__}")
    # A Python number goes straight to the compute dtype (through float32 it would be rounded).
    t = x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=real, device=device)
    if not t.dtype.is_floating_point and t.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{op}: {name} must be real, got dtype {t.dtype}")
    if not is_transformed(t) and t.numel():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{op}: {name} must be finite, got {x!r}")
        if bool((t < 0).any()):
            raise ValueError(
                f"{op}: {name} must be >= 0 (singular values are non-negative), got {x!r}"
            )
    return t.to(device=device, dtype=real)


def _check_f(
    f: Callable[[torch.Tensor], torch.Tensor],
    df: Callable[[torch.Tensor], torch.Tensor] | None,
    S: torch.Tensor,
) -> None:
    """Evaluate f (and df) on the singular values and check that they act elementwise."""
    if not callable(f):
        raise TypeError(f"svd_apply: f must be callable, got {type(f).__name__}")
    if df is not None and not callable(df):
        raise TypeError(f"svd_apply: df must be callable or None, got {type(df).__name__}")
    with torch.no_grad():
        out = f(S)
        for name, value in (("f", out), ("df", None if df is None else df(S))):
            if value is None and name == "df":
                continue
            if not isinstance(value, torch.Tensor):
                raise TypeError(
                    f"svd_apply: {name} must return a tensor, got {type(value).__name__}"
                )
            if value.shape != S.shape:
                raise ValueError(
                    f"svd_apply: {name} must act elementwise on the singular values and keep "
                    f"their shape {tuple(S.shape)}, but it returned shape {tuple(value.shape)}"
                )
            if not value.dtype.is_floating_point:
                raise TypeError(
                    f"svd_apply: {name} must return a real floating tensor, got {value.dtype}"
                )
        if S.numel() > 1 and not is_transformed(S):
            _check_elementwise(f, S, out)


def _check_elementwise(
    f: Callable[[torch.Tensor], torch.Tensor], S: torch.Tensor, out: torch.Tensor
) -> None:
    """Two probes that any function mixing entries fails (up to coincidences of values).

    Perturbation: change every other singular value; an elementwise f leaves the others'
    images unchanged, a normalization, cumulative sum or batch reduction does not. It misses
    maps that send even positions to even positions (a flip of 3 values). Permutation: f of
    the flattened values permuted must be f's values permuted alike; a flip, sort,
    roll or batch reduction fails it. Both run on distinct values (a tie hides a permutation).
    """
    flat = S.flatten()
    probe = flat.clone()
    # A change several times larger than the values: a fixed +1 is lost in rounding at large
    # scales, and a change of max(σ) only moves σ / max(σ) by a factor the tolerant comparison
    # below could miss.
    probe[1::2] = 2 * probe[1::2] + 1 + 4 * flat.abs().max()
    moved = f(probe.view_as(S)).flatten()
    tol = eps(S.dtype) ** 0.5

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        # Elementwise kernels give bitwise-equal results for equal inputs; the tolerant
        # comparison is only a fallback (it costs several passes).
        b = b.to(a.dtype)
        return torch.equal(a, b) or torch.allclose(a, b, rtol=tol, atol=0, equal_nan=True)

    kept = same(moved[0::2], out.flatten()[0::2])
    # Distinct, non-zero values for the permutation probe: the singular values spread by their
    # rank (non-zero, so that a map scaling by another entry, x_i·x_j, is not hidden by x_j = 0).
    count = flat.numel()
    steps = torch.arange(1, count + 1, dtype=flat.dtype, device=flat.device)
    spread = flat + steps * (1 + flat.abs().max())
    image = f(spread.view_as(S)).flatten()
    # One cycle through a fixed pseudo-random order (a shift would commute with maps that have
    # a period): no entry stays in place, so a map that reads another entry x_j sees it change.
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    perm = torch.empty_like(order)
    perm[order] = order.roll(-1)
    perm = perm.to(flat.device)
    permuted = f(spread[perm].view_as(S)).flatten()
    if not kept or not same(permuted, image[perm]):
        raise ValueError(
            "svd_apply: f must act elementwise on the singular values (each output entry a "
            "function of the same input entry alone), but it mixes entries (e.g. it "
            "normalizes, sorts, flips, accumulates or reduces)"
        )


def _run(
    A: torch.Tensor, spec: _Spec, given: tuple[object, ...], *, special: bool = False
) -> torch.Tensor:
    """Validate, broadcast, decompose, warn where F is undefined, and apply the Function."""
    check_matrix(A)
    dtype = compute_dtype(A.dtype)
    real = real_dtype(dtype)
    p: Params = tuple(
        None
        if x is None and decl.optional
        else _real_param(x, decl.name, spec.name, real, A.device)
        for x, decl in zip(given, spec.params, strict=True)
    )
    spec.check_params(p, given)
    m, n = A.shape[-2], A.shape[-1]
    present = [t for t in p if t is not None]
    try:
        batch = torch.broadcast_shapes(A.shape[:-2], *(t.shape for t in present))
    except RuntimeError as err:
        raise ValueError(
            f"{spec.name}: the parameters must broadcast against the batch shape "
            f"{tuple(A.shape[:-2])} of A, got shapes {[tuple(t.shape) for t in present]}"
        ) from err
    work = A.to(dtype).expand(*batch, m, n)
    if work.numel() == 0:
        return work.clone().to(A.dtype)
    if _small.eligible(work, False):
        U, S, Vh = _small.svd(work, default_rtol(dtype))
    else:
        U, S, Vh = _SVDQuietZeros.apply(work, False, default_rtol(dtype), 0.0)
    rtol = rank_rtol(m, n, real)
    if special:
        U, S = _signed_svd(U, S, Vh, rtol)
    if isinstance(spec, _General):
        S0 = S.detach()
        _check_f(spec.f, spec.df, S0 * (S0 > rtol * S0[..., :1]))
    drop = _values(spec, S.detach(), rtol, tuple(_detach(t) for t in p))[2]
    if not is_transformed(S) and bool(drop.any()):
        warnings.warn(
            f"{spec.name}: A has numerically zero singular values (<= {rtol:.1e}·σ_max) and "
            "f(0) != 0, so U f(S) Vh is not defined (it depends on the arbitrary basis of the "
            "null space); returning it with the zero singular values dropped, and the "
            "derivative of that zero-dropped function at constant rank.",
            DegenerateGradientWarning,
            stacklevel=3,
        )
    F = _SpectralFunction.apply(work, U, S, Vh, spec, rtol, *p)
    return F.to(A.dtype)


def _signed_svd(
    U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """A = U′ Σ′ Vᵀ with det(U′ Vᵀ) = +1: the last pair's sign flipped where det(U Vᵀ) < 0.

    Warns where the nearest rotation is not unique: σ′_{n−1} + σ′_n at the zero level
    (σ_{n−1} = σ_n with det A < 0, or rank ≤ n − 2).
    """
    n = S.shape[-1]
    with torch.no_grad():
        if n <= 3 and not U.is_complex():
            det = (_small.det(U) * _small.det(Vh)).sign()  # cofactors: no LU factorisation
        else:
            det = torch.linalg.det(U @ Vh).sign()
        flip = torch.ones_like(S)
        flip[..., -1] = torch.where(det < 0, -1.0, 1.0)
    U, S = U * flip.unsqueeze(-2), S * flip
    if n >= 2 and not is_transformed(S):
        pair = (S[..., -2] + S[..., -1]).detach().abs()
        if bool((pair <= rtol * S[..., 0].detach().abs()).any()):
            warnings.warn(
                "polar(special=True): the nearest rotation is not unique (σ_{n−1} = σ_n with "
                "det A < 0, or rank(A) <= n − 2); returning one of them, with a finite "
                "gradient that is not a derivative.",
                DegenerateGradientWarning,
                stacklevel=4,
            )
    return U, S


def _detach(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.detach()


def svd_apply(
    A: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    df: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    r"""Apply ``f`` to the singular values: ``U diag(f(S)) Vh``, differentiable exactly at ties.

    Composing ``torch.linalg.svd`` (or `torchsvd.svd`) with ``f`` gives the same value but a
    gradient that is NaN (PyTorch) or wrong (any SVD backward: it never sees f′) where singular
    values are equal. This function differentiates F(A) = U f(Σ) Vᴴ as a whole, with divided
    differences of f (module docstring of ``torchsvd._spectral``, ``docs/spectral.md``):

    .. math::

        \bar A = U\,[P∘\mathrm{sym}(Γ) + Q∘\mathrm{skew}(Γ)]\,V^H + \text{rectangular terms},
        \quad Γ = U^H \bar B V,\quad P_{ij} = \frac{f(σ_i) − f(σ_j)}{σ_i − σ_j},\quad
        Q_{ij} = \frac{f(σ_i) + f(σ_j)}{σ_i + σ_j}.

    Parameters
    ----------
    A : Tensor of shape ``(..., m, n)``
        float32, float64, complex64 or complex128; float16/bfloat16 are computed in float32 and
        the result cast back.
    f : callable
        Maps a real tensor of singular values to a tensor of the same shape, elementwise, with
        torch operations. It must not close over tensors that need gradients: those get none.
    df : callable, optional
        The derivative f′, elementwise. Derived with ``torch.func.vjp`` when omitted; second
        derivatives derive f″ the same way from ``df`` (or from f).

    Returns
    -------
    Tensor of shape ``(..., m, n)``, dtype of ``A``.

    Raises
    ------
    TypeError
        ``A`` is not a floating tensor, ``f`` or ``df`` is not callable or does not return a
        real floating tensor; in the backward, ``df`` is None and f′ cannot be derived with
        ``torch.func`` (e.g. ``f`` goes through numpy), or, in a second derivative, f″ cannot.
    ValueError
        ``A`` has fewer than 2 dimensions or non-finite entries; ``f`` changes the shape or is not
        elementwise (detected on two probes: half of the singular values changed, and the
        values permuted).

    Warns
    -----
    DegenerateGradientWarning
        When ``f(0) != 0`` and ``A`` has numerically zero singular values (≤ max(m, n)·eps·σ_max):
        F is not defined there. The result drops those singular values, Σ_{σ_i>0} f(σ_i) u_i v_iᴴ
        (finite even where f(0) is infinite: ``torch.reciprocal`` gives the conjugate transpose
        of the pseudo-inverse), and its derivatives are those of this zero-dropped function at
        constant rank (as ``torch.linalg.pinv``'s). In a second derivative: when f″(0) != 0 at
        a numerically zero singular value that is kept (f(0) = 0), where F has no second
        derivative.

    Notes
    -----
    Singular values ≤ max(m, n)·eps·σ_max are treated as exactly 0. Near ties (relative gap
    ≤ eps^{1/3}) the divided difference is ½(f′(σ_i) + f′(σ_j)), accurate to about eps^{2/3}
    relative for an f that varies on the scale of σ. f′ must be finite at the singular values
    (``sqrt`` at a zero singular value has no finite derivative and gives inf/NaN gradients).
    The forward-mode rule uses the same (self-adjoint) map. Second derivatives (double
    backward, forward over reverse, ``torch.func.hessian``) are exact at ties too, with second
    divided differences of f (near ties, relative gap ≤ eps^{1/4}, and wherever the quotients
    cancel, their confluent forms with f″); third derivatives are not supported. At a
    numerically zero singular value the second derivative assumes f″(0) = 0 (F has none
    otherwise, and a warning says so).

    Examples
    --------
    The matrix square root of an SPD matrix at the identity, where the naive composition's
    gradient is NaN; the derivative of √ at 1 is 1/2:

    >>> import torch, torchsvd
    >>> A = torch.eye(3, dtype=torch.float64, requires_grad=True)
    >>> F = torchsvd.svd_apply(A, torch.sqrt)
    >>> torch.allclose(F, torch.eye(3, dtype=torch.float64))
    True
    >>> F.trace().backward()
    >>> A.grad.diagonal()
    tensor([0.5000, 0.5000, 0.5000], dtype=torch.float64)

    References
    ----------
    .. [1] D. Povey, "Notes on derivatives of SVD", 2018.
    .. [2] A. S. Lewis, H. S. Sendov, "Twice differentiable spectral functions", 2001.
    """
    return _run(A, _General(f, df), ())


def polar(A: torch.Tensor, *, special: bool = False) -> torch.Tensor:
    r"""The polar factor ``U Vh`` of ``A = U diag(S) Vh``, or the nearest rotation.

    The nearest matrix with orthonormal columns (m ≥ n) or rows (m < n) to ``A`` in the Frobenius
    norm, ``A (AᴴA)^{-1/2}``. Its derivative (f = 1) has P = 0 and Q_ij = 2/(σ_i + σ_j): it is
    finite and exact at ties, e.g. at any orthogonal matrix, where PyTorch's is NaN.

    With ``special=True``: the nearest rotation (orthogonal, det = +1) to a real square ``A``,
    ``U diag(1, …, 1, det(U Vh)) Vh`` (Kabsch 1976), the polar factor of the signed SVD whose last
    singular value is det(U Vh)·σ_n; its derivative has P = 0 and Q_ij = 2/(σ′_i + σ′_j), finite
    and exact at rotations (all singular values tied).

    Parameters
    ----------
    A : Tensor of shape ``(..., m, n)``
        float32/float64/complex64/complex128 (float16/bfloat16 computed in float32); real and
        square (n×n) with ``special=True``.
    special : bool, default False
        Return the nearest rotation instead of the nearest orthogonal matrix.

    Returns
    -------
    Tensor of shape ``(..., m, n)``.

    Raises
    ------
    TypeError
        ``special`` is not a bool, or ``special=True`` with a complex ``A``.
    ValueError
        ``special=True`` with a non-square ``A``.

    Warns
    -----
    DegenerateGradientWarning
        When ``A`` has numerically zero singular values (≤ max(m, n)·eps·σ_max). The polar factor
        is then not unique; the canonical partial isometry ``U_r Vh_r`` over the r non-zero
        singular values is returned (Higham 2008, §8.1) and the gradient is finite. With
        ``special=True``: when the nearest rotation is not unique, σ_{n−1} = σ_n with
        det A < 0, or rank(A) ≤ n − 2 (one rotation is returned, with a finite gradient);
        rank n − 1 is fine.

    Examples
    --------
    >>> import torch, torchsvd
    >>> A = torch.tensor([[2.0, 0.0], [0.0, -3.0]], dtype=torch.float64)
    >>> torchsvd.polar(A)
    tensor([[ 1.,  0.],
            [ 0., -1.]], dtype=torch.float64)

    A reflection's nearest rotation flips the direction of the smallest singular value:

    >>> torchsvd.polar(A, special=True)
    tensor([[-1.,  0.],
            [ 0., -1.]], dtype=torch.float64)

    References
    ----------
    .. [1] N. J. Higham, "Functions of Matrices", SIAM 2008, Ch. 8.
    .. [2] W. Kabsch, "A solution for the best rotation to relate two sets of vectors", Acta
           Cryst. A32, 1976.
    """
    if not isinstance(special, bool):
        raise TypeError(f"polar: special must be a bool, got {type(special).__name__} {special!r}")
    if not special:
        return _run(A, _Polar(), ())
    check_matrix(A)
    if A.is_complex():
        raise TypeError(
            "polar: special=True (the nearest rotation, det = +1) needs a real matrix, got "
            f"dtype {A.dtype}"
        )
    if A.shape[-2] != A.shape[-1]:
        raise ValueError(
            "polar: special=True (the nearest rotation) needs square matrices, got shape "
            f"{tuple(A.shape)}"
        )
    return _run(A, _Rotation(), (), special=True)


def svt(A: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    r"""Singular value soft-thresholding ``U diag(max(S − τ, 0)) Vh``.

    The proximal operator of τ·‖·‖_* (nuclear norm), used in matrix completion and robust PCA.

    Parameters
    ----------
    A : Tensor of shape ``(..., m, n)``
    tau : float or Tensor
        Threshold ≥ 0; a tensor broadcasts against the batch shape ``A.shape[:-2]`` (the result
        has the broadcast batch shape) and receives a gradient,
        ∂F/∂τ = −Σ_{σ_i > τ} u_i v_iᴴ.

    Returns
    -------
    Tensor of shape ``(..., m, n)``.

    Notes
    -----
    f is piecewise linear: its divided differences are exact slopes, 1 between two singular
    values above τ, 0 between two below, the chord across the kink. At σ = τ the right
    derivative in σ (1) and in τ (0) is used.

    Examples
    --------
    >>> import torch, torchsvd
    >>> A = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64))
    >>> torchsvd.svt(A, 0.75).diagonal()
    tensor([2.2500, 0.2500, 0.0000], dtype=torch.float64)
    """
    return _run(A, _Shrink(), (tau,))


def clip_singular_values(
    A: torch.Tensor,
    min: float | torch.Tensor | None = None,
    max: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Clamp the singular values: ``U diag(clamp(S, min, max)) Vh``.

    Parameters
    ----------
    A : Tensor of shape ``(..., m, n)``
    min, max : float or Tensor, optional
        Bounds ≥ 0 with ``min <= max``; None means no bound. Tensors broadcast against the batch
        shape ``A.shape[:-2]`` and receive gradients (∂F/∂min = Σ_{σ_i < min} u_i v_iᴴ,
        ∂F/∂max = Σ_{σ_i > max} u_i v_iᴴ).

    Returns
    -------
    Tensor of shape ``(..., m, n)``.

    Warns
    -----
    DegenerateGradientWarning
        When ``min > 0`` and ``A`` has numerically zero singular values: F is then not defined
        (see `svd_apply`); those singular values are dropped.

    Notes
    -----
    f is piecewise linear, so its divided differences are exact slopes (see `svt`).

    Examples
    --------
    Bound the spectral norm of a matrix by 1 (a Lipschitz constraint):

    >>> import torch, torchsvd
    >>> A = torch.diag(torch.tensor([3.0, 0.5], dtype=torch.float64))
    >>> torchsvd.clip_singular_values(A, max=1.0)
    tensor([[1.0000, 0.0000],
            [0.0000, 0.5000]], dtype=torch.float64)
    """
    return _run(A, _Clip(), (min, max))
