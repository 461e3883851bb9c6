r"""``svds`` and ``spectral_norm``: top-k SVD of large or matrix-free operators, implicit backward.

Forward: thick-restarted block Golub–Kahan–Lanczos (``torchsvd._lanczos``), matrix-free.

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
k vectors per step, to relative residual ``tol``. The whole cotangent is the rank-2k product

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
       singular triplet; seed ``000`` of this project).
.. [2] J. Townsend, "Differentiating the singular value decomposition", 2016.
.. [3] J. Haegeman et al., KrylovKit.jl ``svdsolve`` reverse rule (projected linear systems).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from torchsvd._cg import projected_shifted_cg
from torchsvd._errors import ConvergenceError, DegenerateGradientWarning
from torchsvd._lanczos import _rows_matmat, _rows_rmatmat, block_lanczos
from torchsvd._operators import LinearOperator, _SparseOperator, aslinearoperator, promoted
from torchsvd._svd import default_rtol, svd_backward
from torchsvd._validate import all_finite

__all__ = ["default_tol", "spectral_norm", "svds"]


def default_tol(dtype: torch.dtype) -> float:
    """Default relative residual tolerance: eps^(3/4) (6.5e-6 for float32, 1.8e-12 for float64).

    Well above the rounding floor of the products (about eps·√(log n) relative), and tight
    enough that singular values (error ~ tol²·σ_1²/gap) are accurate to working precision.
    """
    return float(torch.finfo(dtype.to_real()).eps) ** 0.75


def default_maxiter(m: int, n: int) -> int:
    """Default iteration budget (block steps, and CG steps in the backward)."""
    return max(1000, min(m, n))


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
    rtol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(L, R)`` of ``Ā = L Rᴴ`` (module docstring), ``(..., m, 2k)``, ``(..., n, 2k)``.

    Vectors are handled as rows of plain (unconjugated) vectors, as in `torchsvd._lanczos`:
    ``Ur = Uᵀ``, ``Vr = Vᵀ = conj(Vh)``; for real tensors every ``conj`` is a no-op.
    """
    m, n = U.shape[-2], Vh.shape[-1]
    k = S.shape[-1]
    Ur, Vr = U.mT, Vh.conj()
    if gU is not None and not bool(gU.any()):
        gU = None
    if gVh is not None and not bool(gVh.any()):
        gVh = None
    UhgU = U.mH @ gU if gU is not None else None  # Uᴴ Ū
    VhgV = Vh @ gVh.mH if gVh is not None else None  # Vᴴ V̄, with V̄ = gVhᴴ
    # The k×k bracket is the reduced-SVD rule of the block: svd_backward with U = V = I_k
    # and the cotangents seen in those bases.
    eye = torch.eye(k, dtype=U.dtype, device=U.device).expand(*S.shape[:-1], k, k)
    inner = svd_backward(eye, S, eye, UhgU, gS, VhgV.mH if VhgV is not None else None, rtol)
    right = inner.conj() @ Vr  # rows of V innerᴴ
    if gU is None and gVh is None:
        return U, right.mT

    zero_m = torch.zeros_like(Ur)
    zero_n = torch.zeros_like(Vr)
    # Rows of the complement parts (I − UUᴴ) Ū and (I − VVᴴ) V̄.
    ubar = gU.mT - UhgU.mT @ Ur if gU is not None and UhgU is not None else zero_m
    vbar = gVh.conj() - VhgV.mT @ Vr if gVh is not None and VhgV is not None else zero_n
    gap = S - next_sigma.unsqueeze(-1)
    solvable = gap > rtol * S[..., :1]
    scale = ubar.norm(dim=-1) + vbar.norm(dim=-1)
    if bool((~solvable & (scale > rtol * scale.amax(dim=-1, keepdim=True))).any()):
        warnings.warn(
            "svds backward: σ_k = σ_{k+1} (no gap after the k-th singular value), so the top-k "
            "singular vectors are not differentiable; the components of the gradient that "
            "depend on the choice inside the tie are dropped. Change k to end at a gap.",
            DegenerateGradientWarning,
            stacklevel=4,
        )
    shifts = S * S
    safe_s = torch.where(solvable, S, torch.ones_like(S)).unsqueeze(-1)
    if m <= n:
        # z = (σ² − AAᴴ)⁻¹ (σ ū⊥ + A v̄⊥),  w = (Aᴴ z + v̄⊥) / σ.
        rhs = S.unsqueeze(-1) * ubar + _rows_matmat(op, vbar, m)

        def gram(P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            AhP = _rows_rmatmat(op, P, n)
            return _rows_matmat(op, AhP, m), AhP

        sol = projected_shifted_cg(
            gram, shifts, rhs, Ur, Vr, active=solvable, tol=tol, maxiter=maxiter
        )
        z = sol.x
        w = (sol.aux + vbar) / safe_s
    else:
        # w = (σ² − AᴴA)⁻¹ (σ v̄⊥ + Aᴴ ū⊥),  z = (A w + ū⊥) / σ.
        rhs = S.unsqueeze(-1) * vbar + _rows_rmatmat(op, ubar, n)

        def gram(P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            AP = _rows_matmat(op, P, m)
            return _rows_rmatmat(op, AP, n), AP

        sol = projected_shifted_cg(
            gram, shifts, rhs, Vr, Ur, active=solvable, tol=tol, maxiter=maxiter
        )
        w = sol.x
        z = (sol.aux + ubar) / safe_s
    keep = solvable.unsqueeze(-1)
    z = torch.where(keep, z, zero_m)
    w = torch.where(keep, w, zero_n)
    if bool(sol.indefinite.any()):
        warnings.warn(
            "svds backward: the complement system is not positive definite, so σ_k is "
            "(numerically) not separated from σ_{k+1}; the affected gradient terms are dropped.",
            DegenerateGradientWarning,
            stacklevel=4,
        )
    failed = solvable & ~sol.converged & ~sol.indefinite
    if bool(failed.any()):
        raise ConvergenceError(
            f"svds backward: CG did not reach relative residual {tol:.3g} in {maxiter} steps "
            f"(largest {float(sol.residuals.amax()):.3g}); the gap σ_k − σ_(k+1) is small. "
            "Raise maxiter or tol.",
            residuals=sol.residuals,
        )
    L = torch.cat([Ur, z], dim=-2).mT
    R = torch.cat([right + w, Vr], dim=-2).mT
    return L, R


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype``, or in its real counterpart when ``t`` is real (singular values)."""
    return t.to(dtype if t.is_complex() else dtype.to_real())


class _SVDS(torch.autograd.Function):
    @staticmethod
    def forward(
        op: LinearOperator,
        k: int,
        tol: float,
        maxiter: int,
        v0: torch.Tensor | None,
        *params: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # float64 bases for a float32 operator (`promoted`); results in the operator's dtype.
        # A sparse product costs little next to orthogonalizing against a basis of long
        # vectors: a block of 4 (the dense default is k + 2 rounded up, at least 8) took 2.7 s
        # instead of 5.6 s for k = 10 on a 100000² matrix with 10⁶ non-zeros (docs/topk.md).
        block = 4 if isinstance(op, _SparseOperator) else None
        dtype = op.dtype
        try:
            res = block_lanczos(
                promoted(op), k, tol=tol, maxiter=maxiter, v0=v0, block=block, product_dtype=dtype
            )
        except ConvergenceError as err:
            if isinstance(err.result, tuple):  # the partial result in the input's precision
                err.result = tuple(_cast(t, dtype) for t in err.result)
                if isinstance(err.residuals, torch.Tensor):
                    err.residuals = _cast(err.residuals, dtype)
            raise
        return (
            _cast(res.U, dtype),
            _cast(res.S, dtype),
            _cast(res.Vh, dtype),
            _cast(res.next_sigma, dtype),
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        op, _, tol, maxiter, _, *_ = inputs
        U, S, Vh, next_sigma = output
        ctx.mark_non_differentiable(next_sigma)
        ctx.op, ctx.tol, ctx.maxiter = op, tol, maxiter
        ctx.save_for_backward(U, S, Vh, next_sigma)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any,
        gU: torch.Tensor | None,
        gS: torch.Tensor | None,
        gVh: torch.Tensor | None,
        _: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        op = promoted(ctx.op)  # the CG solve in float64 too, for the same reason

        def up(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else _cast(t, op.dtype)

        U, S, Vh, next_sigma = (_cast(t, op.dtype) for t in ctx.saved_tensors)
        rtol = default_rtol(ctx.op.dtype)
        L, R = _topk_cotangent(
            op,
            U,
            S,
            Vh,
            next_sigma,
            up(gU),
            up(gS),
            up(gVh),
            tol=ctx.tol,
            maxiter=ctx.maxiter,
            rtol=rtol,
        )
        # Detached: the saved outputs carry this node as grad_fn, and param_grads differentiates
        # with grad mode on; Ā must enter it as a constant.
        L, R = L.detach().to(ctx.op.dtype), R.detach().to(ctx.op.dtype)
        grads = ctx.op.param_grads(L, R, ctx.needs_input_grad[5:])
        return (None, None, None, None, None, *grads)


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
    if rows.ndim != len(op.shape) or rows.shape[-1] != n or rows.shape[:-2] != op.batch_shape:
        raise ValueError(
            f"v0 must have shape (..., p, n) or (..., n) = {(*op.batch_shape, 'p', n)} for an "
            f"operator of shape {tuple(op.shape)} (a previous Vh), got {tuple(v0.shape)}"
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

    Returns
    -------
    U : Tensor ``(..., m, k)``
    S : Tensor ``(..., k)``, descending
    Vh : Tensor ``(..., k, n)``

    Raises
    ------
    ConvergenceError
        Not converged within ``maxiter`` block steps. ``err.residuals`` ``(..., k)`` holds the
        relative residuals reached and ``err.result`` the last iterate ``(U, S, Vh)`` (detached).
        To keep it, catch the error; to get a differentiable result, call again with a larger
        ``tol`` or ``maxiter`` and ``v0=err.result[2]``. The backward raises it too when CG
        stalls (tiny gap σ_k − σ_{k+1}).
    ValueError
        ``k`` out of range, non-finite entries, or a `LinearOperator` whose products have the
        wrong shape or dtype or are not adjoint to each other.
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
    ``Vh`` adds one CG solve with two block products per step. ``torch.func`` transforms and
    double backward are not supported (the iteration count depends on the data).

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
    >>> (U @ Vh).sum().backward()   # implicit backward: projected CG, no dense SVD
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

    Matrix-free, with gradients to parameters: see `LinearOperator`.
    """
    op = aslinearoperator(A)
    k, tol_value, maxiter_value = _check_options(k, tol, maxiter, op.shape)
    rows = _check_v0(v0, op)
    m, n = op.shape[-2], op.shape[-1]
    tol_final = default_tol(op.dtype) if tol_value is None else tol_value
    iters = default_maxiter(m, n) if maxiter_value is None else maxiter_value
    U, S, Vh, _ = _SVDS.apply(op, k, tol_final, iters, rows, *op.params)
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
