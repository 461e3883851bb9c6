r"""``svds`` and ``spectral_norm``: top-k SVD of large or matrix-free operators, implicit backward.

Forward: thick-restarted block Golub–Kahan–Lanczos (``torchsvd._lanczos``), matrix-free, or for
a dense A with a short side the Gram-matrix path of ``torchsvd._gram``, whichever the cost model
of ``torchsvd._dispatch`` says is cheaper; both meet the same residual test.

Backward (real or complex A, top-k triplets A V = U Σ, Aᴴ U = V Σ, σ_1 ≥ … ≥ σ_k > σ_{k+1};
cotangents Ū (m×k), S̄ (k), V̄ (n×k)). Split each perturbation of u_i, v_i into its part inside
span(U), span(V) and its part in the complements. Inside, the derivative is the full-SVD rule
restricted to the k×k block (J = UᴴŪ − ŪᴴU, K = VᴴV̄ − V̄ᴴV, masked at ties, see
``torchsvd._svd``; for complex A the diagonal of ½ (J − K) ∘ E is its phase term):

    Ā_in = U [ ½ (J + K) ∘ D + ½ (J − K) ∘ E + diag(S̄) ] Vᴴ,
    D_ij = 1/(σ_j − σ_i),  E_ij = 1/(σ_j + σ_i).

Complement. Differentiating A v_i = σ_i u_i and Aᴴ u_i = σ_i v_i and projecting with
P_U = I − UUᴴ, P_V = I − VVᴴ (A maps the complement of V into the complement of U) gives, for
the complement parts du_i, dv_i,

    σ_i du_i − A dv_i = P_U dA v_i =: a_i,        σ_i dv_i − Aᴴ du_i = P_V dAᴴ u_i =: b_i,

so (σ_i² − AAᴴ) du_i = σ_i a_i + A b_i and (σ_i² − AᴴA) dv_i = σ_i b_i + Aᴴ a_i. Both operators
are positive definite on the complements (eigenvalues σ_i² − σ_j², j > k, and σ_i² on the null
spaces). Transposing, with x_i = (σ_i² − AAᴴ)⁻¹ P_U ū_i and y_i = (σ_i² − AᴴA)⁻¹ P_V v̄_i,

    Ā_out = X Σ Vᴴ + U (AᴴX)ᴴ + U Σ Yᴴ + (AY) Vᴴ = Z Vᴴ + U Wᴴ,
    z_i = σ_i x_i + A y_i,    w_i = Aᴴ x_i + σ_i y_i.

One solve suffices: by the push-through identity A (σ² − AᴴA)⁻¹ = (σ² − AAᴴ)⁻¹ A,

    z_i = (σ_i² − AAᴴ)⁻¹ (σ_i P_U ū_i + A P_V v̄_i),    w_i = (Aᴴ z_i + P_V v̄_i) / σ_i,

(check: σ_i w_i − Aᴴ z_i = (σ_i² − AᴴA) y_i = P_V v̄_i), or the mirror image in the n-space when
n < m. The solve is batched CG over the k columns (``torchsvd._cg``), two products with blocks of
k vectors per step, to relative residual ``tol`` (after the dense forward: preconditioned by the
forward's eigendecomposition of the short side's Gram matrix, ``torchsvd._gram``, a few steps
whatever the gap). The whole cotangent
is the rank-2k product

    Ā = [U, Z] [V Bᴴ + W, V]ᴴ,        B = the k×k bracket above,

which is multiplied out for a dense A, restricted to the pattern of a sparse A, and pushed to the
parameters of a `LinearOperator` by one differentiated ``matmat`` — never an m×n matrix.

No gap (σ_k = σ_{k+1}): the top-k subspace is not differentiable. The columns of the trailing
tie group get no complement term (the solve is singular there) and a `DegenerateGradientWarning`
is issued when their complement cotangent is not zero. A loss of S alone needs no solve at all
(Ā = U diag(S̄) Vᴴ, also a valid subgradient at ties).

References
----------
.. [1] R. Scholz, "Derivative of the first order SVD", 2023 (implicit differentiation of the top
       singular triplet).
.. [2] J. Townsend, "Differentiating the singular value decomposition", 2016.
.. [3] J. Haegeman et al., KrylovKit.jl ``svdsolve`` reverse rule (projected linear systems).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from torchsvd import _distributed
from torchsvd._cg import CGResult, projected_shifted_cg
from torchsvd._dispatch import METHODS, choose_method, densifiable, solve
from torchsvd._errors import ConvergenceError, DegenerateGradientWarning
from torchsvd._gram import GramEigen, gram_preconditioner
from torchsvd._operators import LinearOperator, _DenseOperator, aslinearoperator
from torchsvd._svd import default_rtol, svd_backward
from torchsvd._validate import all_finite, eps, rank_rtol

__all__ = ["default_tol", "spectral_norm", "svds"]

# Step budget of the preconditioned solve before plain CG takes over: with the forward's
# eigendecomposition it needs 1–2 steps in float64 and a few for a float32 A.
PRECONDITIONED_STEPS = 50


def default_tol(dtype: torch.dtype) -> float:
    """Default relative residual tolerance: eps^(3/4) (6.5e-6 for float32, 1.8e-12 for float64).

    Well above the rounding floor of the products (about eps·√(log n) relative), and tight
    enough that singular values (error ~ tol²·σ_1²/gap) are accurate to working precision.
    """
    return float(torch.finfo(dtype.to_real()).eps) ** 0.75


def default_maxiter(m: int, n: int) -> int:
    """Default iteration budget (block steps, and CG steps in the backward)."""
    return max(1000, min(m, n))


def _masked_reciprocals(
    S: torch.Tensor, tie_rtol: float, zero_rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """D_ij = 1/(σ_j − σ_i), zero at ties, and E_ij = 1/(σ_j + σ_i), zero for two zeros."""
    top = S[..., :1].unsqueeze(-1)
    diff = S.unsqueeze(-2) - S.unsqueeze(-1)
    total = S.unsqueeze(-2) + S.unsqueeze(-1)
    D = torch.where(diff.abs() > tie_rtol * top, diff, torch.inf).reciprocal()
    E = torch.where(total > zero_rtol * top, total, torch.inf).reciprocal()
    return D, E


def _solvable(
    S: torch.Tensor,
    next_sigma: torch.Tensor,
    shape: tuple[int, int],
    tie_rtol: float,
    zero_rtol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns whose complement system is positive definite, and the zero singular values.

    A zero σ_i (≤ zero_rtol·σ_1, the numerical-rank threshold) has singular vectors that are any
    orthonormal basis of the null spaces: no derivative. A nonzero one needs a gap to σ_{k+1};
    at k = min(m, n) there is no σ_{k+1}, and the complement is the null space of A or Aᴴ.
    """
    k = S.shape[-1]
    zero = S <= zero_rtol * S[..., :1]
    if k == min(shape):
        return ~zero, zero
    return (S - next_sigma.unsqueeze(-1) > tie_rtol * S[..., :1]) & ~zero, zero


def _complement(
    op: LinearOperator,
    Ur: torch.Tensor,
    Vr: torch.Tensor,
    S: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    solvable: torch.Tensor,
    *,
    tol: float,
    maxiter: int,
    eigen: GramEigen | None = None,
) -> tuple[torch.Tensor, torch.Tensor, CGResult | None]:
    """Rows of ``z_i = (σ_i² − AAᴴ)⁻¹ (σ_i a_i + A b_i)`` and ``w_i = (Aᴴ z_i + b_i) / σ_i``.

    ``a`` ⟂ U (rows, m-space), ``b`` ⟂ V (n-space). The backward calls it with the complement
    cotangents (``a = P_U ū``, ``b = P_V v̄``: z, w build Ā), the forward-mode rule with the
    complement tangents (``a = P_U dA v``, ``b = P_V dAᴴ u``: z, w are du⊥, dv⊥). The solve runs
    in the smaller space: for m > n the same formulas hold for Aᴴ with the roles of (U, a) and
    (V, b) exchanged. When k fills that space its complement is empty (A's range lies in
    span(U)): then x = 0 without a solve. Columns that are not ``solvable`` are zero.
    ``eigen``: the eigendecomposition of the Gram matrix of the space solved in (the forward
    took the dense path): CG preconditioned with it (`torchsvd._gram.gram_preconditioner`),
    and plain CG where that does not converge within `PRECONDITIONED_STEPS` steps.
    """
    m, n = op.shape[-2], op.shape[-1]
    if m > n:
        w, z, sol = _complement(
            op.H, Vr, Ur, S, b, a, solvable, tol=tol, maxiter=maxiter, eigen=eigen
        )
        return z, w, sol
    safe_s = torch.where(solvable, S, torch.ones_like(S)).unsqueeze(-1)
    keep = solvable.unsqueeze(-1)
    sol = None
    if S.shape[-1] < m:
        rhs = S.unsqueeze(-1) * a + op.matmat_rows(b)

        def gram(P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            AhP = op.rmatmat_rows(P)
            return op.matmat_rows(AhP), AhP

        def cg(precondition: Callable[[torch.Tensor], torch.Tensor] | None, steps: int) -> CGResult:
            return projected_shifted_cg(
                gram,
                S * S,
                rhs,
                Ur,
                Vr,
                active=solvable,
                tol=tol,
                maxiter=steps,
                space=op.spaces[0],
                aux_space=op.spaces[1],
                precondition=precondition,
            )

        sol = None
        if eigen is not None:
            k = S.shape[-1]
            sol = cg(gram_preconditioner(eigen, S * S, k, op.dtype), PRECONDITIONED_STEPS)
            if bool((solvable & ~sol.converged & ~sol.indefinite).any()):
                sol = None
        if sol is None:
            sol = cg(None, maxiter)
        z, Ahz = sol.x, sol.aux
    else:
        z, Ahz = torch.zeros_like(a), torch.zeros_like(b)
    w = (Ahz + b) / safe_s
    return torch.where(keep, z, 0.0), torch.where(keep, w, 0.0), sol


def _check_solve(sol: CGResult | None, solvable: torch.Tensor, tol: float, maxiter: int) -> None:
    if sol is None:
        return
    if bool(sol.indefinite.any()):
        warnings.warn(
            "svds backward: the complement system is not positive definite, so σ_k is "
            "(numerically) not separated from σ_{k+1}; the affected gradient terms are dropped.",
            DegenerateGradientWarning,
            stacklevel=5,
        )
    failed = solvable & ~sol.converged & ~sol.indefinite
    if bool(failed.any()):
        raise ConvergenceError(
            f"svds backward: CG did not reach relative residual {tol:.3g} in {maxiter} steps "
            f"(largest {float(sol.residuals.amax()):.3g}); the gap σ_k − σ_(k+1) is small. "
            "Raise maxiter or tol.",
            residuals=sol.residuals,
        )


def _topk_cotangent(
    op: LinearOperator,
    U: torch.Tensor,
    S: torch.Tensor,
    Vh: torch.Tensor,
    next_sigma: torch.Tensor,
    gU: torch.Tensor | None,
    gS: torch.Tensor | None,
    gVh: torch.Tensor | None,
    *,
    tol: float,
    maxiter: int,
    tie_rtol: float,
    zero_rtol: float,
    eigen: GramEigen | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(L, R)`` of ``Ā = L Rᴴ`` (module docstring), ``(..., m, 2k)``, ``(..., n, 2k)``.

    Vectors are handled as rows of plain (unconjugated) vectors, as in `torchsvd._lanczos`:
    ``Ur = Uᵀ``, ``Vr = Vᵀ = conj(Vh)``; for real tensors every ``conj`` is a no-op.
    """
    m, n = op.shape[-2], op.shape[-1]
    # Where the vectors live: U, Ū in the m-space, Vh, V̄ in the n-space (`torchsvd._space`).
    u_space, v_space = op.spaces
    k = S.shape[-1]
    Ur, Vr = U.mT, Vh.conj()
    if gU is not None and not u_space.any(gU):
        gU = None
    if gVh is not None and not v_space.any(gVh):
        gVh = None
    solvable, zero = _solvable(S, next_sigma, (m, n), tie_rtol, zero_rtol)
    UhgU = u_space.reduce(U.mH @ gU) if gU is not None else None  # Uᴴ Ū
    VhgV = v_space.reduce(Vh @ gVh.mH) if gVh is not None else None  # Vᴴ V̄, with V̄ = gVhᴴ
    # The k×k bracket is the reduced-SVD rule of the block: svd_backward with U = V = I_k and
    # the cotangents seen in those bases. Zero singular values are passed as exact zeros, so
    # that the block's rule treats them as zeros whatever its own threshold.
    eye = torch.eye(k, dtype=U.dtype, device=U.device).expand(*S.shape[:-1], k, k)
    S_block = torch.where(zero, 0.0, S)
    # The cotangents carry the rounding of the operator's own products (float32 ones for a
    # float32 operator seen in float64 bases): the warnings' thresholds follow that precision.
    inner = svd_backward(
        eye,
        S_block,
        eye,
        UhgU,
        gS,
        VhgV.mH if VhgV is not None else None,
        tie_rtol,
        noise=eps(op.product_dtype),
        # Ritz vectors inside a near tie are not accurate one by one: no near tie is resolved.
        resolved_rtol=tie_rtol,
    )
    right = inner.conj() @ Vr  # rows of V innerᴴ
    if gU is None and gVh is None:
        return U, right.mT

    # Rows of the complement parts (I − UUᴴ) Ū and (I − VVᴴ) V̄.
    ubar = gU.mT - UhgU.mT @ Ur if gU is not None and UhgU is not None else torch.zeros_like(Ur)
    vbar = (
        gVh.conj() - VhgV.mT @ Vr if gVh is not None and VhgV is not None else torch.zeros_like(Vr)
    )
    size = u_space.norm(ubar) + v_space.norm(vbar)
    cotangent = sum(
        float(space.norm(g).amax())  # the largest column norm of Ū, V̄
        for space, g in ((u_space, None if gU is None else gU.mT), (v_space, gVh))
        if g is not None
    )
    clear = size > 10 * tie_rtol * cotangent  # a complement cotangent above rounding
    if bool((zero & clear).any()):
        warnings.warn(
            "svds backward: A has rank < k, and the loss depends on the singular vectors of its "
            "zero singular values, which are any orthonormal basis of the null spaces; their "
            "complement terms are dropped (as torchsvd.svd does for zero singular values).",
            DegenerateGradientWarning,
            stacklevel=4,
        )
    if bool((~solvable & ~zero & clear).any()):
        warnings.warn(
            "svds backward: σ_k = σ_{k+1} (no gap after the k-th singular value), so the top-k "
            "singular vectors are not differentiable; the components of the gradient that "
            "depend on the choice inside the tie are dropped. Change k to end at a gap.",
            DegenerateGradientWarning,
            stacklevel=4,
        )
    z, w, sol = _complement(
        op, Ur, Vr, S, ubar, vbar, solvable, tol=tol, maxiter=maxiter, eigen=eigen
    )
    _check_solve(sol, solvable, tol, maxiter)
    L = torch.cat([Ur, z], dim=-2).mT
    R = torch.cat([right + w, Vr], dim=-2).mT
    return L, R


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype``, or in its real counterpart when ``t`` is real (singular values)."""
    return t.to(dtype if t.is_complex() else dtype.to_real())


def _safe_scale(op: LinearOperator) -> torch.Tensor | None:
    """A power of two per batch element that brings an extreme operator to size about 1.

    None when every batch element is within 2^±(emax/4) of 1 (emax: the exponent range of the
    products' dtype): there the squares the solver forms (Gram matrices, ‖·‖²) neither under-
    nor overflow and scaling is not needed. Powers of two scale exactly.
    """
    size = op._magnitude().to(op.dtype.to_real())
    limit = 2.0 ** (int(math.log2(torch.finfo(op.product_dtype.to_real()).max)) // 4)
    if not bool(((size > 0) & ((size < 1 / limit) | (size > limit))).any()):
        return None
    # At most 2^(emax−2) (a subnormal matrix of float32 would ask for more than float32 holds).
    emax = int(math.log2(torch.finfo(op.product_dtype.to_real()).max)) - 1
    exponent = torch.frexp(size).exponent.clamp(-emax, emax)
    return torch.where(size > 0, torch.ldexp(torch.ones_like(size), -exponent), 1.0)


def _applied(scale: torch.Tensor) -> torch.Tensor | None:
    """The saved scale, or None where the forward did not scale (all ones): no scaled view."""
    return None if bool((scale == 1).all()) else scale


def _working(op: LinearOperator, scale: torch.Tensor | None) -> LinearOperator:
    """The operator the solvers see: scaled by ``scale`` if given, with float64 bases."""
    return (op if scale is None else op.scaled(scale)).promoted()


class _NoDoubleBackward(torch.autograd.Function):
    """Passes a gradient through; differentiating it again raises a clear error."""

    @staticmethod
    def forward(grad: torch.Tensor, *cotangents: torch.Tensor) -> torch.Tensor:
        return grad.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise RuntimeError(
            "svds does not support double backward (a gradient of its gradient): the implicit "
            "backward solves a linear system whose own derivative is not implemented. "
            "Supported: backward, torch.func.grad/vjp, forward mode (jvp) and vmap for dense A; "
            "see docs/topk.md."
        )


class _SVDS(torch.autograd.Function):
    @staticmethod
    def forward(
        op: LinearOperator,
        k: int,
        tol: float,
        maxiter: int,
        v0: torch.Tensor | None,
        method: str,
        *params: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """``(U, S, Vh, σ_{k+1} estimate, scale, Gram eigenvalues, Gram eigenvectors)``, the
        last four non-differentiable; the last two are the dense path's `GramEigen` (of the
        scaled matrix), empty after the Krylov path."""
        op = op._with_params(params)  # under torch.func the params arrive unwrapped
        *batch, m, n = op.shape
        dtype, device = op.dtype, op.device
        real = dtype.to_real()
        no_eigen = (
            torch.zeros((*batch, 0), dtype=real, device=device),
            torch.zeros((*batch, 0, 0), dtype=dtype, device=device),
        )
        if device.type == "meta" or math.prod(batch) == 0:
            # Shapes only (meta tensors have no values; an empty batch has no matrices).
            return (
                torch.zeros((*batch, m, k), dtype=dtype, device=device),
                torch.zeros((*batch, k), dtype=real, device=device),
                torch.zeros((*batch, k, n), dtype=dtype, device=device),
                torch.zeros(batch, dtype=real, device=device),
                torch.ones(batch, dtype=real, device=device),
                *no_eigen,
            )
        scale = _safe_scale(op)
        unit = torch.ones(batch, dtype=real, device=device) if scale is None else scale
        try:
            work = _working(op, scale)
            res, eigen = solve(op, work, scale, k, tol=tol, maxiter=maxiter, v0=v0, method=method)
        except ConvergenceError as err:
            if isinstance(err.result, tuple):  # the partial result in the input's precision
                U, S, Vh = err.result
                err.result = (_cast(U, dtype), _cast(S / unit[..., None], dtype), _cast(Vh, dtype))
                if isinstance(err.residuals, torch.Tensor):
                    err.residuals = _cast(err.residuals, dtype)
            raise
        return (
            _cast(res.U, dtype),
            _cast(res.S / unit[..., None], dtype),
            _cast(res.Vh, dtype),
            _cast(res.next_sigma / unit, dtype),
            unit,
            *(no_eigen if eigen is None else (eigen.values, eigen.vectors)),
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        op, _, tol, maxiter, _, _, *params = inputs
        ctx.mark_non_differentiable(*output[3:])
        ctx.op, ctx.tol, ctx.maxiter = op._with_params(params), tol, maxiter
        ctx.save_for_backward(*output)
        ctx.save_for_forward(*output)

    @staticmethod
    def backward(
        ctx: Any,
        gU: torch.Tensor | None,
        gS: torch.Tensor | None,
        gVh: torch.Tensor | None,
        *_: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        needs = ctx.needs_input_grad[6:]
        incoming = [g for g in (gU, gS, gVh) if g is not None and g.requires_grad]
        try:
            with torch.no_grad():
                grads = _backward(ctx, gU, gS, gVh, needs)
        except RuntimeError as err:
            if not str(err).startswith("vmap:"):
                raise
            # The backward's iteration is data-dependent: vmap cannot trace it.
            raise NotImplementedError(
                "svds: the backward cannot run under torch.func.vmap (vmap over grad, e.g. "
                "per-sample gradients); vmap the forward instead (the gradient of a vmapped "
                "svds works) or loop. See docs/topk.md (torch.func)."
            ) from err
        if torch.is_grad_enabled() and any(needs):  # create_graph: guard the second derivative
            # The saved U ties the guard to A, so that a second derivative reaches it.
            ties = (*incoming, ctx.saved_tensors[0])
            grads = tuple(None if g is None else _NoDoubleBackward.apply(g, *ties) for g in grads)
        return (None, None, None, None, None, None, *grads)

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> tuple[torch.Tensor | None, ...]:
        return _jvp(ctx, tangents[6:])

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple[int | None, ...],
        op: LinearOperator,
        k: int,
        tol: float,
        maxiter: int,
        v0: torch.Tensor | None,
        method: str,
        *params: torch.Tensor,
    ) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
        # The vmapped dimension becomes a batch dimension of a dense A (svds is batched).
        if not isinstance(op, _DenseOperator):
            raise NotImplementedError(_TRANSFORMS)
        A = _batch_first(params[0], in_dims[6], info.batch_size)
        rows = None if v0 is None else _batch_first(v0, in_dims[4], info.batch_size)
        out = _SVDS.apply(_DenseOperator(A), k, tol, maxiter, rows, method, A)
        return out, (0,) * len(out)


_TRANSFORMS = (
    "svds supports torch.func.vmap and forward-mode AD (torch.func.jvp, torch.autograd."
    "forward_ad) for dense tensors only, not for sparse tensors or LinearOperators; "
    "see docs/topk.md (torch.func)."
)


def _batch_first(t: torch.Tensor, dim: int | None, size: int) -> torch.Tensor:
    if dim is None:
        return t.expand(size, *t.shape)
    return t.movedim(dim, 0)


def _eigen(values: torch.Tensor, vectors: torch.Tensor) -> GramEigen | None:
    """The forward's `GramEigen` from its saved outputs; None after the Krylov path."""
    return GramEigen(values, vectors) if values.shape[-1] > 0 else None


def _backward(
    ctx: Any,
    gU: torch.Tensor | None,
    gS: torch.Tensor | None,
    gVh: torch.Tensor | None,
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, ...]:
    U, S, Vh, next_sigma, scale, *eigen = ctx.saved_tensors
    m, n = ctx.op.shape[-2], ctx.op.shape[-1]  # (U and Vh may hold one process's entries)
    if U.device.type == "meta" or S.numel() == 0:
        L = torch.zeros((*U.shape[:-1], 2 * S.shape[-1]), dtype=U.dtype, device=U.device)
        R = torch.zeros((*Vh.shape[:-2], n, 2 * S.shape[-1]), dtype=U.dtype, device=U.device)
        return ctx.op.param_grads(L, R, needs)
    # The solve runs on the scaled operator c A (singular values c σ, the same vectors, S̄ / c);
    # its cotangent maps back to A's through the scaled view's param_grads.
    work = _working(ctx.op, _applied(scale))
    c = _cast(scale, work.dtype).unsqueeze(-1)

    def up(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else _cast(t, work.dtype)

    U, S, Vh, next_sigma = (_cast(t, work.dtype) for t in (U, S, Vh, next_sigma))
    gS_work = None if gS is None else _cast(gS, work.dtype) / c
    L, R = _topk_cotangent(
        work,
        U,
        S * c,
        Vh,
        next_sigma * c.squeeze(-1),
        up(gU),
        gS_work,
        up(gVh),
        tol=ctx.tol,
        maxiter=ctx.maxiter,
        tie_rtol=default_rtol(ctx.op.dtype),
        zero_rtol=rank_rtol(m, n, ctx.op.dtype),
        eigen=_eigen(*eigen),
    )
    # Detached: the saved outputs carry this node as grad_fn, and param_grads differentiates
    # with grad mode on; Ā must enter it as a constant (else autograd runs this backward again).
    return work.param_grads(L.detach(), R.detach(), needs)


def _jvp(ctx: Any, tangents: tuple[Any, ...]) -> tuple[torch.Tensor | None, ...]:
    """Forward-mode rule (dense A): the k×k block of the SVD's rule, and the complement solve.

    dP = Uᴴ dA V; dσ_i = Re dP_ii; inside the block Ω_U = Uᴴ dU, Ω_V = Vᴴ dV are
    ½ ((dP + dPᴴ) ∘ D ± (dP − dPᴴ) ∘ E) (``torchsvd._svd``); the complement parts solve the
    same projected systems as the backward (`_complement`) with a = P_U dA v_i, b = P_V dAᴴ u_i.
    """
    if not isinstance(ctx.op, _DenseOperator):
        raise NotImplementedError(_TRANSFORMS)
    U, S, Vh, next_sigma, scale, *eigen = ctx.saved_tensors
    dA = tangents[0]
    if dA is None:
        return (torch.zeros_like(U), torch.zeros_like(S), torch.zeros_like(Vh), *(None,) * 4)
    m, n = U.shape[-2], Vh.shape[-1]
    dtype = ctx.op.dtype
    work = _working(_DenseOperator(ctx.op.matrix.detach()), _applied(scale))
    c = _cast(scale, work.dtype).unsqueeze(-1)
    U, S, Vh, next_sigma = (_cast(t, work.dtype) for t in (U, S, Vh, next_sigma))
    S, next_sigma = S * c, next_sigma * c.squeeze(-1)
    dA = _cast(dA, work.dtype) * c.unsqueeze(-1)
    tie_rtol, zero_rtol = default_rtol(dtype), rank_rtol(m, n, dtype)
    V = Vh.mH
    dAV, dAhU = dA @ V, dA.mH @ U
    dP = U.mH @ dAV
    D, E = _masked_reciprocals(S, tie_rtol, zero_rtol)
    sym, skew = (dP + dP.mH) * D, (dP - dP.mH) * E
    omega_u, omega_v = 0.5 * (sym + skew), 0.5 * (sym - skew)
    dS = dP.diagonal(dim1=-2, dim2=-1).real
    solvable, _ = _solvable(S, next_sigma, (m, n), tie_rtol, zero_rtol)
    Ur, Vr = U.mT, Vh.conj()
    a = (dAV - U @ dP).mT  # rows of P_U dA v_i
    b = (dAhU - V @ dP.mH).mT  # rows of P_V dAᴴ u_i
    du, dv, sol = _complement(
        work, Ur, Vr, S, a, b, solvable, tol=ctx.tol, maxiter=ctx.maxiter, eigen=_eigen(*eigen)
    )
    _check_solve(sol, solvable, ctx.tol, ctx.maxiter)
    dU = U @ omega_u + du.mT
    dVh = (V @ omega_v + dv.mT).mH
    return (_cast(dU, dtype), _cast(dS / c, dtype), _cast(dVh, dtype), *(None,) * 4)


def _check_options(
    k: object, tol: object, maxiter: object, shape: torch.Size
) -> tuple[int, float | None, int | None]:
    m, n = shape[-2], shape[-1]
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= min(m, n):
        raise ValueError(
            f"k must satisfy 1 <= k <= min(m, n) = {min(m, n)} for a {m}x{n} matrix, got k={k}"
        )
    if tol is not None and (
        isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1
    ):
        raise ValueError(f"tol must be a float in (0, 1) (relative to σ_1), got {tol!r}")
    if maxiter is not None and (
        isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1
    ):
        raise ValueError(f"maxiter must be a positive int, got {maxiter!r}")
    return k, None if tol is None else float(tol), maxiter


def _check_v0(v0: object, op: LinearOperator) -> torch.Tensor | None:
    if v0 is None:
        return None
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"v0 must be a tensor (a previous Vh), got {type(v0).__name__}")
    n = op.shape[-1]
    rows = v0.unsqueeze(-2) if v0.ndim == len(op.batch_shape) + 1 else v0
    if (
        rows.ndim != len(op.shape)
        or rows.shape[-1] != n
        or rows.shape[:-2] != op.batch_shape
        or rows.shape[-2] == 0
    ):
        batch = "".join(f"{b}, " for b in op.batch_shape)
        raise ValueError(
            f"v0 must be p >= 1 rows of a guess of Vh, of shape ({batch}p, {n}), or one row of "
            f"shape ({batch}{n}), for an operator of shape {tuple(op.shape)}; got shape "
            f"{tuple(v0.shape)}"
        )
    if v0.is_complex() and not op.dtype.is_complex:
        raise TypeError(f"v0 is complex ({v0.dtype}) but A is real ({op.dtype})")
    if not all_finite(v0):
        raise ValueError("v0 contains NaN or infinite entries")
    return rows.detach().to(device=op.device, dtype=op.dtype)


def svds(
    A: torch.Tensor | LinearOperator,
    k: int,
    *,
    tol: float | None = None,
    maxiter: int | None = None,
    v0: torch.Tensor | None = None,
    method: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The k largest singular triplets of a dense, sparse or matrix-free A, differentiable.

    Matrix-free: ``A`` is touched only through products with blocks of vectors (thick-restarted
    block Lanczos bidiagonalization), and the backward solves a few projected linear systems by
    conjugate gradients instead of differentiating through the iterations (implicit
    differentiation; derivation in the ``torchsvd._topk`` module docstring and ``docs/topk.md``).

    Parameters
    ----------
    A : Tensor ``(..., m, n)``, sparse COO/CSR Tensor ``(m, n)``, or `LinearOperator`
        float32, float64, complex64 or complex128 (float16/bfloat16 dense tensors are computed
        in float32; sparse tensors must be real).
    k : int
        Number of triplets, ``1 <= k <= min(m, n)``.
    tol : float, optional
        Relative residual: on return every triplet satisfies
        ``‖A v_i − σ_i u_i‖ <= tol·σ_1`` and ``‖Aᴴ u_i − σ_i v_i‖ <= tol·σ_1``. The CG solves of
        the backward stop at relative residual ``tol`` too. Default eps^(3/4) of the dtype
        (6.5e-6 for float32, 1.8e-12 for float64).
    maxiter : int, optional
        Maximum number of block steps (one product with ``A`` and one with ``Aᴴ`` each), and of
        CG steps in the backward. Default ``max(1000, min(m, n))``.
    v0 : Tensor ``(..., p, n)`` or ``(..., n)``, optional
        Warm start: rows of a guess of ``Vh`` (the conjugated right singular vectors ``v_iᴴ``,
        as returned), typically the ``Vh`` of a previous call on a nearby matrix. The start is
        otherwise random with a fixed seed, so the result is deterministic for a given input.
    method : {"auto", "krylov", "dense"}
        How the forward solves. ``"krylov"``: block Lanczos, matrix-free. ``"dense"`` (dense
        tensors only): the Gram matrix of the short side, a symmetric eigensolve and one
        refinement step, checked against ``tol`` (Krylov, warm-started, where it misses it).
        ``"auto"`` (default): the cheaper of the two by a cost model of the shape and ``k``
        (``docs/topk.md``); where it picks dense for one real matrix on the CPU, a few Krylov
        steps are tried first, which a decaying spectrum needs no more of. Sparse tensors and
        operators always use Krylov. The result meets ``tol`` and the backward is the same
        whichever method ran.

    Returns
    -------
    U : Tensor ``(..., m, k)``
    S : Tensor ``(..., k)``, descending
    Vh : Tensor ``(..., k, n)``

    Raises
    ------
    ConvergenceError
        Not converged within ``maxiter`` block steps, or stagnated earlier: the residual stopped
        falling above ``tol`` because the rounding of the products allows no smaller one (the
        message names the residual that was reached; in float32 the default ``tol`` is not
        always reachable, e.g. for a matrix-free centred operator whose mean dominates).
        ``err.residuals`` ``(..., k)`` holds the relative residuals reached and ``err.result``
        the iterate that reached them ``(U, S, Vh)`` (detached).
        To keep it, catch the error; to get a differentiable result, call again with a larger
        ``tol`` or ``maxiter`` and ``v0=err.result[2]``. The backward raises it too when CG
        stalls (tiny gap σ_k − σ_{k+1}).
    ValueError
        ``k`` out of range, non-finite entries, an unknown ``method`` (or ``"dense"`` for a
        sparse tensor or an operator), or a `LinearOperator` whose products have the wrong
        shape or dtype or are not adjoint to each other.
    TypeError
        Unsupported input type or dtype (integer, bool, complex sparse).

    Warns
    -----
    DegenerateGradientWarning
        In the backward, when the loss depends on the singular vectors and σ_k = σ_{k+1} (within
        √eps·σ_1): the top-k subspace has no derivative; the returned gradient drops the terms
        that depend on the arbitrary choice inside the tie (it is finite). Also for ties inside
        the block, as `torchsvd.svd`. A loss of ``S`` alone never warns.

    Notes
    -----
    Cost: the forward is a few dozen block products for matrices with decaying spectra; a loss
    of ``S`` alone costs one more product in the backward (Ā = U diag(S̄) Vᴴ); a loss of ``U`` or
    ``Vh`` adds one CG solve with two block products per step.

    Rank and scale: singular values at or below ``max(m, n)·eps·σ_1`` are zeros, as in
    `torchsvd.svd`; ``k`` may exceed the rank (the extra triplets have ``σ = 0`` and vectors
    that are any orthonormal basis of the null spaces; a loss that depends on them warns).
    A matrix far from size 1 (any finite float64 scale, 1e-300 to 1e300) is scaled internally by
    a power of two, which is exact. An empty batch returns empty results; meta tensors give
    outputs of the right shapes.

    ``torch.func``: ``grad``/``vjp``, ``jvp`` (forward mode, the same projected solve as the
    backward) and ``vmap`` work for dense ``A``; vmap over the backward (per-sample gradients)
    and double backward raise a clear error (``docs/topk.md``).

    Precision: a float32 ``A`` is multiplied in float32, but the Krylov bases, the CG vectors
    and their inner products are float64 (float32 inner products of long vectors err by
    eps·√N, which stalled the residual above the default tolerance at N = 10⁵). The outputs are
    float32. The rounding of the float32 products bounds the residual that can be confirmed:
    about 1.5e-6·σ_1 on a 4000² Gaussian matrix, below the default tolerance.

    Examples
    --------
    >>> import torch, torchsvd
    >>> s = [3.0, 2.0, 1.0, 0.5]
    >>> A = torchsvd.testing.matrix_with_singular_values(s, 60, 40, seed=0).requires_grad_()
    >>> U, S, Vh = torchsvd.svds(A, 2)
    >>> S.detach().round(decimals=8)
    tensor([3., 2.], dtype=torch.float64)
    >>> (U @ Vh).sum().backward()   # implicit backward: projected solves, no SVD of A
    >>> A.grad.shape
    torch.Size([60, 40])

    Complex matrices: ``S`` is real, ``Vh`` holds the conjugated rows ``v_iᴴ``.

    >>> C = torchsvd.testing.matrix_with_singular_values(
    ...     [3.0, 2.0, 1.0], 30, 20, dtype=torch.complex128, seed=0
    ... )
    >>> U, S, Vh = torchsvd.svds(C, 2)
    >>> S.round(decimals=8)
    tensor([3., 2.], dtype=torch.float64)
    >>> bool(torch.allclose(C @ Vh.mH, U * S))
    True

    Matrix-free, with gradients to parameters: see `LinearOperator`. A matrix sharded over
    processes (a ``torch.distributed.tensor.DTensor``): see ``docs/distributed.md``.
    """
    if _distributed.is_dtensor(A):
        return _distributed.svds(A, k, tol=tol, maxiter=maxiter, v0=v0, method=method)
    op = aslinearoperator(A)._resolved()  # its params: the tensors the gradients reach
    k, tol_value, maxiter_value = _check_options(k, tol, maxiter, op.shape)
    rows = _check_v0(v0, op)
    m, n = op.shape[-2], op.shape[-1]
    tol_final = default_tol(op.dtype) if tol_value is None else tol_value
    iters = default_maxiter(m, n) if maxiter_value is None else maxiter_value
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method == "dense" and not densifiable(op):
        raise ValueError(
            "method='dense' needs a dense (strided) tensor A, got "
            f"{'a sparse tensor' if isinstance(A, torch.Tensor) else type(A).__name__}; "
            "use method='auto' or 'krylov'"
        )
    if method == "auto":  # here, where grad mode still tells whether a backward will follow
        method = choose_method(op, k)
    U, S, Vh, *_ = _SVDS.apply(op, k, tol_final, iters, rows, method, *op.params)
    if isinstance(A, torch.Tensor) and A.dtype != op.dtype:
        return U.to(A.dtype), S.to(A.dtype), Vh.to(A.dtype)
    return U, S, Vh


def spectral_norm(
    A: torch.Tensor | LinearOperator,
    *,
    tol: float | None = None,
    maxiter: int | None = None,
    v0: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The largest singular value ``σ_1 = ‖A‖_2`` of a (batch of) matrices, differentiable.

    ``svds(A, 1)[1][..., 0]``: matrix-free Lanczos forward, gradient ``u_1 v_1ᴴ`` (one outer
    product, no linear solve). PyTorch issue #12760 asks for this function.

    Parameters
    ----------
    A : Tensor ``(..., m, n)``, sparse Tensor, or `LinearOperator`
    tol, maxiter, v0
        As in `svds` (``v0``: a previous ``Vh[..., 0, :]``, the row ``v_1ᴴ`` of shape ``(..., n)``
        (for complex A the conjugate of ``v_1``), makes it a few products).

    Returns
    -------
    Tensor ``(...)``

    Examples
    --------
    >>> import torch, torchsvd
    >>> A = torch.tensor([[3.0, 0.0], [4.0, 5.0]], dtype=torch.float64, requires_grad=True)
    >>> sigma = torchsvd.spectral_norm(A)
    >>> bool(torch.isclose(sigma, torch.linalg.matrix_norm(A.detach(), 2)))
    True
    >>> sigma.backward()
    >>> U, S, Vh = torch.linalg.svd(A.detach())
    >>> torch.allclose(A.grad, torch.outer(U[:, 0], Vh[0]))
    True
    """
    return svds(A, 1, tol=tol, maxiter=maxiter, v0=v0)[1][..., 0]
