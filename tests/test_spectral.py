"""Tests of svd_apply / polar / svt / clip_singular_values: values, gradients at ties, near ties and
zeros (against central differences), separated spectra (against the naive composition), forward
mode, second derivatives, torch.func, parameter gradients, warnings and input checks."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchsvd
import torchsvd._spectral as spectral_module
from _helpers import C128, F32, F64, inner, weights
from torchsvd.testing import (
    matrix_with_singular_values,
    numerical_gradient,
    random_unitary,
    spectrum,
)

Fn = Callable[[torch.Tensor], torch.Tensor]


def _odd(s: torch.Tensor) -> torch.Tensor:
    # Odd and analytic, so F(A) = A·h(AᴴA) is smooth even at zero singular values; f(0) = 0.
    return torch.sin(s) + 0.5 * s**3


# name -> (F, smooth at zero singular values with f(0) = 0)
OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "odd": lambda X: torchsvd.svd_apply(X, _odd),
    "exp": lambda X: torchsvd.svd_apply(X, torch.exp),
    "sqrt": lambda X: torchsvd.svd_apply(X, torch.sqrt, lambda s: 0.5 / torch.sqrt(s)),
    "polar": torchsvd.polar,
    "svt": lambda X: torchsvd.svt(X, 0.6),
    "clip": lambda X: torchsvd.clip_singular_values(X, 0.4, 1.7),
}


def _grad(op: Fn, A: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    X = A.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(inner(C, op(X)), X)
    return grad


def _check_against_differences(op: Fn, A: torch.Tensor, tol: float = 1e-6) -> None:
    """Reverse and forward mode against float64 central differences of F."""
    C = weights(tuple(A.shape), A.dtype, 7)
    expected = numerical_gradient(lambda X: inner(C, op(X)), A)
    got = _grad(op, A, C)
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max() <= tol * max(1.0, float(expected.abs().max()))
    dA = weights(tuple(A.shape), A.dtype, 8)
    h = 1e-6
    with torch.no_grad():
        diff = (op(A + h * dA) - op(A - h * dA)) / (2 * h)
    tangent = torch.func.jvp(op, (A,), (dA,))[1]
    assert (tangent - diff).abs().max() <= tol * max(1.0, float(diff.abs().max()))


# --------------------------------------------------------------------------- exact ties

TIES = {
    "two": [2.0, 1.0, 1.0],
    "three": [1.5, 1.5, 1.5, 0.5],
    "all": [1.0, 1.0, 1.0],
}


@pytest.mark.parametrize("op", ["odd", "exp", "sqrt", "polar", "svt", "clip"])
@pytest.mark.parametrize("ties", sorted(TIES))
@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_gradient_at_exact_ties_matches_differences(
    op: str, ties: str, shape: tuple[int, int], dtype: torch.dtype
) -> None:
    m, n = shape
    s = torch.tensor(TIES[ties], dtype=torch.float64)[: min(m, n)]
    s = torch.cat([s, torch.full((min(m, n) - len(s),), 0.8, dtype=torch.float64)])
    A = matrix_with_singular_values(s, m, n, dtype=dtype, seed=3)
    _check_against_differences(OPS[op], A)


@pytest.mark.parametrize("op", ["odd", "exp", "polar", "svt"])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_identity_and_random_unitary(op: str, dtype: torch.dtype) -> None:
    # All singular values equal 1: the naive composition's gradient is NaN here.
    _check_against_differences(OPS[op], torch.eye(3, dtype=dtype))
    _check_against_differences(OPS[op], random_unitary(3, dtype=dtype, seed=4))


def test_naive_composition_is_nan_where_svd_apply_is_exact() -> None:
    # A signed permutation: its singular values are exactly 1 in floating point, so the tie
    # (and PyTorch's 0/0) does not depend on LAPACK's rounding as it would at a random
    # orthogonal matrix.
    Q = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]], dtype=F64)
    assert torch.equal(torch.linalg.svdvals(Q), torch.ones(3, dtype=F64))
    X = Q.clone().requires_grad_()
    U, _, Vh = torch.linalg.svd(X)
    (U @ Vh).sum().backward()
    assert X.grad is not None and torch.isnan(X.grad).any()
    _check_against_differences(torchsvd.polar, Q)


# --------------------------------------------------------------------------- near ties


@pytest.mark.parametrize("gap", [1e-14, 1e-12, 1e-10, 1e-8, 1e-6, 1e-5, 1e-4, 1e-3])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_gradient_at_near_ties(gap: float, dtype: torch.dtype) -> None:
    s = torch.tensor([1.0 + gap, 1.0, 0.5], dtype=torch.float64)
    A = matrix_with_singular_values(s, 4, 3, dtype=dtype, seed=6)
    for op in ("odd", "exp", "sqrt", "polar"):
        _check_against_differences(OPS[op], A)


@pytest.mark.parametrize("gap", [1e-15, 1e-12, 3e-9, 1e-7, 5e-6, 7e-6, 1e-5, 1e-3, 1e-1])
def test_divided_difference_has_no_cancellation(gap: float) -> None:
    # At A = diag(a, b), U = V = I (up to signs that cancel) and Ā_01 = (P_01 + Q_01)/2 for the
    # cotangent e_0 e_1ᵀ. For f = exp the exact P is e^b·expm1(a − b)/(a − b).
    a, b = 1.0 + gap, 1.0
    A = torch.diag(torch.tensor([a, b], dtype=F64)).requires_grad_()
    torchsvd.svd_apply(A, torch.exp)[0, 1].backward()
    assert A.grad is not None
    P = math.exp(b) * math.expm1(a - b) / (a - b)
    Q = (math.exp(a) + math.exp(b)) / (a + b)
    # The threshold eps^{1/3} bounds the relative error near eps^{2/3} ≈ 4e-11 (module docstring).
    assert abs(float(A.grad[0, 1]) - (P + Q) / 2) <= 2e-10 * (P + Q) / 2


# --------------------------------------------------------------------------- zeros


@pytest.mark.parametrize(
    "s", [[2.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], ids=str
)
@pytest.mark.parametrize("shape", [(3, 3), (5, 3), (3, 5), (4, 6)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_zero_singular_values_with_f0_zero(
    s: list[float], shape: tuple[int, int], dtype: torch.dtype
) -> None:
    m, n = shape
    A = matrix_with_singular_values(torch.tensor(s), m, n, dtype=dtype, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchsvd.DegenerateGradientWarning)  # f(0) = 0: defined
        for op in ("odd", "svt"):
            _check_against_differences(OPS[op], A)
        _check_against_differences(lambda X: torchsvd.clip_singular_values(X, max=1.5), A)


@pytest.mark.parametrize("op", ["polar", "exp", "clip"])
def test_undefined_at_singular_input_warns_and_is_finite(op: str) -> None:
    s = torch.tensor([2.0, 1.0, 0.0], dtype=F64)
    A = matrix_with_singular_values(s, 4, 3, seed=10).requires_grad_()
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="not defined"):
        F = OPS[op](A)
    F.sum().backward()
    assert A.grad is not None and torch.isfinite(A.grad).all() and torch.isfinite(F).all()
    if op == "polar":  # the canonical partial isometry U_r V_rᴴ
        U, _, Vh = torch.linalg.svd(A.detach(), full_matrices=False)
        assert torch.allclose(F, U[:, :2] @ Vh[:2], atol=1e-12)


def test_polar_of_zero_matrix_is_zero() -> None:
    with pytest.warns(torchsvd.DegenerateGradientWarning):
        assert torch.equal(
            torchsvd.polar(torch.zeros(3, 2, dtype=F64)), torch.zeros(3, 2, dtype=F64)
        )


# --------------------------------------------------------------------------- separated spectra


def _naive(A: torch.Tensor, f: Fn) -> torch.Tensor:
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    return (U * f(S).unsqueeze(-2).to(U.dtype)) @ Vh


NAMED: dict[str, tuple[Fn, Fn]] = {
    "odd": (OPS["odd"], _odd),
    "exp": (OPS["exp"], torch.exp),
    "polar": (torchsvd.polar, torch.ones_like),
    "svt": (OPS["svt"], lambda s: torch.clamp_min(s - 0.6, 0)),
    "clip": (OPS["clip"], lambda s: torch.clamp(s, 0.4, 1.7)),
}


@pytest.mark.parametrize("name", sorted(NAMED))
@pytest.mark.parametrize("shape", [(5, 5), (6, 3), (3, 6), (2, 4, 3)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_matches_naive_composition_at_separated_spectrum(
    name: str, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    *batch, m, n = shape
    s = torch.tensor([2.1, 1.3, 0.9, 0.5, 0.2][: min(m, n)], dtype=F64)  # away from the kinks
    A = matrix_with_singular_values(s, m, n, batch=batch, dtype=dtype, seed=11)
    op, f = NAMED[name]
    C = weights(tuple(A.shape), dtype, 12)
    X = A.clone().requires_grad_()
    out = op(X)
    expected = _naive(A, f)
    assert torch.allclose(out, expected, atol=1e-12)
    assert (_grad(op, A, C) - _grad(lambda Y: _naive(Y, f), A, C)).abs().max() <= 1e-10


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.float16, torch.bfloat16])
def test_lower_precision_dtypes(dtype: torch.dtype) -> None:
    A64 = matrix_with_singular_values(torch.tensor([2.0, 1.0, 0.5], dtype=F64), 4, 3, seed=13)
    A = A64.to(dtype)
    out = torchsvd.svd_apply(A.requires_grad_(), torch.tanh)
    assert out.dtype == dtype
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-5)
    expected = _naive(A64, torch.tanh)
    assert (out.to(C128 if dtype.is_complex else F64) - expected).abs().max() <= tol
    out.real.sum().backward() if out.is_complex() else out.sum().backward()
    assert A.grad is not None and A.grad.dtype == dtype and torch.isfinite(A.grad).all()


# --------------------------------------------------------------------------- named functions


def _newton_polar(A: torch.Tensor) -> torch.Tensor:
    """Polar factor by Higham's scaled Newton iteration (square) or Newton–Schulz (rectangular)."""
    m, n = A.shape[-2:]
    X = A.clone()
    if m == n:
        for _ in range(60):
            Xi = torch.linalg.inv(X).mH
            mu = (torch.linalg.matrix_norm(Xi) / torch.linalg.matrix_norm(X)).sqrt()
            X = 0.5 * (mu * X + Xi / mu)
        return X
    X = X / torch.linalg.matrix_norm(X)  # singular values in (0, 1], inside (0, √3)
    eye = torch.eye(n, dtype=A.dtype)
    for _ in range(200):
        X = 0.5 * X @ (3 * eye - X.mH @ X)
    return X


@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6)])
@pytest.mark.parametrize("dtype", [F64, C128])
@pytest.mark.parametrize("kind", ["gaussian", "identity", "ties"])
def test_polar_matches_newton_iteration(
    shape: tuple[int, int], dtype: torch.dtype, kind: str
) -> None:
    m, n = shape
    s = spectrum(kind, min(m, n), seed=1) + 0.1
    A = matrix_with_singular_values(s, m, n, dtype=dtype, seed=14)
    Q = torchsvd.polar(A)
    assert torch.allclose(Q, _newton_polar(A), atol=1e-10)
    k = min(m, n)
    gram = Q.mH @ Q if m >= n else Q @ Q.mH
    assert torch.allclose(gram, torch.eye(k, dtype=dtype), atol=1e-12)


@pytest.mark.parametrize("dtype", [F64, C128])
def test_svt_and_clip_values(dtype: torch.dtype) -> None:
    s = torch.tensor([3.0, 1.0, 0.5], dtype=F64)
    A = matrix_with_singular_values(s, 5, 3, dtype=dtype, seed=15)
    got = torch.linalg.svdvals(torchsvd.svt(A, 0.75))
    assert torch.allclose(got, torch.tensor([2.25, 0.25, 0.0], dtype=F64), atol=1e-12)
    got = torch.linalg.svdvals(torchsvd.clip_singular_values(A, 0.8, 2.0))
    assert torch.allclose(got, torch.tensor([2.0, 1.0, 0.8], dtype=F64), atol=1e-12)
    assert torch.allclose(torchsvd.clip_singular_values(A), A, atol=1e-12)
    assert torch.allclose(torchsvd.svt(A, 0.0), A, atol=1e-12)


def test_parameter_gradients_gradcheck_with_broadcasting() -> None:
    s = torch.tensor([2.2, 1.4, 0.3], dtype=F64)
    A = matrix_with_singular_values(s, 4, 3, batch=(2, 1), seed=16).requires_grad_()
    tau = torch.tensor([0.5, 1.0, 1.9], dtype=F64, requires_grad=True)  # -> batch (2, 3)
    assert torchsvd.svt(A, tau).shape == (2, 3, 4, 3)
    assert torch.autograd.gradcheck(torchsvd.svt, (A, tau), check_forward_ad=True)
    lo = torch.tensor(0.5, dtype=F64, requires_grad=True)
    hi = torch.tensor([1.6, 2.0], dtype=F64, requires_grad=True).reshape(2, 1)
    assert torch.autograd.gradcheck(
        torchsvd.clip_singular_values, (A, lo, hi), check_forward_ad=True
    )


@pytest.mark.parametrize("dtype", [F64, C128])
def test_parameter_gradient_closed_form(dtype: torch.dtype) -> None:
    # ∂⟨C, svt(A, τ)⟩/∂τ = −Σ_{σ_i > τ} Re(u_iᴴ C v_i), likewise for clip's bounds.
    s = torch.tensor([2.0, 1.0, 0.5], dtype=F64)
    A = matrix_with_singular_values(s, 4, 3, dtype=dtype, seed=17)
    C = weights((4, 3), dtype, 18)
    U, _, Vh = torch.linalg.svd(A, full_matrices=False)
    w = (U.mH @ C @ Vh.mH).diagonal().real
    tau = torch.tensor(0.8, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(inner(C, torchsvd.svt(A, tau)), tau)
    assert torch.allclose(g, -w[:2].sum())
    lo = torch.tensor(0.7, dtype=F64, requires_grad=True)
    hi = torch.tensor(1.5, dtype=F64, requires_grad=True)
    glo, ghi = torch.autograd.grad(inner(C, torchsvd.clip_singular_values(A, lo, hi)), (lo, hi))
    assert torch.allclose(glo, w[2]) and torch.allclose(ghi, w[0])


# ------------------------------------------------------------------ forward mode, second order


@pytest.mark.parametrize("name", ["odd", "exp", "polar", "svt"])
@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5)])
@pytest.mark.parametrize("dtype", [F64, C128])
@pytest.mark.parametrize("s", [[2.0, 1.0, 0.5], [1.0, 1.0, 1.0], [1.5, 1.0, 0.0]], ids=str)
def test_adjoint_identity(
    name: str, shape: tuple[int, int], dtype: torch.dtype, s: list[float]
) -> None:
    # ⟨vjp(g), dA⟩ = ⟨g, jvp(dA)⟩: forward and reverse rules use the same self-adjoint map.
    if name in ("polar", "exp") and 0.0 in s:
        return  # F undefined (warns); covered by test_undefined_at_singular_input_warns...
    m, n = shape
    A = matrix_with_singular_values(torch.tensor(s[: min(m, n)]), m, n, dtype=dtype, seed=19)
    op = NAMED[name][0]
    g = weights((m, n), dtype, 20)
    dA = weights((m, n), dtype, 21)
    pullback = torch.func.vjp(op, A)[1]
    tangent = torch.func.jvp(op, (A,), (dA,))[1]
    lhs, rhs = inner(pullback(g)[0], dA), inner(g, tangent)
    assert abs(float(lhs - rhs)) <= 1e-12 * max(1.0, abs(float(lhs)))


@pytest.mark.parametrize("name", ["odd", "polar", "svt", "clip"])
@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 4)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_gradgradcheck_separated(name: str, shape: tuple[int, int], dtype: torch.dtype) -> None:
    m, n = shape
    s = torch.tensor([2.1, 1.3, 0.9][: min(m, n)], dtype=F64)
    A = matrix_with_singular_values(s, m, n, dtype=dtype, seed=22).requires_grad_()
    op = NAMED[name][0]
    assert torch.autograd.gradgradcheck(op, (A,))


def _hvp(op: Fn, A: torch.Tensor, C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """∇_A ⟨D, ∇_A ⟨C, F(A)⟩²⟩ by double backward."""
    X = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(inner(C, op(X)) ** 2, X, create_graph=True)
    (h,) = torch.autograd.grad(inner(D, g), X)
    return h


@pytest.mark.parametrize("name", ["odd", "exp", "polar"])
@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 4)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_second_derivative_matches_naive_at_separated_spectrum(
    name: str, shape: tuple[int, int], dtype: torch.dtype
) -> None:
    m, n = shape
    s = torch.tensor([1.3, 1.0, 0.5][: min(m, n)], dtype=F64)
    A = matrix_with_singular_values(s, m, n, dtype=dtype, seed=23)
    C, D = weights((m, n), dtype, 30), weights((m, n), dtype, 31)
    op, f = NAMED[name]
    got = _hvp(op, A, C, D)
    assert (got - _hvp(lambda X: _naive(X, f), A, C, D)).abs().max() <= 1e-10


def test_second_derivative_at_tie_is_finite_and_quiet() -> None:
    # No DegenerateGradientWarning (pytest turns it into an error): the backward is a
    # basis-independent function of the SVD, so the SVD backward finds nothing to warn about.
    A = matrix_with_singular_values(torch.tensor([1.0, 1.0, 0.5], dtype=F64), 3, 3, seed=23)
    C, D = weights((3, 3), F64, 30), weights((3, 3), F64, 31)
    for op in (OPS["odd"], torchsvd.polar):
        assert torch.isfinite(_hvp(op, A, C, D)).all()


def test_torch_func_transforms_agree_with_batched_autograd() -> None:
    A = matrix_with_singular_values(
        torch.tensor([2.0, 1.0, 1.0], dtype=F64), 4, 3, batch=(5,), seed=24
    )
    for op in (OPS["odd"], torchsvd.polar, OPS["svt"]):
        assert torch.allclose(torch.func.vmap(op)(A), op(A), atol=1e-13)
        per_sample = torch.func.vmap(torch.func.grad(lambda X, op=op: op(X).pow(3).sum()))(A)
        X = A.clone().requires_grad_()
        op(X).pow(3).sum().backward()
        assert X.grad is not None and torch.allclose(per_sample, X.grad, atol=1e-12)
        dA = torch.ones_like(A)
        vm = torch.func.vmap(lambda X, d, op=op: torch.func.jvp(op, (X,), (d,))[1])(A, dA)
        assert torch.allclose(vm, torch.func.jvp(op, (A,), (dA,))[1], atol=1e-12)


def test_tau_gradient_under_vmap() -> None:
    A = matrix_with_singular_values(
        torch.tensor([2.0, 1.0, 0.3], dtype=F64), 3, 3, batch=(4,), seed=25
    )
    tau = torch.tensor([0.2, 0.5, 1.2, 1.5], dtype=F64)
    g = torch.func.vmap(torch.func.grad(lambda t, X: torchsvd.svt(X, t).sum()))(tau, A)
    t = tau.clone().requires_grad_()
    torchsvd.svt(A, t).sum().backward()
    assert t.grad is not None and torch.allclose(g, t.grad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    A = matrix_with_singular_values(
        torch.tensor([2.0, 1.0, 1.0], dtype=F64), 4, 3, batch=(3,), seed=26
    )
    X = A.cuda().requires_grad_()
    out = torchsvd.svd_apply(X, _odd)
    out.sum().backward()
    assert X.grad is not None
    assert torch.allclose(out.cpu(), OPS["odd"](A), atol=1e-12)
    assert torch.allclose(X.grad.cpu(), _grad(OPS["odd"], A, torch.ones_like(A)), atol=1e-12)


# --------------------------------------------------------------------------- property sweep


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    shape=st.sampled_from([(3, 3), (4, 2), (2, 4), (4, 4)]),
    exponents=st.lists(st.sampled_from([-30, -12, -1, 0, 0, 1, 12, 30]), min_size=4, max_size=4),
    zeros=st.integers(0, 2),
    complex_=st.booleans(),
)
def test_property_no_nan(
    shape: tuple[int, int], exponents: list[int], zeros: int, complex_: bool
) -> None:
    m, n = shape
    k = min(m, n)
    s = torch.tensor([10.0**e for e in exponents[:k]], dtype=F64)  # repeated exponents are ties
    s[k - min(zeros, k) :] = 0.0
    dtype = C128 if complex_ else F64
    A = matrix_with_singular_values(s, m, n, dtype=dtype, seed=27)
    scale = float(s.max()) or 1.0
    C = weights((m, n), dtype, 28)
    ops = [
        lambda X: torchsvd.svd_apply(X, torch.tanh),
        lambda X: torchsvd.svd_apply(X, lambda t: t * t),
        torchsvd.polar,
        lambda X: torchsvd.svt(X, 0.3 * scale),
        lambda X: torchsvd.clip_singular_values(X, 0.1 * scale, 0.5 * scale),
    ]
    for op in ops:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torchsvd.DegenerateGradientWarning)
            X = A.clone().requires_grad_()
            out = op(X)
            (grad,) = torch.autograd.grad(inner(C, out), X, create_graph=True)
            (second,) = torch.autograd.grad(inner(C, grad), X)
            tangent = torch.func.jvp(op, (A,), (C,))[1]
        for t in (out, grad, second, tangent):
            assert torch.isfinite(t).all()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("f", "match"),
    [
        (lambda s: s / s.sum(), "elementwise"),
        (lambda s: s.cumsum(-1), "elementwise"),
        (lambda s: s.sort(dim=-1).values.flip(-1) * 0 + s.mean(), "elementwise"),
        (lambda s: s.sum(-1), "shape"),
        (lambda s: s[..., :1], "shape"),
    ],
)
def test_non_elementwise_f_raises(f: Fn, match: str) -> None:
    A = matrix_with_singular_values(torch.tensor([3.0, 2.0, 1.0], dtype=F64), 3, 3, seed=29)
    with pytest.raises(ValueError, match=match):
        torchsvd.svd_apply(A, f)


def test_bad_f_types_raise() -> None:
    A = torch.eye(2, dtype=F64)
    with pytest.raises(TypeError, match="callable"):
        torchsvd.svd_apply(A, 3.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must return a tensor"):
        torchsvd.svd_apply(A, lambda s: 1.0)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="real floating"):
        torchsvd.svd_apply(A, lambda s: s.to(torch.complex128))
    X = A.clone().requires_grad_()
    out = torchsvd.svd_apply(X, lambda s: torch.from_numpy(s.numpy() ** 2))
    with pytest.raises(TypeError, match="pass its derivative as df"):
        out.sum().backward()
    # With df given, such an f is fine.
    out = torchsvd.svd_apply(A, lambda s: torch.from_numpy(s.numpy() ** 2), lambda s: 2 * s)
    assert torch.allclose(out, A)


def test_bad_parameters_raise() -> None:
    A = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        torchsvd.svt(A, -0.1)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        torchsvd.svt(A, torch.tensor([0.1, -1.0]))
    with pytest.raises(ValueError, match="finite"):
        torchsvd.svt(A, float("nan"))
    with pytest.raises(TypeError, match="tau must be a float"):
        torchsvd.svt(A, "0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="real"):
        torchsvd.svt(A, torch.tensor(0.1j))
    with pytest.raises(ValueError, match="min must be <= max"):
        torchsvd.clip_singular_values(A, 2.0, 1.0)
    with pytest.raises(ValueError, match="max must be >= 0"):
        torchsvd.clip_singular_values(A, max=-1.0)
    with pytest.raises(ValueError, match="broadcast"):
        torchsvd.svt(torch.eye(3, dtype=F64).expand(2, 3, 3), torch.zeros(3))


@pytest.mark.parametrize("op", [OPS["odd"], torchsvd.polar, OPS["svt"], OPS["clip"]])
def test_matrix_checks(op: Fn) -> None:
    with pytest.raises(TypeError, match="floating dtype"):
        op(torch.eye(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        op(torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="NaN"):
        op(torch.full((2, 2), float("nan"), dtype=F64))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        op([[1.0, 0.0], [0.0, 1.0]])  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(0, 3, 3), (3, 0), (0, 4)])
def test_empty_inputs(shape: tuple[int, ...]) -> None:
    A = torch.zeros(shape, dtype=F64)
    for op in (OPS["odd"], torchsvd.polar, OPS["svt"]):
        assert op(A).shape == shape


# --------------------------------------------------------------------------- second order at ties


def _hvp_differences(op: Fn, A: torch.Tensor, C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """∇_A ⟨D, ∇_A ⟨C, F(A)⟩⟩ by central differences of the (first-order) gradient along D."""
    h = 1e-4  # the gradient is smooth at ties; smaller steps are dominated by its rounding
    return (_grad(op, A + h * D, C) - _grad(op, A - h * D, C)) / (2 * h)


def _hvp_exact(op: Fn, A: torch.Tensor, C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    X = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(inner(C, op(X)), X, create_graph=True)
    (h,) = torch.autograd.grad(inner(D, g), X)
    return h


SECOND = {
    "odd": OPS["odd"],
    "exp": OPS["exp"],
    "log1p": lambda X: torchsvd.svd_apply(X, torch.log1p),
    "given-df": lambda X: torchsvd.svd_apply(X, torch.sinh, torch.cosh),
    "polar": torchsvd.polar,
    "svt": OPS["svt"],
    "clip": OPS["clip"],
}

SECOND_TIES = {
    "identity": [1.0, 1.0, 1.0],
    "pair": [2.0, 2.0, 1.0],
    "low-pair": [1.3, 0.7, 0.7],
    "separated": [2.0, 1.1, 0.5],
}


@pytest.mark.parametrize("name", sorted(SECOND))
@pytest.mark.parametrize("ties", sorted(SECOND_TIES))
@pytest.mark.parametrize("shape", [(3, 3), (5, 3), (3, 5), (2, 3, 3)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_second_derivative_matches_differences_of_gradient(
    name: str, ties: str, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    # The Hessian-vector product, against central differences of the gradient: at ties the
    # old rule (through the SVD backward) was off by about 10% here.
    *batch, m, n = shape
    s = torch.tensor(SECOND_TIES[ties], dtype=F64)
    A = matrix_with_singular_values(s, m, n, batch=batch, dtype=dtype, seed=40)
    if ties == "identity" and m == n and not batch:
        A = torch.eye(n, dtype=dtype)
    C, D = weights(tuple(A.shape), dtype, 41), weights(tuple(A.shape), dtype, 42)
    op = SECOND[name]
    got = _hvp_exact(op, A, C, D)
    expected = _hvp_differences(op, A, C, D)
    assert (got - expected).abs().max() <= 1e-6 * max(1.0, float(expected.abs().max()))


def test_second_derivative_at_diag_2_2_1() -> None:
    # The Hessian-vector product of sum(W * svd_apply(X, f)) at a diagonal matrix with a tie.
    A = torch.diag(torch.tensor([2.0, 2.0, 1.0], dtype=F64))
    W, D = weights((3, 3), F64, 43), weights((3, 3), F64, 44)
    for op in (OPS["exp"], OPS["odd"], lambda X: torchsvd.svd_apply(X, torch.sqrt)):
        got, expected = _hvp_exact(op, A, W, D), _hvp_differences(op, A, W, D)
        assert (got - expected).abs().max() <= 1e-6 * float(expected.abs().max())


@pytest.mark.parametrize("name", ["odd", "exp", "polar", "svt"])
@pytest.mark.parametrize("shape", [(3, 3), (4, 3), (3, 4)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_forward_over_reverse_matches_double_backward(
    name: str, shape: tuple[int, int], dtype: torch.dtype
) -> None:
    # jvp of vjp (the forward-mode rule of the backward) against reverse-over-reverse, at a tie.
    m, n = shape
    A = matrix_with_singular_values(torch.tensor([1.0, 1.0, 0.5]), m, n, dtype=dtype, seed=45)
    C, D = weights((m, n), dtype, 46), weights((m, n), dtype, 47)
    op = SECOND[name]
    grad = torch.func.grad(lambda X: inner(C, op(X)))
    fwd = torch.func.jvp(grad, (A,), (D,))[1]
    assert (fwd - _hvp_exact(op, A, C, D)).abs().max() <= 1e-11
    # and the Hessian itself (forward over reverse) is symmetric
    if dtype == F64 and name in ("odd", "polar"):
        H = torch.func.hessian(lambda X: inner(C, op(X)))(A).reshape(m * n, m * n)
        assert torch.allclose(H, H.T, atol=1e-10)


@pytest.mark.parametrize("dtype", [F64, C128])
def test_second_derivatives_at_zero_singular_values(dtype: torch.dtype) -> None:
    # f odd and analytic: F is smooth at a rank-deficient A, and the limits at zeros are exact.
    for shape in ((3, 3), (5, 3), (3, 5)):
        s = torch.tensor([1.5, 1.5, 0.0], dtype=F64)
        A = matrix_with_singular_values(s, *shape, dtype=dtype, seed=48)
        C, D = weights(shape, dtype, 49), weights(shape, dtype, 50)
        for op in (OPS["odd"], OPS["svt"], lambda X: torchsvd.clip_singular_values(X, max=1.2)):
            got, expected = _hvp_exact(op, A, C, D), _hvp_differences(op, A, C, D)
            assert (got - expected).abs().max() <= 1e-6 * max(1.0, float(expected.abs().max()))


def test_gradgradcheck_with_parameters() -> None:
    s = torch.tensor([2.2, 1.4, 0.3], dtype=F64)
    A = matrix_with_singular_values(s, 4, 3, batch=(2,), seed=51).requires_grad_()
    tau = torch.tensor([0.5, 1.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(torchsvd.svt, (A, tau))
    lo = torch.tensor(0.5, dtype=F64, requires_grad=True)
    hi = torch.tensor(1.6, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(torchsvd.clip_singular_values, (A, lo, hi))


def test_third_derivatives_raise() -> None:
    A = matrix_with_singular_values(torch.tensor([2.0, 1.0], dtype=F64), 2, 2, seed=52)
    X = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(OPS["exp"](X).sum(), X, create_graph=True)
    (h,) = torch.autograd.grad((g * g).sum(), X, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(h.sum(), X)


# --------------------------------------------------------------------------- f(0) = ±inf


def _zero_dropped(A: torch.Tensor, f: Fn, cut: float = 1e-3) -> torch.Tensor:
    """Σ_{σ_i > cut·σ_max} f(σ_i) u_i v_iᴴ by torch.linalg.svd: smooth near a rank-deficient A."""
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    keep = S > cut * S[..., :1]
    fS = torch.where(keep, f(torch.where(keep, S, 1.0)), 0.0)
    return (U * fS.unsqueeze(-2).to(U.dtype)) @ Vh


@pytest.mark.parametrize("shape", [(3, 3), (5, 3), (3, 5)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_reciprocal_at_singular_matrix_is_pinv(shape: tuple[int, int], dtype: torch.dtype) -> None:
    m, n = shape
    A = matrix_with_singular_values(torch.tensor([2.0, 0.5, 0.0]), m, n, dtype=dtype, seed=53)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="dropped"):
        F = torchsvd.svd_apply(A, torch.reciprocal)
    assert torch.isfinite(F).all()
    assert torch.allclose(F, torch.linalg.pinv(A).mH, atol=1e-12)
    C = weights(shape, dtype, 54)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torchsvd.DegenerateGradientWarning)
        got = _grad(lambda X: torchsvd.svd_apply(X, torch.reciprocal), A, C)
    assert torch.isfinite(got).all()
    # torch.linalg.pinv differentiates at constant rank (Golub & Pereyra 1973)
    assert (got - _grad(lambda X: torch.linalg.pinv(X).mH, A, C)).abs().max() <= 1e-10
    expected = numerical_gradient(lambda X: inner(C, _zero_dropped(X, torch.reciprocal)), A)
    assert (got - expected).abs().max() <= 1e-6 * float(expected.abs().max())


@pytest.mark.parametrize(
    "f", [torch.log, torch.reciprocal, lambda s: s**-0.5], ids=["log", "inv", "rsqrt"]
)
def test_infinite_f_at_zero_is_finite_and_matches_zero_dropped(f: Fn) -> None:
    A = torch.diag(torch.tensor([2.0, 0.5, 0.0], dtype=F64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torchsvd.DegenerateGradientWarning)
        op = lambda X: torchsvd.svd_apply(X, f)  # noqa: E731
        F = op(A)
        C, D = weights((3, 3), F64, 55), weights((3, 3), F64, 56)
        g = _grad(op, A, C)
        h = _hvp_exact(op, A, C, D)
    assert torch.allclose(F, _zero_dropped(A, f), atol=1e-14)
    expected = numerical_gradient(lambda X: inner(C, _zero_dropped(X, f)), A)
    assert (g - expected).abs().max() <= 1e-6 * float(expected.abs().max())
    # second derivatives: those of the zero-dropped function too
    hd = (
        _grad(lambda X: _zero_dropped(X, f), A + 1e-4 * D, C)
        - _grad(lambda X: _zero_dropped(X, f), A - 1e-4 * D, C)
    ) / 2e-4
    assert torch.isfinite(h).all()
    assert (h - hd).abs().max() <= 1e-6 * float(hd.abs().max())


# --------------------------------------------------------------------------- elementwise probe


@pytest.mark.parametrize(
    "f",
    [
        lambda s: s.flip(-1),
        lambda s: s.cumsum(-1),
        lambda s: s.sort(dim=-1).values,
        lambda s: s.sort(dim=-1, descending=True).values * 1.0 + 0 * s,
        lambda s: s / s.norm(dim=-1, keepdim=True),
        lambda s: s - s.mean(0),
        lambda s: s * s.sum(),
        lambda s: s.roll(1, -1),
        lambda s: s.flip(0),
    ],
    ids=[
        "flip",
        "cumsum",
        "sort",
        "sort-desc",
        "normalize",
        "batch-mean",
        "sum",
        "roll",
        "batch-flip",
    ],
)
@pytest.mark.parametrize("s", [[3.0, 2.0, 1.0], [2.0, 2.0, 2.0], [3.0, 1.0, 1.0, 0.5]], ids=str)
def test_non_elementwise_f_is_detected(f: Fn, s: list[float]) -> None:
    k = len(s)
    A = matrix_with_singular_values(torch.tensor(s, dtype=F64), k, k, batch=(2,), seed=57)
    with pytest.raises(ValueError, match="elementwise"):
        torchsvd.svd_apply(A, f)


@pytest.mark.parametrize("k", [4, 9])
@pytest.mark.parametrize("zero", [False, True], ids=["full-rank", "zero-matrix"])
def test_scaling_by_another_entry_is_detected(k: int, zero: bool) -> None:
    """f(s) = s·s_j reads entry j: caught for every j, also where every value is 0."""
    s = torch.linspace(1.0, 0.5, k, dtype=F64) * (not zero)
    A = matrix_with_singular_values(s, k, k, seed=59)
    for j in range(k):
        with pytest.raises(ValueError, match="elementwise"):
            torchsvd.svd_apply(A, lambda x, j=j: x * x[..., j : j + 1])


@pytest.mark.parametrize(
    "f",
    [
        torch.sqrt,
        lambda s: torch.where(s > 1.5, s, 0.5 * s),
        lambda s: s.clamp(0.5, 2.0),
        lambda s: torch.maximum(s - 1, torch.zeros_like(s)) ** 2,
        lambda s: torch.nan_to_num(torch.log(s - 1.0)),
    ],
    ids=["sqrt", "where", "clamp", "piecewise", "nan-to-num"],
)
def test_elementwise_f_is_accepted(f: Fn) -> None:
    A = matrix_with_singular_values(torch.tensor([3.0, 2.0, 1.0]), 3, 3, batch=(2,), seed=58)
    U, S, Vh = torch.linalg.svd(A)
    assert torch.allclose(torchsvd.svd_apply(A, f), (U * f(S).unsqueeze(-2)) @ Vh, atol=1e-12)


# --------------------------------------------------------------------------- devices


class _AuditedTorch:
    """The torch module for `torchsvd._spectral`, whose tensor factories must get ``device=``.

    A factory without it would put its tensor on the CPU whatever the device of A. Swapped in
    as the module's global (not a TorchFunctionMode, which torch.func switches off inside
    autograd rules), so the check holds on a CPU-only machine too.
    """

    FACTORIES = frozenset(["zeros", "ones", "empty", "full", "eye", "arange", "tensor"])

    def __getattr__(self, name: str) -> Any:
        value = getattr(torch, name)
        if name not in self.FACTORIES:
            return value

        def audited(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("device") is None:
                raise AssertionError(f"torch.{name} called without device=")
            return value(*args, **kwargs)

        return audited


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_tangents_of_parameters_only_stay_on_the_device(
    device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the parameters carry tangents, so the rule builds dF from nothing: on the device of
    # A, which the audit checks on the CPU too.
    A = matrix_with_singular_values(torch.tensor([2.0, 1.0, 0.5]), 4, 3, dtype=F64, seed=59)
    A = A.to(device)
    tau = torch.tensor(0.7, dtype=F64, device=device)
    hi = torch.tensor(1.5, dtype=F64, device=device)
    U, _, Vh = torch.linalg.svd(A, full_matrices=False)
    monkeypatch.setattr(spectral_module, "torch", _AuditedTorch())
    tangent = torch.func.jvp(lambda t: torchsvd.svt(A, t), (tau,), (torch.ones_like(tau),))[1]
    both = torch.func.jvp(
        lambda a, b: torchsvd.clip_singular_values(A, a, b),
        (tau, hi),
        (torch.ones_like(tau), torch.ones_like(hi)),
    )[1]
    monkeypatch.undo()
    assert tangent.device == both.device == A.device
    # ∂svt/∂τ = −Σ_{σ_i > τ} u_i v_iᴴ; ∂clip/∂min + ∂clip/∂max = Σ_{σ_i < min or > max} u_i v_iᴴ
    assert torch.allclose(tangent, -(U[:, :2] @ Vh[:2]), atol=1e-12)
    assert torch.allclose(both, U[:, [0, 2]] @ Vh[[0, 2]], atol=1e-12)


# --------------------------------------------------------------------------- nearest rotation


def _kabsch(A: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(A)
    d = torch.linalg.det(U @ Vh)
    flip = torch.ones(A.shape[:-1], dtype=A.dtype)
    flip[..., -1] = d
    return (U * flip.unsqueeze(-2)) @ Vh


def _rotation(X: torch.Tensor) -> torch.Tensor:
    return torchsvd.polar(X, special=True)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["proper", "reflection"])
def test_rotation_matches_kabsch_at_separated_spectrum(n: int, sign: float) -> None:
    s = torch.linspace(2.0, 0.5, n, dtype=F64)
    A = matrix_with_singular_values(s, n, n, batch=(3,), seed=60)
    A = A * torch.linalg.det(A).sign().unsqueeze(-1).unsqueeze(-1) ** (n % 2) * sign
    R = _rotation(A)
    assert torch.allclose(R, _kabsch(A), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(3, dtype=F64), atol=1e-12)
    assert torch.allclose(R.mT @ R, torch.eye(n, dtype=F64), atol=1e-12)
    C = weights(tuple(A.shape), F64, 61)
    assert (_grad(_rotation, A, C) - _grad(_kabsch, A, C)).abs().max() <= 1e-10
    assert torch.autograd.gradcheck(_rotation, (A.clone().requires_grad_(),), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(_rotation, (A[0].clone().requires_grad_(),))


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("kind", ["rotation", "reflection-separated", "tie-above", "rank-n-1"])
def test_rotation_derivatives_match_differences(n: int, kind: str) -> None:
    # At a rotation all σ are tied (det +1): finite and exact. At a reflection with distinct
    # smallest σ, or a tie above the smallest, or rank n − 1, the nearest rotation is smooth.
    s = {
        "rotation": torch.ones(n, dtype=F64),
        "reflection-separated": torch.linspace(2.0, 0.5, n, dtype=F64),
        "tie-above": torch.cat(
            [torch.full((n - 1,), 1.5, dtype=F64), torch.tensor([0.5], dtype=F64)]
        ),
        "rank-n-1": torch.cat(
            [torch.linspace(2.0, 1.0, n - 1, dtype=F64), torch.zeros(1, dtype=F64)]
        ),
    }[kind]
    A = matrix_with_singular_values(s, n, n, seed=62)
    want = -1.0 if kind in ("reflection-separated", "tie-above") else 1.0
    if kind != "rank-n-1" and float(torch.linalg.det(A)) * want < 0:
        A[..., 0, :] = -A[..., 0, :]
    _check_against_differences(_rotation, A)
    C, D = weights((n, n), F64, 63), weights((n, n), F64, 64)
    got, expected = _hvp_exact(_rotation, A, C, D), _hvp_differences(_rotation, A, C, D)
    assert (got - expected).abs().max() <= 1e-6 * max(1.0, float(expected.abs().max()))


def test_rotation_float32_and_batched() -> None:
    A = matrix_with_singular_values(
        torch.tensor([2.0, 1.0, 0.5], dtype=F64), 3, 3, batch=(4, 2), seed=65
    )
    A32 = A.to(F32).requires_grad_()
    R = _rotation(A32)
    assert R.dtype == F32 and torch.allclose(R.double(), _kabsch(A), atol=1e-5)
    (R * weights(tuple(A.shape), F32, 66)).sum().backward()
    assert A32.grad is not None and torch.isfinite(A32.grad).all()


@pytest.mark.parametrize("kind", ["tie-reflection", "rank-n-2"])
def test_rotation_degenerate_warns_and_is_finite(kind: str) -> None:
    s = torch.tensor([2.0, 1.0, 1.0] if kind == "tie-reflection" else [2.0, 0.0, 0.0], dtype=F64)
    A = matrix_with_singular_values(s, 3, 3, seed=67)
    if kind == "tie-reflection" and float(torch.linalg.det(A)) > 0:
        A[0] = -A[0]
    X = A.clone().requires_grad_()
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="not unique"):
        R = _rotation(X)
    assert torch.allclose(R.mT @ R, torch.eye(3, dtype=F64), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.tensor(1.0, dtype=F64), atol=1e-12)
    R.sum().backward()
    assert X.grad is not None and torch.isfinite(X.grad).all()


def test_rotation_bad_input() -> None:
    with pytest.raises(TypeError, match="real matrix"):
        torchsvd.polar(torch.eye(3, dtype=C128), special=True)
    with pytest.raises(ValueError, match="square"):
        torchsvd.polar(torch.ones(3, 2, dtype=F64), special=True)
    with pytest.raises(TypeError, match="special must be a bool"):
        torchsvd.polar(torch.eye(3, dtype=F64), special=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("gap", [1e-12, 1e-8, 1e-5, 1e-4, 3e-4, 1e-3, 1e-2])
@pytest.mark.parametrize("shape", [(3, 3), (4, 3)])
def test_second_derivative_at_near_ties(gap: float, shape: tuple[int, int]) -> None:
    # Around the switch between the quotients and the confluent forms (relative gap eps^{1/4}).
    s = torch.tensor([1.0 + gap, 1.0, 0.5], dtype=F64)
    A = matrix_with_singular_values(s, *shape, dtype=F64, seed=68)
    C, D = weights(shape, F64, 69), weights(shape, F64, 70)
    for name in ("odd", "exp", "polar", "svt"):
        op = SECOND[name]
        got, expected = _hvp_exact(op, A, C, D), _hvp_differences(op, A, C, D)
        assert (got - expected).abs().max() <= 1e-6 * max(1.0, float(expected.abs().max()))


def test_transforms_of_the_rotation_and_of_hessians() -> None:
    s = torch.tensor([2.0, 1.0, 0.5], dtype=F64)
    A = matrix_with_singular_values(s, 3, 3, batch=(4,), seed=71)
    assert torch.allclose(torch.func.vmap(_rotation)(A), _rotation(A), atol=1e-13)
    per_sample = torch.func.vmap(torch.func.grad(lambda X: _rotation(X).pow(3).sum()))(A)
    X = A.clone().requires_grad_()
    _rotation(X).pow(3).sum().backward()
    assert X.grad is not None and torch.allclose(per_sample, X.grad, atol=1e-12)
    loss = lambda X: OPS["exp"](X).pow(2).sum()  # noqa: E731
    H = torch.func.vmap(torch.func.hessian(loss))(A)
    assert torch.allclose(H[1], torch.func.jacrev(torch.func.jacrev(loss))(A[1]), atol=1e-10)


def test_second_derivative_without_one_at_zero_warns() -> None:
    # f(σ) = σ + σ²: F is differentiable at a rank-deficient A (f(0) = 0), but its odd extension
    # σ + σ|σ| is not twice differentiable at 0, so F has no second derivative there.
    A = matrix_with_singular_values(torch.tensor([1.5, 1.0, 0.0], dtype=F64), 3, 3, seed=72)
    op = lambda X: torchsvd.svd_apply(X, lambda s: s + s * s)  # noqa: E731
    C, D = weights((3, 3), F64, 73), weights((3, 3), F64, 74)
    _check_against_differences(op, A)  # first order: quiet and exact
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="no second derivative"):
        assert torch.isfinite(_hvp_exact(op, A, C, D)).all()
