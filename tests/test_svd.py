"""Tests of torchsvd.svd / svdvals: values, gradients (reverse, forward, second order) at
separated spectra, ties, zeros and extreme scales, torch.func, and input checks."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchsvd
from torchsvd.testing import matrix_with_singular_values, numerical_gradient, spectrum

F64, C128 = torch.float64, torch.complex128
SHAPES = [(5, 5), (6, 3), (3, 6), (2, 4, 3)]  # square, tall, wide, batched


def _weights(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    if not dtype.is_complex:
        return w.to(dtype)
    return torch.complex(w, torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)


def _invariant_loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
    """A loss of U, S and Vh that does not depend on the sign/phase of singular vectors."""
    m, n = U.shape[-2], Vh.shape[-1]
    k = S.shape[-1]
    Wu = _weights((m, m), U.dtype, 1)
    Wv = _weights((n, n), U.dtype, 2)
    Wp = _weights((m, n), U.dtype, 3)
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
    W = _weights((4, 4), dtype, 8)

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
    W = _weights((m, m), F64, 12)

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
    W = _weights((4, 3), F64, 6)

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
    W = _weights((7, 7), F64, 14)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, _, _ = torchsvd.svd(X)
        return ((U[:, :2] @ U[:, :2].mT) * W).sum()

    A = A0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(A), A)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, numerical_gradient(loss, A0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [F64, C128])
def test_zero_matrix_has_finite_gradient(dtype: torch.dtype) -> None:
    A = torch.zeros(3, 4, dtype=dtype, requires_grad=True)
    U, S, Vh = torchsvd.svd(A)
    (S.sum() + (U @ Vh).real.sum()).backward()
    assert A.grad is not None and torch.isfinite(A.grad).all()


@pytest.mark.parametrize("shape", [(5, 3), (3, 5)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_full_matrices_complement_cotangent(shape: tuple[int, int], dtype: torch.dtype) -> None:
    """Extra columns enter through their subspace (projector): exact, where torch drops them."""
    m, n = shape
    A0 = _separated(shape, dtype, seed=15)
    Wu = _weights((m, m), dtype, 16)
    Wv = _weights((n, n), dtype, 17)
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
    dA = _weights((m, n), dtype, 21)
    _, tangents = torch.func.jvp(lambda X: torchsvd.svd(X), (A,), (dA,))
    cots = tuple(_weights(tuple(t.shape), t.dtype, 22 + i) for i, t in enumerate(tangents))
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


@pytest.mark.parametrize("spec", ["identity", "decaying"])
def test_svdvals_second_derivative(spec: str) -> None:
    """‖A‖_F² = Σσ² has Hessian 2·I. Exact at a separated spectrum; finite at a tie, where the
    within-tie term needs f′ (a limitation documented in docs/math.md: use svd_apply there)."""
    A = matrix_with_singular_values(1 + spectrum(spec, 3), 3, 3, seed=41).requires_grad_()
    direction = torch.arange(9.0, dtype=F64).reshape(3, 3)
    (g,) = torch.autograd.grad(torchsvd.svdvals(A).pow(2).sum(), A, create_graph=True)
    (h,) = torch.autograd.grad((g * direction).sum(), A)
    assert torch.isfinite(h).all()
    if spec == "decaying":
        torch.testing.assert_close(h, 2 * direction)


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


def test_torch_compile_smoke() -> None:
    A = _separated((4, 3), torch.float32).requires_grad_()

    @torch.compile(backend="aot_eager", fullgraph=False)
    def f(X: torch.Tensor) -> torch.Tensor:
        U, S, Vh = torchsvd.svd(X)
        return (U @ Vh).sum() + S.sum()

    f(A).backward()
    B = A.detach().clone().requires_grad_()
    U, S, Vh = torchsvd.svd(B)
    ((U @ Vh).sum() + S.sum()).backward()
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
    W = _weights((m, n), dtype, 50)

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
    with pytest.raises(ValueError, match="rtol"):
        torchsvd.svd(torch.eye(2), rtol=-1.0)
    with pytest.raises(ValueError, match="broadening"):
        torchsvd.svd(torch.eye(2), rtol=1e-8, broadening=-1.0)
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
