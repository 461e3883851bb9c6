"""Tests of torchsvd.svd / svdvals: values, gradients (reverse, forward, second order) at
separated spectra, ties, zeros and extreme scales, torch.func, and input checks."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchsvd
from _helpers import C128, F64, inner, rel, weights
from torchsvd.testing import matrix_with_singular_values, numerical_gradient, spectrum

SHAPES = [(5, 5), (6, 3), (3, 6), (2, 4, 3)]  # square, tall, wide, batched


def _invariant_loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
    """A loss of U, S and Vh that does not depend on the sign/phase of singular vectors."""
    m, n = U.shape[-2], Vh.shape[-1]
    k = S.shape[-1]
    Wu = weights((m, m), U.dtype, 1)
    Wv = weights((n, n), U.dtype, 2)
    Wp = weights((m, n), U.dtype, 3)
    top = max(k - 1, 1)  # a projector onto a leading block, not the whole range
    Pu = U[..., :top] @ U[..., :top].mH
    Pv = Vh[..., :top, :].mH @ Vh[..., :top, :]
    polar = U @ Vh
    return (
        (Pu * Wu).real.sum()
        + (Pv * Wv).real.sum()
        + (polar * Wp).real.sum()
        + (S.pow(2) * torch.arange(1, k + 1, dtype=S.dtype)).sum()
    )


def _separated(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    *batch, m, n = shape
    s = 1.0 + spectrum("decaying", min(m, n))
    return matrix_with_singular_values(s, m, n, batch=batch, dtype=dtype, seed=seed)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.complex64, C128])
@pytest.mark.parametrize("full", [False, True])
def test_outputs_match_torch(shape: tuple[int, ...], dtype: torch.dtype, full: bool) -> None:
    A = _separated(shape, dtype)
    U, S, Vh = torchsvd.svd(A, full_matrices=full)
    Ut, St, Vht = torch.linalg.svd(A, full_matrices=full)
    assert U.shape == Ut.shape and S.shape == St.shape and Vh.shape == Vht.shape
    assert S.dtype == St.dtype and U.dtype == A.dtype
    torch.testing.assert_close(S, St)
    k = S.shape[-1]
    recon = (U[..., :k] * S.unsqueeze(-2).to(dtype)) @ Vh[..., :k, :]
    torch.testing.assert_close(recon, A, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torchsvd.svdvals(A), torch.linalg.svdvals(A))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype: torch.dtype) -> None:
    A = _separated((4, 3), torch.float32).to(dtype).requires_grad_()
    U, S, Vh = torchsvd.svd(A)
    assert U.dtype == S.dtype == Vh.dtype == dtype
    (U @ Vh).sum().backward()
    assert A.grad is not None and A.grad.dtype == dtype and torch.isfinite(A.grad).all()
    assert torchsvd.svdvals(A.detach()).dtype == dtype


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [F64, C128])
def test_gradcheck_separated(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    A = _separated(shape, dtype).requires_grad_()

    def f(X: torch.Tensor) -> torch.Tensor:
        return _invariant_loss(*torchsvd.svd(X))

    assert torch.autograd.gradcheck(f, A, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, A)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [F64, C128])
def test_gradient_equals_torch_at_separated_spectrum(
    shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    A = _separated(shape, dtype, seed=4).requires_grad_()
    (ours,) = torch.autograd.grad(_invariant_loss(*torchsvd.svd(A)), A)
    (ref,) = torch.autograd.grad(_invariant_loss(*torch.linalg.svd(A, full_matrices=False)), A)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [F64, C128])
def test_polar_factor_at_orthogonal_matrix(dtype: torch.dtype) -> None:
    """All singular values tied: PyTorch's gradient is NaN, ours matches differences."""
    Q = matrix_with_singular_values(torch.ones(4, dtype=F64), 4, 4, dtype=dtype, seed=7)
    W = weights((4, 4), dtype, 8)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, _, Vh = torchsvd.svd(X)
        return ((U @ Vh) * W).real.sum()

    A = Q.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(A), A)
    torch.testing.assert_close(grad, numerical_gradient(loss, Q), rtol=0, atol=1e-6)

    # The failure this library exists to fix: torch divides by gaps that are rounding noise.
    U, _, Vh = torch.linalg.svd(A)
    (torch_grad,) = torch.autograd.grad(((U @ Vh) * W).real.sum(), A)
    assert not torch.isfinite(torch_grad).all() or (torch_grad - grad).abs().max() > 1e-2


def test_identity_all_ties_gradient() -> None:
    eye = torch.eye(3, dtype=F64)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, _, Vh = torchsvd.svd(X)
        return (U @ Vh)[0, 1] + (U @ Vh).trace()

    A = eye.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(A), A)
    torch.testing.assert_close(grad, numerical_gradient(loss, eye), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(5, 5), (6, 4), (4, 6)])
def test_projector_with_tie_inside_block(shape: tuple[int, int]) -> None:
    m, n = shape
    s = torch.tensor([2.0, 2.0, 1.0, 0.5], dtype=F64)
    A0 = matrix_with_singular_values(s, m, n, seed=11)
    W = weights((m, m), F64, 12)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, _, _ = torchsvd.svd(X)
        return ((U[:, :2] @ U[:, :2].mT) * W).sum()

    A = A0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(A), A)
    torch.testing.assert_close(grad, numerical_gradient(loss, A0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [1e150, 1e-150])
def test_extreme_scales(scale: float) -> None:
    """σ² would overflow/underflow: gradients must stay finite and scale as 1/scale."""
    A0 = _separated((4, 3), F64, seed=5)
    W = weights((4, 3), F64, 6)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, _, Vh = torchsvd.svd(X)
        return ((U @ Vh) * W).sum()

    A = A0.clone().requires_grad_()
    (g1,) = torch.autograd.grad(loss(A), A)
    B = (A0 * scale).requires_grad_()
    (g2,) = torch.autograd.grad(loss(B), B)
    assert torch.isfinite(g2).all()
    torch.testing.assert_close(g2 * scale, g1, rtol=1e-10, atol=0)


def test_rank_deficient_range_projector() -> None:
    s = torch.tensor([3.0, 1.0, 0.0, 0.0], dtype=F64)
    A0 = matrix_with_singular_values(s, 7, 4, seed=13)
    W = weights((7, 7), F64, 14)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, _, _ = torchsvd.svd(X)
        return ((U[:, :2] @ U[:, :2].mT) * W).sum()

    A = A0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(A), A)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, numerical_gradient(loss, A0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [F64, C128])
def test_zero_matrix_has_finite_gradient(dtype: torch.dtype) -> None:
    """S of the zero matrix is differentiable (a subgradient); U @ Vh is not defined and warns."""
    A = torch.zeros(3, 4, dtype=dtype, requires_grad=True)
    U, S, Vh = torchsvd.svd(A)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="numerically zero"):
        (S.sum() + (U @ Vh).real.sum()).backward()
    assert A.grad is not None and torch.isfinite(A.grad).all()


@pytest.mark.parametrize("shape", [(5, 3), (3, 5)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_full_matrices_complement_cotangent(shape: tuple[int, int], dtype: torch.dtype) -> None:
    """Extra columns enter through their subspace (projector): exact, where torch drops them."""
    m, n = shape
    A0 = _separated(shape, dtype, seed=15)
    Wu = weights((m, m), dtype, 16)
    Wv = weights((n, n), dtype, 17)
    k = min(m, n)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, _, Vh = torchsvd.svd(X, full_matrices=True)
        Pu = U[:, k:] @ U[:, k:].mH
        Pv = Vh[k:].mH @ Vh[k:]
        return (Pu * Wu).real.sum() + (Pv * Wv).real.sum() + (U[:, :1] @ Vh[:1]).real.sum()

    A = A0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(A), A)
    torch.testing.assert_close(grad, numerical_gradient(loss, A0), rtol=0, atol=1e-6)
    torch.autograd.gradcheck(loss, A, check_forward_ad=True)


@pytest.mark.parametrize("dtype", [F64, C128])
@pytest.mark.parametrize("spec", ["ties", "identity", "zeros", "decaying"])
@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5)])
def test_adjoint_identity(dtype: torch.dtype, spec: str, shape: tuple[int, int]) -> None:
    """⟨vjp(g), dA⟩ = ⟨g, jvp(dA)⟩ for every cotangent, also at ties and zeros."""
    m, n = shape
    A = matrix_with_singular_values(spectrum(spec, min(m, n)), m, n, dtype=dtype, seed=20)
    dA = weights((m, n), dtype, 21)
    _, tangents = torch.func.jvp(lambda X: torchsvd.svd(X), (A,), (dA,))
    cots = tuple(weights(tuple(t.shape), t.dtype, 22 + i) for i, t in enumerate(tangents))
    _, vjp_fn = torch.func.vjp(lambda X: torchsvd.svd(X), A)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torchsvd.DegenerateGradientWarning)
        (gA,) = vjp_fn(cots)
    lhs = (gA.conj() * dA).real.sum()
    rhs = sum((c.conj() * t).real.sum() for c, t in zip(cots, tangents, strict=True))
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_basis_dependent_loss_at_tie_warns() -> None:
    A = matrix_with_singular_values(torch.tensor([2.0, 2.0, 1.0], dtype=F64), 3, 3, seed=30)
    A.requires_grad_()
    U, _, _ = torchsvd.svd(A)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="tied singular values"):
        U[0, 0].backward()
    assert A.grad is not None and torch.isfinite(A.grad).all()


def test_phase_dependent_complex_loss_warns() -> None:
    A = _separated((3, 3), C128).requires_grad_()
    U, _, _ = torchsvd.svd(A)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="phase"):
        U[0, 0].real.backward()


def test_broadening_is_finite_and_converges_to_exact() -> None:
    A = matrix_with_singular_values(torch.tensor([1.0, 1.0 + 1e-7, 0.5], dtype=F64), 4, 3, seed=31)
    A.requires_grad_()

    def grad(eps: float) -> torch.Tensor:
        U, _, _ = torchsvd.svd(A, broadening=eps)
        (g,) = torch.autograd.grad((U[:, :1] @ U[:, :1].mT).sum(), A)
        return g

    broad = grad(1e-3)
    assert torch.isfinite(broad).all() and broad.abs().max() < 1e4
    exact = grad(0.0)
    assert exact.abs().max() > 1e5  # a nearly-tied, basis-dependent loss has a huge derivative
    A2 = _separated((4, 3), F64).requires_grad_()
    U, _, Vh = torchsvd.svd(A2, broadening=1e-12)
    (g1,) = torch.autograd.grad((U @ Vh).sum(), A2)
    U, _, Vh = torchsvd.svd(A2)
    (g2,) = torch.autograd.grad((U @ Vh).sum(), A2)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- resolved small σ


def test_resolved_small_singular_value_keeps_reciprocal() -> None:
    """σ_2 = 1e-9 is far above the numerical-rank level (3·eps): d(U Vh)[2, 1]/dA[2, 1] = 1e9."""
    A0 = torch.tensor([[1.0, 0.0], [0.0, 1e-9], [0.0, 0.0]], dtype=F64)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, _, Vh = torchsvd.svd(X)
        return (U @ Vh)[2, 1]

    A = A0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(A), A)
    ref = numerical_gradient(loss, A0, h=1e-13)
    torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-3)
    assert abs(float(grad[2, 1]) - 1e9) < 1e3


@pytest.mark.parametrize("shape", [(4, 4), (6, 4), (4, 6)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_tiny_spectrum_matches_torch(shape: tuple[int, int], dtype: torch.dtype) -> None:
    """σ = (1, .5, 1e-9, 5e-10): distinct and resolved, so torch's autograd is a reference
    (the test checks that the reference gradient norm is above 1e8)."""
    m, n = shape
    s = torch.tensor([1.0, 0.5, 1e-9, 5e-10], dtype=F64)
    A0 = matrix_with_singular_values(s, m, n, dtype=dtype, seed=60)
    W = weights((m, n), dtype, 61)

    def loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
        return ((U @ Vh) * W).real.sum() + (U[:, :2] @ U[:, :2].mH).real.sum()

    A = A0.clone().requires_grad_()
    (ours,) = torch.autograd.grad(loss(*torchsvd.svd(A, tie_rtol=0.0)), A)
    (ref,) = torch.autograd.grad(loss(*torch.linalg.svd(A, full_matrices=False)), A)
    assert ref.norm() > 1e8
    assert rel(ours, ref) < 1e-6
    # With the default tie_rtol the pair (1e-9, 5e-10) is a near tie; U Vh and a projector
    # that keeps the pair together do not depend on the basis inside it (their numerators are
    # rounding, and dropped), so nothing changes.
    (default,) = torch.autograd.grad(loss(*torchsvd.svd(A)), A)
    assert rel(default, ref) < 1e-6


@pytest.mark.parametrize("batch", [(), (512,)], ids=["general", "fused-3x3"])
def test_resolved_near_tie_of_small_values_is_exact(batch: tuple[int, ...]) -> None:
    """σ = (1, 3.8e-10, 1.9e-10): a projector splitting the small pair depends on its basis,
    which the gap (far above rounding, though below tie_rtol·σ_max) determines. Its O(1) term is
    kept, silently and exactly, on the general path and in the batched 3×3 kernel."""
    s = torch.tensor([1.0, 3.8e-10, 1.9e-10], dtype=F64)
    A0 = matrix_with_singular_values(s, 3, 3, batch=batch, seed=62)
    W = weights(A0.shape, F64, 63)

    def loss(U: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        Uk = U[..., :2]
        return (W * (Uk @ (Uk.mH @ A))).sum()

    A = A0.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (ours,) = torch.autograd.grad(loss(torchsvd.svd(A)[0], A), A)
    A = A0.clone().requires_grad_()
    (ref,) = torch.autograd.grad(loss(torch.linalg.svd(A, full_matrices=False)[0], A), A)
    assert rel(ours, ref) < 1e-5


@pytest.mark.parametrize("batch", [(), (512,)], ids=["general", "fused-3x3"])
def test_resolved_near_tie_of_small_values_forward_mode(batch: tuple[int, ...]) -> None:
    """The forward rule of the same case: the tangent of the projector splitting the resolved
    pair (1, 3.8e-10, 1.9e-10) is of order one; dropping the pair's term would give 0."""
    s = torch.tensor([1.0, 3.8e-10, 1.9e-10], dtype=F64)
    A = matrix_with_singular_values(s, 3, 3, batch=batch, seed=62)
    dA = weights(A.shape, F64, 64)

    def loss(svd: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]) -> Callable:
        def f(X: torch.Tensor) -> torch.Tensor:
            Uk = svd(X)[0][..., :2]
            return (Uk @ Uk.mH).sum(dim=(-2, -1))

        return f

    ours = torch.func.jvp(loss(torchsvd.svd), (A,), (dA,))[1]
    ref = torch.func.jvp(loss(partial(torch.linalg.svd, full_matrices=False)), (A,), (dA,))[1]
    assert ref.abs().max() > 1e-2
    assert rel(ours, ref) < 1e-5


@pytest.mark.parametrize("batch", [(), (512,)], ids=["general", "fused-3x2"])
def test_complement_projector_at_a_small_value_is_exact(batch: tuple[int, ...]) -> None:
    """A tall 3×2 with σ = (1, 3e-12): the projector onto the last columns of a full U is
    I − u₁u₁ᵀ, which does not depend on σ₂'s vector; the rounding of its out-of-span cotangent
    divided by the small σ₂ must not reach the gradient (it did, at 5e-5 relative)."""
    s = torch.tensor([1.0, 3e-12], dtype=F64)
    A0 = matrix_with_singular_values(s, 3, 2, batch=batch, seed=70)
    W = weights((*batch, 3, 3), F64, 71)
    A = A0.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        U = torchsvd.svd(A, full_matrices=True)[0][..., 1:]
        (ours,) = torch.autograd.grad((W * (U @ U.mT)).sum(), A)
    A = A0.clone().requires_grad_()
    u = torch.linalg.svd(A, full_matrices=False)[0][..., :1]
    (ref,) = torch.autograd.grad((W * (torch.eye(3, dtype=F64) - u @ u.mT)).sum(), A)
    assert rel(ours, ref) < 1e-9


# --------------------------------------------------------------------------- reconstructions


def test_reconstruction_at_tie_warns_and_low_rank_is_right() -> None:
    """U diag(S) Vh = A at I(3): the true gradient is W; the SVD backward cannot give it."""
    W = torch.arange(9.0, dtype=F64).reshape(3, 3)
    A = torch.eye(3, dtype=F64, requires_grad=True)
    U, S, Vh = torchsvd.svd(A)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="reconstruction"):
        (wrong,) = torch.autograd.grad((W * ((U * S) @ Vh)).sum(), A)
    assert (wrong - W).abs().max() > 1  # the documented failure
    (right,) = torch.autograd.grad((W * torchsvd.low_rank(A, 3)).sum(), A)
    torch.testing.assert_close(right, W)


@pytest.mark.parametrize("dtype", [F64, C128])
def test_truncation_at_tie_warns(dtype: torch.dtype) -> None:
    """Rank-2 truncation at σ = (2, 2, 1): warns; low_rank matches central differences."""
    A0 = matrix_with_singular_values(torch.tensor([2.0, 2.0, 1.0], dtype=F64), 4, 3, dtype=dtype)
    W = weights((4, 3), dtype, 62)
    A = A0.clone().requires_grad_()
    U, S, Vh = torchsvd.svd(A)
    trunc = (U[:, :2] * S[:2].to(dtype)) @ Vh[:2]
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="reconstruction"):
        (wrong,) = torch.autograd.grad((W * trunc).real.sum(), A)

    def right(X: torch.Tensor) -> torch.Tensor:
        return (W * torchsvd.low_rank(X, 2)).real.sum()

    (grad,) = torch.autograd.grad(right(A), A)
    ref = numerical_gradient(right, A0)
    torch.testing.assert_close(grad, ref, rtol=0, atol=1e-6)
    assert (wrong - ref).abs().max() > 1e-2


def test_reconstruction_near_tie_of_small_values() -> None:
    """(1e-9, 5e-10) are closer than tie_rtol·σ_max but resolved: the reconstruction keeps its
    term and is exact (its gradient is W); at an unresolved tie of small values it warns."""
    W = weights((3, 3), F64, 64)
    for s, exact in (([1.0, 1e-9, 5e-10], True), ([1.0, 1e-9, 1e-9], False)):
        A = matrix_with_singular_values(torch.tensor(s, dtype=F64), 3, 3, seed=63)
        A = A.requires_grad_()
        U, S, Vh = torchsvd.svd(A)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (grad,) = torch.autograd.grad((W * ((U * S) @ Vh)).sum(), A)
        messages = [str(w.message) for w in caught]
        if exact:
            assert not messages
            assert rel(grad, W) < 1e-6
        else:
            assert any("reconstruction" in x for x in messages)


@pytest.mark.parametrize("spec", ["identity", "ties"])
def test_invariant_losses_with_s_do_not_warn(spec: str) -> None:
    """Polar factor plus functions of S at ties: exact, so no reconstruction warning."""
    A0 = matrix_with_singular_values(1 + spectrum(spec, 4), 5, 4, seed=65)
    W = weights((5, 4), F64, 66)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, S, Vh = torchsvd.svd(X)
        return (W * (U @ Vh)).sum() + S.sum() + (S**2).sum() * (W * (U @ Vh)).sum()

    A = A0.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (grad,) = torch.autograd.grad(loss(A), A)
    torch.testing.assert_close(grad, numerical_gradient(loss, A0), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- null spaces


def _null_losses() -> list[tuple[str, tuple[int, int], list[float], torch.dtype]]:
    return [
        ("polar", (4, 4), [3.0, 1.0, 0.0, 0.0], F64),  # two zeros: J_ij between them
        ("last_u", (5, 3), [3.0, 1.0, 0.0], F64),  # u of a zero σ, tall: out of span
        ("last_v", (3, 5), [3.0, 1.0, 0.0], F64),  # v of a zero σ, wide
        ("null_projector", (6, 4), [3.0, 1.0, 0.0, 0.0], F64),  # includes null vectors
        ("polar", (3, 3), [2.0, 1.0, 0.0], C128),  # complex: independent phases at σ = 0
    ]


def _null_loss(name: str, U: torch.Tensor, Vh: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    if name == "polar":
        return ((U @ Vh) * W).real.sum()
    if name == "last_u":
        return (U[:, -1] * W[:, 0]).sum() ** 2
    if name == "last_v":
        return (Vh[-1] * W[0]).sum() ** 2
    return (U[:, :3] @ U[:, :3].mH * W[:, :1]).sum()


@pytest.mark.parametrize(("name", "shape", "s", "dtype"), _null_losses())
def test_null_space_dependent_loss_warns(
    name: str, shape: tuple[int, int], s: list[float], dtype: torch.dtype
) -> None:
    m, n = shape
    A0 = matrix_with_singular_values(torch.tensor(s, dtype=F64), m, n, dtype=dtype, seed=70)
    W = (
        weights((m, max(m, n)), dtype, 71)[:, :n]
        if name != "null_projector"
        else weights((m, m), dtype, 71)
    )
    A = A0.clone().requires_grad_()
    U, _, Vh = torchsvd.svd(A)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="numerically zero"):
        (grad,) = torch.autograd.grad(_null_loss(name, U, Vh, W), A)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [F64, C128])
@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (4, 4)])
def test_null_space_invariant_losses_do_not_warn(
    shape: tuple[int, int], dtype: torch.dtype
) -> None:
    """Projectors onto the non-zero part, functions of S and the truncation to the numerical
    rank are invariant under the choice of null vectors: exact, and silent."""
    m, n = shape
    s = torch.tensor([3.0, 1.0, 0.0, 0.0], dtype=F64)
    A0 = matrix_with_singular_values(s, m, n, dtype=dtype, seed=72)
    Wu, Wv, Wa = weights((m, m), dtype, 73), weights((n, n), dtype, 74), weights((m, n), dtype, 75)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, S, Vh = torchsvd.svd(X)
        Pu = U[:, :2] @ U[:, :2].mH
        Pv = Vh[:2].mH @ Vh[:2]
        return (
            (Pu * Wu).real.sum()
            + (Pv * Wv).real.sum()
            + (S**2).sum()
            + (torchsvd.low_rank(X, 2) * Wa).real.sum()
        )

    A = A0.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (grad,) = torch.autograd.grad(loss(A), A)
    torch.testing.assert_close(grad, numerical_gradient(loss, A0), rtol=0, atol=1e-6)


def test_polar_at_full_rank_does_not_warn() -> None:
    A = _separated((5, 3), C128, seed=76).requires_grad_()
    U, _, Vh = torchsvd.svd(A)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (U @ Vh).real.sum().backward()


def test_single_zero_of_real_square_matrix_warns_for_the_pair_sign() -> None:
    """At one zero σ of a real square matrix u_i and v_i flip sign independently: U @ Vh (a loss
    of u_i v_iᵀ) has no derivative and warns, as polar does; the null-space projectors u_i u_iᵀ
    and v_i v_iᵀ are smooth there and do not warn."""
    A0 = matrix_with_singular_values(torch.tensor([2.0, 1.0, 0.0], dtype=F64), 3, 3, seed=77)
    A = A0.clone().requires_grad_()
    U, _, Vh = torchsvd.svd(A)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="numerically zero"):
        (U @ Vh).sum().backward()
    with pytest.warns(torchsvd.DegenerateGradientWarning):
        torchsvd.polar(A0)
    W = weights((3, 3), F64, seed=78)
    U, _, Vh = torchsvd.svd(A0.clone().requires_grad_())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = (W * (U[:, 2:] @ U[:, 2:].mT)).sum() + (W.mT * (Vh[2:].mT @ Vh[2:])).sum()
        loss.backward()


# --------------------------------------------------------------------------- second derivatives


def _hessian_by_differences(loss: Callable[[torch.Tensor], torch.Tensor], X0: torch.Tensor):
    """Central differences of the (exact) first derivative, one column per entry."""

    def grad_entry(i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def f(Y: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                Y = Y.clone().requires_grad_()
                return torch.autograd.grad(loss(Y), Y)[0].flatten()[i]

        return f

    rows = [numerical_gradient(grad_entry(i), X0, h=1e-5).flatten() for i in range(X0.numel())]
    return torch.stack(rows)


def _sv_losses() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    return {
        "frobenius2": lambda X: (torchsvd.svdvals(X) ** 2).sum(),
        "cubes": lambda X: (torchsvd.svdvals(X) ** 3).sum(),
        "coupled": lambda X: (
            (torchsvd.svdvals(X) ** 2).sum() ** 2 + torch.log1p(torchsvd.svdvals(X) ** 4).sum()
        ),
    }


@pytest.mark.parametrize("loss_name", ["frobenius2", "cubes", "coupled"])
@pytest.mark.parametrize(
    ("shape", "s"),
    [
        ((3, 3), [1.0, 1.0, 1.0]),
        ((4, 3), [2.0, 2.0, 1.0]),
        ((5, 5), [3.0, 3.0, 3.0, 1.0, 1.0]),
        ((3, 4), [2.0, 1.0, 1.0]),
        ((4, 4), [2.0, 1.0, 0.0, 0.0]),
        ((3, 5), [2.0, 0.0, 0.0]),
        ((4, 3), [3.0, 2.0, 1.0]),
    ],
)
def test_svdvals_hessian_exact_at_ties_and_zeros(
    loss_name: str, shape: tuple[int, int], s: list[float]
) -> None:
    """Reverse-over-reverse Hessian against central differences of the exact gradient, at ties
    and zeros (dropping the tie terms is off by 1 for Σσ² and by 3 for Σσ³ at I(3))."""
    loss = _sv_losses()[loss_name]
    X0 = matrix_with_singular_values(torch.tensor(s, dtype=F64), *shape, seed=80)
    if s == [1.0, 1.0, 1.0]:
        X0 = torch.eye(3, dtype=F64)
    H = torch.autograd.functional.hessian(loss, X0).reshape(X0.numel(), -1)
    ref = _hessian_by_differences(loss, X0)
    # Σσ³ is C² but not C³ at σ = 0 (6|σ|): differences there are off by about 6h.
    tol = 1e-4 if (loss_name == "cubes" and 0.0 in s) else 1e-6
    torch.testing.assert_close(H, ref, rtol=0, atol=tol)


def test_svdvals_frobenius_hessian_is_twice_identity() -> None:
    X = torch.eye(3, dtype=F64)
    H = torch.autograd.functional.hessian(lambda Y: (torchsvd.svdvals(Y) ** 2).sum(), X)
    torch.testing.assert_close(H.reshape(9, 9), 2 * torch.eye(9, dtype=F64))


@pytest.mark.parametrize("dtype", [F64, C128])
def test_svdvals_second_derivative_batched_coupled_complex(dtype: torch.dtype) -> None:
    """A loss coupling two batch elements, both with ties; complex too: the directional second
    derivative ⟨∇(⟨∇L, D⟩)⟩ against differences of the first derivative."""
    s = torch.tensor([[2.0, 2.0, 1.0], [1.0, 1.0, 1.0]], dtype=F64)
    X0 = torch.stack(
        [matrix_with_singular_values(s[b], 4, 3, dtype=dtype, seed=81 + b) for b in range(2)]
    )
    D = weights(tuple(X0.shape), dtype, 83)

    def loss(X: torch.Tensor) -> torch.Tensor:
        S = torchsvd.svdvals(X)
        return (S[0] ** 2).sum() * (S[1] ** 3).sum() + (S**4).sum()

    def directional(X: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            Y = X.clone().requires_grad_() if not X.requires_grad else X
            (g,) = torch.autograd.grad(loss(Y), Y, create_graph=True)
            return inner(g, D)

    X = X0.clone().requires_grad_()
    (hd,) = torch.autograd.grad(directional(X), X)
    ref = numerical_gradient(lambda Y: directional(Y).detach(), X0, h=1e-5)
    torch.testing.assert_close(hd, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [F64, C128])
def test_svdvals_gradgradcheck_separated(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    A = _separated(shape, dtype, seed=84).requires_grad_()

    def f(X: torch.Tensor) -> torch.Tensor:
        S = torchsvd.svdvals(X)
        return (S**3).sum() + S.prod()

    assert torch.autograd.gradcheck(f, A, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, A, check_fwd_over_rev=True)


def test_svdvals_hessian_under_torch_func() -> None:
    """Exact at separated spectra; at a tie the loss's Hessian is unavailable: warns."""
    f = lambda X: (torchsvd.svdvals(X) ** 3).sum()  # noqa: E731
    Xs = _separated((3, 3), F64, seed=85)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchsvd.DegenerateGradientWarning)
        H = torch.func.hessian(f)(Xs)
        H_rev = torch.func.jacrev(torch.func.jacrev(f))(Xs)
    ref = torch.autograd.functional.hessian(f, Xs)
    torch.testing.assert_close(H, ref)
    torch.testing.assert_close(H_rev, ref)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="torch.func"):
        torch.func.hessian(f)(torch.eye(3, dtype=F64))


# --------------------------------------------------------------------------- transforms


def test_torch_func_transforms() -> None:
    A = _separated((3, 4, 3), F64, seed=40)

    def f(X: torch.Tensor) -> torch.Tensor:
        return _invariant_loss(*torchsvd.svd(X))

    per_matrix = torch.func.vmap(torch.func.grad(f), randomness="same")(A)
    for i in range(A.shape[0]):
        Ai = A[i].clone().requires_grad_()
        (gi,) = torch.autograd.grad(f(Ai), Ai)
        torch.testing.assert_close(per_matrix[i], gi)
    jac = torch.func.jacrev(lambda X: torchsvd.svdvals(X))(A[0])
    jac_fwd = torch.func.jacfwd(lambda X: torchsvd.svdvals(X))(A[0])
    torch.testing.assert_close(jac, jac_fwd)
    U, _, Vh = torch.linalg.svd(A[0], full_matrices=False)
    torch.testing.assert_close(jac, torch.einsum("ik,jk->kij", U, Vh.mT))


def test_torch_compile_fullgraph() -> None:
    """svd and svdvals trace without graph breaks; gradients equal eager ones."""
    A = _separated((4, 3), torch.float32).requires_grad_()

    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(X: torch.Tensor) -> torch.Tensor:
        U, S, Vh = torchsvd.svd(X)
        return (U @ Vh).sum() + S.sum() + torchsvd.svdvals(X).pow(2).sum()

    f(A).backward()
    B = A.detach().clone().requires_grad_()
    U, S, Vh = torchsvd.svd(B)
    ((U @ Vh).sum() + S.sum() + torchsvd.svdvals(B).pow(2).sum()).backward()
    assert A.grad is not None and B.grad is not None
    torch.testing.assert_close(A.grad, B.grad)


# --------------------------------------------------------------------------- property sweep


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    m=st.integers(1, 5),
    n=st.integers(1, 5),
    kind=st.sampled_from(["ties", "identity", "zeros", "cluster", "dynamic", "decaying"]),
    log_scale=st.integers(-30, 30),
    complex_=st.booleans(),
)
def test_property_no_nan_and_invariant_losses_match_differences(
    m: int, n: int, kind: str, log_scale: int, complex_: bool
) -> None:
    dtype = C128 if complex_ else F64
    s = spectrum(kind, min(m, n), scale=10.0**log_scale)
    A0 = matrix_with_singular_values(s, m, n, dtype=dtype, seed=m * 7 + n)
    W = weights((m, n), dtype, 50)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, S, Vh = torchsvd.svd(X)
        return (S / 10.0**log_scale).sum() + ((U @ Vh) * W).real.sum() * (kind != "zeros")

    A = A0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(A), A)
    assert torch.isfinite(grad).all()
    if kind in ("ties", "identity", "decaying"):  # smooth there: differences are a reference
        ref = numerical_gradient(loss, A0, h=1e-6 * 10.0**log_scale)
        torch.testing.assert_close(grad * 10.0**log_scale, ref * 10.0**log_scale, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- bad input


def test_bad_dtype_raises_type_error() -> None:
    with pytest.raises(TypeError, match="floating dtype"):
        torchsvd.svd(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating dtype"):
        torchsvd.svdvals(torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        torchsvd.svd([[1.0, 2.0]])  # type: ignore[arg-type]


def test_bad_rank_and_values_raise_value_error() -> None:
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        torchsvd.svd(torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        torchsvd.svd(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="infinite"):
        torchsvd.svdvals(torch.tensor([[1.0, float("inf")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"tie_rtol must be a finite float in \[0, 1\), got -1"):
        torchsvd.svd(torch.eye(2), tie_rtol=-1.0)
    with pytest.raises(ValueError, match="tie_rtol"):
        torchsvd.svd(torch.eye(2), tie_rtol=float("nan"))
    with pytest.raises(TypeError, match="tie_rtol must be a float, got str"):
        torchsvd.svd(torch.eye(2), tie_rtol="small")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="full_matrices"):
        torchsvd.svd(torch.eye(2), full_matrices="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0), (0, 2, 2), (2, 0, 4)])
@pytest.mark.parametrize("full", [False, True])
def test_empty_inputs_return_shaped_empties(shape: tuple[int, ...], full: bool) -> None:
    A = torch.zeros(shape, dtype=F64, requires_grad=True)
    U, S, Vh = torchsvd.svd(A, full_matrices=full)
    Ut, St, Vht = torch.linalg.svd(A.detach(), full_matrices=full)
    assert (U.shape, S.shape, Vh.shape) == (Ut.shape, St.shape, Vht.shape)
    assert torchsvd.svdvals(A).shape == St.shape
    (S.sum() + U.sum() + Vh.sum()).backward()
    assert A.grad is not None and A.grad.shape == A.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, F64, C128])
def test_cuda_matches_cpu(dtype: torch.dtype) -> None:
    A = _separated((2, 5, 4), dtype).requires_grad_()
    (cpu,) = torch.autograd.grad(_invariant_loss(*torchsvd.svd(A)), A)
    Ac = A.detach().cuda().requires_grad_()
    (gpu,) = torch.autograd.grad(_invariant_loss(*(t.cpu() for t in torchsvd.svd(Ac))), Ac)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=tol)


def test_options_always_validated() -> None:
    """Both options are checked whether or not the other is given."""
    with pytest.raises(
        ValueError, match=r"broadening must be a finite float in \[0, inf\), got -1"
    ):
        torchsvd.svd(torch.eye(2), broadening=-1.0)
    with pytest.raises(ValueError, match=r"broadening.*nan"):
        torchsvd.svd(torch.eye(2), broadening=float("nan"))
    with pytest.raises(TypeError, match="rtol"):
        torchsvd.svd(torch.eye(2), rtol=1e-8)  # type: ignore[call-arg]


@pytest.mark.parametrize("full", [False, True])
def test_meta_tensors_propagate_shapes(full: bool) -> None:
    A = torch.empty(2, 5, 3, device="meta", requires_grad=True)
    ours = torchsvd.svd(A, full_matrices=full)
    ref = torch.linalg.svd(A.detach(), full_matrices=full)
    assert [t.shape for t in ours] == [t.shape for t in ref]
    assert all(t.device.type == "meta" for t in ours)
    assert torchsvd.svdvals(A).shape == (2, 3)
    U, _, Vh = ours
    (U[..., :3] @ Vh[..., :3, :]).sum().backward()
    assert A.grad is not None and A.grad.shape == A.shape


def test_nan_under_torch_func_raises_value_error() -> None:
    bad = torch.tensor([[1.0, float("nan")], [0.0, 1.0]], dtype=F64)
    with pytest.raises(ValueError, match="NaN or infinite"):
        torch.func.grad(lambda X: torchsvd.svd(X)[1].sum())(bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        torch.func.vmap(torchsvd.svdvals)(bad[None])


def test_basis_dependent_loss_warns_under_torch_func() -> None:
    """The checks read the values through the torch.func wrappers (grad, vmap of grad)."""
    A = matrix_with_singular_values(torch.tensor([2.0, 2.0, 1.0], dtype=F64), 3, 3, seed=30)
    f = lambda X: torchsvd.svd(X)[0][0, 0]  # noqa: E731
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="tied singular values"):
        g = torch.func.grad(f)(A)
    assert torch.isfinite(g).all()
    separated = _separated((3, 3), F64, seed=31)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="tied singular values"):
        torch.func.vmap(torch.func.grad(f))(torch.stack([separated, A]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchsvd.DegenerateGradientWarning)
        torch.func.vmap(torch.func.grad(f))(torch.stack([separated, separated + 0.1]))
    B = matrix_with_singular_values(torch.tensor([2.0, 0.0, 0.0], dtype=F64), 3, 3, seed=32)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="numerically zero"):
        torch.func.grad(lambda X: (torchsvd.svd(X)[0] @ torchsvd.svd(X)[2]).sum())(B)


def test_batched_checks_only_where_needed() -> None:
    """A batch mixing separated, tied and rank-deficient matrices: each check sees its own."""
    tied = matrix_with_singular_values(torch.tensor([2.0, 2.0, 1.0], dtype=F64), 4, 3, seed=90)
    low = matrix_with_singular_values(torch.tensor([2.0, 1.0, 0.0], dtype=F64), 4, 3, seed=91)
    A = torch.stack([_separated((4, 3), F64, seed=92), tied, low]).requires_grad_()
    U, S, _ = torchsvd.svd(A)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.autograd.grad((U[..., :2] @ U[..., :2].mT).sum() + S.sum(), A, retain_graph=True)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="tied singular values"):
        torch.autograd.grad(U[1, 0, 0], A, retain_graph=True)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="numerically zero"):
        torch.autograd.grad(U[2, :, 2].sum() ** 2, A, retain_graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.autograd.grad(U[0, 0, 0] ** 2, A)  # separated: u_1 has a derivative
