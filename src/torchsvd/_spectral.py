r"""Functions of the singular values, ``F(A) = U diag(f(σ)) Vᴴ``, with a derivative exact at ties.

Derivation (real or complex A = U Σ Vᴴ, reduced, k = min(m, n); seed ``002`` (Povey) for the real
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
float32). The named functions have closed forms instead: the polar factor (f = 1) has P = 0 and
Q = 2/(σ_i + σ_j); thresholding and clipping are piecewise linear, so P is the slope of the
common piece when σ_i and σ_j share one, and the quotient — whose two differences are then exact
— when they do not.

**Zero singular values.** Singular values σ ≤ rtol·σ_max, rtol = max(m, n)·eps, are numerically
zero (the SVD cannot resolve them) and are set to exactly 0 before f is applied. The limits used
there are f(σ)/σ → f′(0) (Q_ii and the rectangular terms), Q_ij → f′(0) when σ_i = σ_j = 0, and
P_ij → f′(0) at two zeros (a tie). They are the derivative of F when f(0) = 0. When f(0) ≠ 0
and A has a numerically zero singular value, F is not defined: U f(Σ) Vᴴ depends on the
arbitrary basis of the null spaces (the polar factor of a singular matrix is not unique). Then
the forward returns Σ_{σ_i > 0} f(σ_i) u_i v_iᴴ (the zero singular values are dropped — the
canonical partial isometry U_r V_rᴴ for ``polar``), warns with `DegenerateGradientWarning`, and
the backward uses the same formulas with f(0) replaced by 0 and f′(0) kept, which is finite but
is not a derivative (there is none).

**Double backward.** U, S, Vh enter the autograd graph through `torchsvd.svd`'s robust backward,
and the rule above is written with differentiable operations on them, so second derivatives
exist and are exact where the spectrum is separated. At exact ties they are finite but miss the
second-order divided-difference terms of f, which no SVD backward can see.

References
----------
.. [1] D. Povey, "Notes on derivatives of SVD", 2018 (seed ``002``).
.. [2] A. S. Lewis, H. S. Sendov, "Twice differentiable spectral functions", SIAM J. Matrix
       Anal. Appl. 23(2), 2001.
.. [3] N. J. Higham, "Functions of Matrices: Theory and Computation", SIAM 2008, §8 (polar
       decomposition) and §3.2 (divided differences).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from torchsvd._errors import DegenerateGradientWarning
from torchsvd._svd import _SVD, default_rtol
from torchsvd._validate import check_matrix, compute_dtype, is_transformed

__all__ = ["clip_singular_values", "polar", "svd_apply", "svt"]

Params = tuple[torch.Tensor | None, torch.Tensor | None]


def _near_tie_rtol(dtype: torch.dtype) -> float:
    """eps^{1/3}: the relative gap below which P uses ½(f′(σ_i) + f′(σ_j)) (module docstring)."""
    return float(torch.finfo(dtype).eps) ** (1.0 / 3.0)


def _zero_rtol(m: int, n: int, dtype: torch.dtype) -> float:
    """max(m, n)·eps: singular values below this times σ_max are numerically zero (as numpy)."""
    return max(m, n) * float(torch.finfo(dtype).eps)


def _masked_div(num: torch.Tensor, den: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """num/den, and 0 where the float mask ``drop`` is 1.

    Written as arithmetic with the denominator replaced by 1 where dropped (not ``where``,
    several times slower on CPU), so neither the value nor its derivatives (double backward)
    can be inf or NaN: the dropped entries are a finite quotient times 0.
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


class _Spec:
    """The scalar function f with its derivative and divided difference; one per public op.

    ``S`` below is a real tensor of singular values (..., k) in which the numerically zero ones
    are exactly 0; ``params`` are up to two real tensors that broadcast against S[..., 0].
    """

    name = "svd_apply"

    def values(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def derivative(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def divided_difference(self, pairs: _Pairs, params: Params) -> torch.Tensor:
        """P_ij = (f_i − f_j)/(σ_i − σ_j), P_ii = f′(σ_i); near ties ½(f′_i + f′_j)."""
        # Near ties relative to the mean (σ_i + σ_j)/2; two zeros are a tie (0 <= 0).
        near = (pairs.gap.abs() <= (0.5 * _near_tie_rtol(pairs.S.dtype)) * pairs.total).to(
            pairs.gap.dtype
        )
        return near * pairs.mean_slope + _masked_div(pairs.f_diff, pairs.gap, near)

    def param_partials(self, S: torch.Tensor, params: Params) -> Params:
        """∂f/∂p at S for each parameter p (None for an absent parameter)."""
        return None, None

    def undefined_at_zero(self, fS: torch.Tensor, params: Params) -> torch.Tensor:
        """Where f(0) ≠ 0, given f evaluated at zeros (bool, broadcastable to fS)."""
        return fS != 0


class _General(_Spec):
    """A user-supplied elementwise f, with f′ given or derived by forward-mode AD."""

    def __init__(
        self,
        f: Callable[[torch.Tensor], torch.Tensor],
        df: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> None:
        self.f = f
        self.df = df

    def values(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        return self.f(S).to(S.dtype)

    def derivative(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        if self.df is not None:
            return self.df(S).to(S.dtype)
        # f acts elementwise, so its Jacobian is diagonal and one vector-Jacobian product with
        # ones returns all of f′. Reverse mode, because torch.func.jvp cannot nest inside the
        # forward-mode AD that runs our own jvp rule.
        try:
            pullback = torch.func.vjp(self.f, S)[1]
            return pullback(torch.ones_like(S))[0].to(S.dtype)
        except Exception as err:  # whatever f raised, the fix is the same
            raise TypeError(
                "svd_apply: could not derive f′ with torch.func.vjp "
                f"({type(err).__name__}: {err}); pass its derivative as df"
            ) from err


class _Polar(_Spec):
    """f = 1: U Vᴴ; P = 0 off the zeros, Q = 2/(σ_i + σ_j)."""

    name = "polar"

    def values(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.ones_like(S)

    def derivative(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.zeros_like(S)

    def divided_difference(self, pairs: _Pairs, params: Params) -> torch.Tensor:
        # f is constant, so P vanishes except between a kept and a dropped (zero) singular
        # value, where fS is 1 and 0: P_ij = 1/σ_i = 1/(σ_i + σ_j) as σ_j = 0.
        zi, zj = pairs.split(pairs.S == 0)
        same = (zi == zj).to(pairs.total.dtype)
        return _masked_div(1 - same, pairs.total, same)

    def undefined_at_zero(self, fS: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.ones_like(fS, dtype=torch.bool)


class _PiecewiseLinear(_Spec):
    """f continuous and linear on pieces of [0, ∞): the divided difference is exact."""

    def region(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def divided_difference(self, pairs: _Pairs, params: Params) -> torch.Tensor:
        # Zero singular values form a piece of their own: when f(0) ≠ 0 they are dropped
        # (fS = 0), which breaks the linearity of the piece they would belong to.
        reg = self.region(pairs.S, params).masked_fill(pairs.S == 0, -1)
        ri, rj = pairs.split(reg)
        same = (ri == rj).to(pairs.gap.dtype)
        # Same piece: its slope (f′_i = f′_j). Different pieces: σ_i ≠ σ_j, and near the
        # kink between them both differences are of nearby numbers, hence exact (Sterbenz).
        return same * pairs.mean_slope + _masked_div(pairs.f_diff, pairs.gap, same)


class _Shrink(_PiecewiseLinear):
    """f(σ) = max(σ − τ, 0), singular value soft-thresholding."""

    name = "svt"

    def values(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        tau = _as_param(params[0])
        assert tau is not None  # svt always passes tau
        return torch.clamp_min(S - tau, 0)

    def region(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        tau = _as_param(params[0])
        assert tau is not None
        return (S >= tau).to(torch.int64)

    def derivative(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        # Right derivative at the kink σ = τ (so that τ = 0 gives the identity exactly).
        return self.region(S, params).to(S.dtype)

    def param_partials(self, S: torch.Tensor, params: Params) -> Params:
        tau = _as_param(params[0])
        assert tau is not None
        return -(S > tau).to(S.dtype), None

    def undefined_at_zero(self, fS: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.zeros_like(fS, dtype=torch.bool)  # τ ≥ 0, so f(0) = 0


class _Clip(_PiecewiseLinear):
    """f(σ) = clamp(σ, lo, hi); an absent bound is no bound."""

    name = "clip_singular_values"

    def values(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        if params[0] is None and params[1] is None:
            return S
        return torch.clamp(S, _as_param(params[0]), _as_param(params[1]))

    def region(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        lo, hi = _as_param(params[0]), _as_param(params[1])
        reg = torch.ones_like(S, dtype=torch.int64)
        if lo is not None:
            reg = torch.where(S < lo, 0, reg)
        if hi is not None:
            reg = torch.where(S > hi, 2, reg)
        return reg

    def derivative(self, S: torch.Tensor, params: Params) -> torch.Tensor:
        return (self.region(S, params) == 1).to(S.dtype)

    def param_partials(self, S: torch.Tensor, params: Params) -> Params:
        lo, hi = _as_param(params[0]), _as_param(params[1])
        dlo = None if lo is None else (S < lo).to(S.dtype)
        dhi = None if hi is None else (S > hi).to(S.dtype)
        return dlo, dhi

    def undefined_at_zero(self, fS: torch.Tensor, params: Params) -> torch.Tensor:
        lo = _as_param(params[0])
        if lo is None:
            return torch.zeros_like(fS, dtype=torch.bool)
        return (lo > 0).expand_as(fS)


def _snap_zeros(S: torch.Tensor, rtol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """S with the numerically zero singular values set to 0, and their mask."""
    zero = S <= rtol * S[..., :1]  # S is descending: σ_max first
    return S * ~zero, zero


class _Coefficients(NamedTuple):
    """What the linear map L_A needs, from `_coefficients`."""

    plus: torch.Tensor  # (P + Q)/2, batch-last (k, k, N)
    minus: torch.Tensor  # (P − Q)/2, batch-last (k, k, N)
    ratio: torch.Tensor  # f(σ)/σ (f′(0) at zeros), (..., k)
    ratio_last: torch.Tensor  # the same, batch-last (k, N)
    zero: torch.Tensor  # numerically zero singular values, bool (..., k)


def _coefficients(spec: _Spec, S: torch.Tensor, rtol: float, params: Params) -> _Coefficients:
    """The coefficients of L_A from the singular values; differentiable (double backward)."""
    S, zero = _snap_zeros(S, rtol)
    fS = spec.values(S, params) * ~zero
    pairs = _Pairs(S, fS, spec.derivative(S, params))
    P = spec.divided_difference(pairs, params)
    # σ_i + σ_j = 0 exactly when both are (snapped) zeros, where f_i + f_j = 0 too (dropped or
    # f(0) = 0): the quotient gives 0 there and the limit f′(0) is added.
    both_zero = (pairs.total == 0).to(pairs.total.dtype)
    Q = both_zero * pairs.mean_slope + pairs.f_sum / (pairs.total + both_zero)
    ratio_last = Q.diagonal().T  # Q_ii = f(σ_i)/σ_i, and f′(0) at zeros
    ratio = Q.diagonal().reshape(zero.shape)
    return _Coefficients(0.5 * (P + Q), 0.5 * (P - Q), ratio, ratio_last, zero)


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


def _param_term(partials: Params, tangents: Params, dtype: torch.dtype) -> torch.Tensor | None:
    """Σ_p ∂f/∂p · dp, the change of f(σ) due to the parameters (..., k), or None."""
    total = None
    for partial, dp in zip(partials, tangents, strict=True):
        if partial is None or dp is None:
            continue
        term = partial * dp.to(partial.dtype).unsqueeze(-1)
        total = term if total is None else total + term
    return total


class _SpectralFunction(torch.autograd.Function):
    """F = U diag(f(σ)) Vᴴ from A and its SVD; the derivative goes to A directly.

    U, S, Vh are inputs only so that the backward, written with differentiable operations on
    them, has a second derivative (through `torchsvd.svd`'s backward); their own gradients are
    None: the whole derivative of F with respect to A is returned for A.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        A: torch.Tensor,
        U: torch.Tensor,
        S: torch.Tensor,
        Vh: torch.Tensor,
        p0: torch.Tensor | None,
        p1: torch.Tensor | None,
        spec: _Spec,
        rtol: float,
    ) -> torch.Tensor:
        S0, zero = _snap_zeros(S, rtol)
        fS = spec.values(S0, (p0, p1)) * ~zero
        return (U * fS.unsqueeze(-2).to(U.dtype)) @ Vh

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _, U, S, Vh, p0, p1, spec, rtol = inputs
        ctx.spec = spec
        ctx.rtol = rtol
        ctx.param_shapes = tuple(None if p is None else p.shape for p in (p0, p1))
        ctx.save_for_backward(U, S, Vh, p0, p1)
        ctx.save_for_forward(U, S, Vh, p0, p1)

    # Ā = U [P∘sym(Γ) + Q∘skew(Γ)] Vᴴ + (I − UUᴴ) B̄ V diag(f/σ) Vᴴ + U diag(f/σ) Uᴴ B̄ (I − VVᴴ),
    # Γ = Uᴴ B̄ V (module docstring; DESIGN.md "Spectral functions"; Povey's notes eq. 34-36),
    # and p̄ = Σ_i Re(Γ_ii) ∂f/∂p(σ_i), summed over the batch dimensions p was broadcast along.
    @staticmethod
    def backward(ctx: Any, gF: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        U, S, Vh, p0, p1 = ctx.saved_tensors
        params = (p0, p1)
        c = _coefficients(ctx.spec, S, ctx.rtol, params)
        zero = c.zero
        gA = _spectral_map(U, Vh, gF, c) if ctx.needs_input_grad[0] else None
        grads: list[torch.Tensor | None] = [None, None]
        if any(ctx.needs_input_grad[4:6]):
            S0 = S * ~zero
            gamma_diag = ((U.mH @ gF) * Vh.conj()).sum(-1)  # diag(Uᴴ B̄ V) without forming Γ
            weight = gamma_diag.real if gamma_diag.is_complex() else gamma_diag
            for i, partial in enumerate(ctx.spec.param_partials(S0, params)):
                shape = ctx.param_shapes[i]
                if partial is None or shape is None or not ctx.needs_input_grad[4 + i]:
                    continue
                # A dropped zero singular value does not depend on the parameter.
                g = (weight * partial * ~zero).sum(-1)
                grads[i] = g.sum_to_size(shape)
        return gA, None, None, None, grads[0], grads[1], None, None

    @staticmethod
    def jvp(ctx: Any, dA: torch.Tensor | None, *tangents: Any) -> torch.Tensor:
        # dF = L_A(dA) + U diag(Σ_p ∂f/∂p dp) Vᴴ: the same self-adjoint map as the backward.
        U, S, Vh, p0, p1 = ctx.saved_tensors
        params = (p0, p1)
        c = _coefficients(ctx.spec, S, ctx.rtol, params)
        zero = c.zero
        if dA is None:
            dF = torch.zeros((*S.shape[:-1], U.shape[-2], Vh.shape[-1]), dtype=U.dtype)
        else:
            dF = _spectral_map(U, Vh, dA, c)
        S0 = S * ~zero
        dp = (tangents[3], tangents[4])
        df = _param_term(ctx.spec.param_partials(S0, params), dp, S.dtype)
        if df is not None:
            df = df * ~zero
            dF = dF + (U * df.unsqueeze(-2).to(U.dtype)) @ Vh
        return dF


class _SVDQuietZeros(_SVD):
    """`torchsvd.svd`'s Function, minus the work on all-zero cotangents.

    `_SpectralFunction` returns no gradient for U, S, Vh; without this the engine would still
    run a full SVD backward on zero-filled cotangents. Only a second derivative sends it any.
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
            return None, None, None, None
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
) -> torch.Tensor:
    """Evaluate f (and df) on the singular values and check they act elementwise; return f(S)."""
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
            # Change every other singular value: an elementwise f leaves the others' images
            # unchanged; a normalization, sort, cumulative sum or batch reduction does not.
            probe = S.flatten().clone()
            probe[1::2] += 1
            moved = f(probe.view_as(S)).flatten()[0::2].to(out.dtype)
            kept = out.flatten()[0::2]
            # Elementwise kernels give bitwise-equal results for equal inputs; the tolerant
            # comparison is only a fallback (it costs several passes).
            tol = float(torch.finfo(S.dtype).eps) ** 0.5
            if not torch.equal(moved, kept) and not torch.allclose(
                moved, kept, rtol=tol, atol=0, equal_nan=True
            ):
                raise ValueError(
                    "svd_apply: f must act elementwise on the singular values, but changing "
                    "some singular values changed f at others (f mixes entries, e.g. "
                    "normalizes, sorts or reduces)"
                )
    return out


def _run(
    A: torch.Tensor,
    spec: _Spec,
    params: tuple[object, object],
    names: tuple[str, str],
) -> torch.Tensor:
    """Validate, broadcast, decompose, warn where F is undefined, and apply the Function."""
    check_matrix(A)
    dtype = compute_dtype(A.dtype)
    real = dtype.to_real() if dtype.is_complex else dtype
    tensors: list[torch.Tensor | None] = [
        None if p is None else _real_param(p, name, spec.name, real, A.device)
        for p, name in zip(params, names, strict=True)
    ]
    lo, hi = tensors
    if lo is not None and hi is not None and not is_transformed(lo) and not is_transformed(hi):
        if lo.numel() and hi.numel() and bool((lo > hi).any()):
            raise ValueError(
                f"{spec.name}: {names[0]} must be <= {names[1]}, got {names[0]}={params[0]!r} "
                f"and {names[1]}={params[1]!r}"
            )
    m, n = A.shape[-2], A.shape[-1]
    try:
        batch = torch.broadcast_shapes(A.shape[:-2], *(p.shape for p in tensors if p is not None))
    except RuntimeError as err:
        raise ValueError(
            f"{spec.name}: the parameters must broadcast against the batch shape "
            f"{tuple(A.shape[:-2])} of A, got shapes "
            f"{[tuple(p.shape) for p in tensors if p is not None]}"
        ) from err
    work = A.to(dtype).expand(*batch, m, n)
    if work.numel() == 0:
        return work.clone().to(A.dtype)
    U, S, Vh = _SVDQuietZeros.apply(work, False, default_rtol(dtype), 0.0)
    rtol = _zero_rtol(m, n, real)
    S0, zero = _snap_zeros(S.detach(), rtol)
    if isinstance(spec, _General):
        fS = _check_f(spec.f, spec.df, S0)
    else:
        fS = S0
    if not is_transformed(S) and bool(zero.any()):
        p_now = (_detach(lo), _detach(hi))
        if bool((zero & spec.undefined_at_zero(fS, p_now)).any()):
            warnings.warn(
                f"{spec.name}: A has numerically zero singular values (<= {rtol:.1e}·σ_max) and "
                "f(0) != 0, so U f(S) Vh is not defined (it depends on the arbitrary basis of the "
                "null space); returning it with the zero singular values dropped, and a finite "
                "gradient that is not a derivative.",
                DegenerateGradientWarning,
                stacklevel=3,
            )
    F = _SpectralFunction.apply(work, U, S, Vh, lo, hi, spec, rtol)
    return F.to(A.dtype)


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
        torch operations (it is also applied to the singular values' autograd graph for second
        derivatives). It must not close over tensors that need gradients: those get none.
    df : callable, optional
        The derivative f′, elementwise. Derived with ``torch.func.vjp`` when omitted.

    Returns
    -------
    Tensor of shape ``(..., m, n)``, dtype of ``A``.

    Raises
    ------
    TypeError
        ``A`` is not a floating tensor, ``f`` or ``df`` is not callable or does not return a
        real floating tensor; in the backward, ``df`` is None and f′ cannot be derived with
        ``torch.func`` (e.g. ``f`` goes through numpy).
    ValueError
        ``A`` has fewer than 2 dimensions or non-finite entries; ``f`` changes the shape or is not
        elementwise (detected by changing half of the singular values on a probe).

    Warns
    -----
    DegenerateGradientWarning
        When ``f(0) != 0`` and ``A`` has numerically zero singular values (≤ max(m, n)·eps·σ_max):
        F is not defined there. The result drops those singular values, Σ_{σ_i>0} f(σ_i) u_i v_iᴴ,
        and the gradient is finite but is not a derivative.

    Notes
    -----
    Singular values ≤ max(m, n)·eps·σ_max are treated as exactly 0. Near ties (relative gap
    ≤ eps^{1/3}) the divided difference is ½(f′(σ_i) + f′(σ_j)), accurate to about eps^{2/3}
    relative for an f that varies on the scale of σ. f′ must be finite at the singular values
    (``sqrt`` at a zero singular value has no finite derivative and gives inf/NaN gradients).
    The forward-mode rule uses the same (self-adjoint) map; second derivatives go through
    `torchsvd.svd` and are exact at separated spectra, finite at ties.

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
    return _run(A, _General(f, df), (None, None), ("", ""))


def polar(A: torch.Tensor) -> torch.Tensor:
    r"""The orthogonal/unitary polar factor ``U Vh`` of ``A = U diag(S) Vh``.

    The nearest matrix with orthonormal columns (m ≥ n) or rows (m < n) to ``A`` in the Frobenius
    norm, ``A (AᴴA)^{-1/2}``. Its derivative (f = 1) has P = 0 and Q_ij = 2/(σ_i + σ_j): it is
    finite and exact at ties, e.g. at any orthogonal matrix, where PyTorch's is NaN.

    Parameters
    ----------
    A : Tensor of shape ``(..., m, n)``
        float32/float64/complex64/complex128 (float16/bfloat16 computed in float32).

    Returns
    -------
    Tensor of shape ``(..., m, n)``.

    Warns
    -----
    DegenerateGradientWarning
        When ``A`` has numerically zero singular values (≤ max(m, n)·eps·σ_max). The polar factor
        is then not unique; the canonical partial isometry ``U_r Vh_r`` over the r non-zero
        singular values is returned (Higham 2008, §8.1) and the gradient is finite.

    Examples
    --------
    >>> import torch, torchsvd
    >>> A = torch.tensor([[2.0, 0.0], [0.0, -3.0]], dtype=torch.float64)
    >>> torchsvd.polar(A)
    tensor([[ 1.,  0.],
            [ 0., -1.]], dtype=torch.float64)

    References
    ----------
    .. [1] N. J. Higham, "Functions of Matrices", SIAM 2008, Ch. 8.
    """
    return _run(A, _Polar(), (None, None), ("", ""))


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
    return _run(A, _Shrink(), (tau, None), ("tau", ""))


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
    return _run(A, _Clip(), (min, max), ("min", "max"))
