"""svds on complex matrices: forward against torch.linalg.svd, backward against dense autograd.

Complex singular vectors are fixed only up to a phase (u_i, v_i → e^{iφ} u_i, e^{iφ} v_i), so
comparisons go through phase-invariant quantities: projectors U Uᴴ, |aᴴu_i|², U Σ Vᴴ.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import torchsvd
from torchsvd import DegenerateGradientWarning, LinearOperator, svds
from torchsvd._topk import default_tol
from torchsvd.testing import matrix_with_singular_values, spectrum

C128 = torch.complex128
Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _small_gap(r: int) -> torch.Tensor:
    s = spectrum("decaying", r)
    s[4:] = s[4:] * (s[3] * 0.99 / s[4])  # σ_5 = 0.99 σ_4
    return s


def _projector(Q: torch.Tensor) -> torch.Tensor:
    return Q @ Q.mH


def _losses(m: int, n: int, k: int) -> dict[str, Loss]:
    gen = torch.Generator().manual_seed(7)
    Wm = torch.randn(m, m, generator=gen, dtype=C128)
    Wn = torch.randn(n, n, generator=gen, dtype=C128)
    Wmn = torch.randn(m, n, generator=gen, dtype=C128)
    ws = torch.randn(k, generator=gen, dtype=torch.float64)
    x = torch.randn(m, generator=gen, dtype=C128)
    y = torch.randn(n, generator=gen, dtype=C128)
    return {
        "S": lambda U, S, Vh: (S * ws).sum() + (S**2).sum(),
        "U": lambda U, S, Vh: (_projector(U) * Wm.conj()).real.sum(),
        "V": lambda U, S, Vh: (_projector(Vh.mH) * Wn.conj()).real.sum(),
        "mixed": lambda U, S, Vh: (
            ((U * S.unsqueeze(-2)) @ Vh * Wmn.conj()).real.sum()
            + ((U @ Vh) * Wmn.conj()).real.sum()
            + ((x.conj() @ U).abs() ** 2 * ws).sum()
            + ((Vh @ y).abs() ** 2).sum()
        ),
    }


def _grad(fn: Callable[[torch.Tensor], Triplets], A: torch.Tensor, loss: Loss) -> torch.Tensor:
    A = A.detach().clone().requires_grad_()
    loss(*fn(A)).backward()
    assert A.grad is not None
    return A.grad


def _dense_topk(k: int) -> Callable[[torch.Tensor], Triplets]:
    def fn(A: torch.Tensor) -> Triplets:
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)
        return U[..., :k], S[..., :k], Vh[..., :k, :]

    return fn


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(("m", "n"), [(300, 200), (200, 300)])
@pytest.mark.parametrize("k", [1, 4])
def test_forward_matches_dense_svd(m: int, n: int, k: int) -> None:
    A = matrix_with_singular_values(_small_gap(min(m, n)), m, n, seed=1, dtype=C128)
    U, S, Vh = svds(A, k, tol=1e-12)
    assert U.dtype == Vh.dtype == C128 and S.dtype == torch.float64
    Ur, Sr, Vhr = torch.linalg.svd(A, full_matrices=False)
    s1 = Sr[0]
    assert float((A @ Vh.mH - U * S).norm(dim=0).max()) <= 1.01e-12 * s1
    assert float((A.mH @ U - Vh.mH * S).norm(dim=0).max()) <= 1.01e-12 * s1
    torch.testing.assert_close(S, Sr[:k], atol=1e-10, rtol=0)
    torch.testing.assert_close(_projector(U), _projector(Ur[:, :k]), atol=1e-8, rtol=0)
    torch.testing.assert_close(_projector(Vh.mH), _projector(Vhr[:k].mH), atol=1e-8, rtol=0)


def test_complex64_reaches_the_default_tol_batched() -> None:
    A = matrix_with_singular_values(
        spectrum("gaussian", 200, seed=3), 300, 200, batch=(2,), seed=2, dtype=torch.complex64
    )
    U, S, Vh = svds(A, 3)
    assert U.dtype == Vh.dtype == torch.complex64 and S.dtype == torch.float32
    A64 = A.to(C128)
    res = (A64.mH @ U.to(C128) - Vh.mH.to(C128) * S.double().unsqueeze(-2)).norm(dim=-2)
    s1 = torch.linalg.matrix_norm(A64, 2).unsqueeze(-1)
    assert bool((res <= 1.5 * default_tol(torch.complex64) * s1).all())
    torch.testing.assert_close(S.double(), torch.linalg.svdvals(A64)[..., :3], atol=1e-5, rtol=0)


@pytest.mark.parametrize("loss_name", ["S", "U", "V", "mixed"])
@pytest.mark.parametrize(("m", "n", "batch"), [(60, 40, ()), (40, 60, ()), (30, 30, (2,))])
def test_gradient_matches_dense_autograd(
    loss_name: str, m: int, n: int, batch: tuple[int, ...]
) -> None:
    A = matrix_with_singular_values(_small_gap(min(m, n)), m, n, batch=batch, seed=11, dtype=C128)
    loss = _losses(m, n, 3)[loss_name]
    got = _grad(lambda X: svds(X, 3, tol=1e-13), A, loss)
    want = _grad(_dense_topk(3), A, loss)
    assert _rel(got, want) <= 1e-8


@pytest.mark.parametrize("loss_name", ["U", "V", "mixed"])
@pytest.mark.parametrize(("m", "n"), [(300, 200), (200, 300)])
def test_gradient_through_the_krylov_forward(loss_name: str, m: int, n: int) -> None:
    A = matrix_with_singular_values(_small_gap(min(m, n)), m, n, seed=12, dtype=C128)
    loss = _losses(m, n, 4)[loss_name]
    got = _grad(lambda X: svds(X, 4, tol=1e-13), A, loss)
    want = _grad(_dense_topk(4), A, loss)
    assert _rel(got, want) <= 1e-8


def test_gradient_matches_central_differences() -> None:
    # Along a random complex direction dA: dL = Re⟨grad, dA⟩ (PyTorch's convention).
    A = matrix_with_singular_values(_small_gap(120), 150, 120, seed=4, dtype=C128)
    loss = _losses(150, 120, 4)["mixed"]
    grad = _grad(lambda X: svds(X, 4, tol=1e-13), A, loss)
    dA = torch.randn(A.shape, generator=torch.Generator().manual_seed(5), dtype=C128)
    dA = dA / dA.norm()  # a step well inside the gap σ_4 − σ_5 = 0.01 σ_4
    h = 1e-6
    with torch.no_grad():
        up = loss(*svds(A + h * dA, 4, tol=1e-13))
        down = loss(*svds(A - h * dA, 4, tol=1e-13))
    numeric = float((up - down) / (2 * h))
    analytic = float((grad.conj() * dA).real.sum())
    assert abs(numeric - analytic) <= 1e-7 * abs(analytic)


def test_operator_with_complex_parameters() -> None:
    # diag(d) + a bᴴ, never formed: gradients reach d (real), a and b (complex).
    gen = torch.Generator().manual_seed(0)
    n = 300
    d = torch.linspace(1.0, 2.0, n, dtype=torch.float64).requires_grad_()
    a = (0.05 * torch.randn(n, generator=gen, dtype=C128)).requires_grad_()
    b = torch.randn(n, generator=gen, dtype=C128).requires_grad_()
    op = LinearOperator(
        (n, n),
        lambda X: d[:, None] * X + a[:, None] * (b.conj() @ X),
        lambda Y: d[:, None] * Y + b[:, None] * (a.conj() @ Y),
        dtype=C128,
        params=(d, a, b),
    )
    loss = _losses(n, n, 3)["mixed"]
    loss(*svds(op, 3, tol=1e-13)).backward()
    got = [t.grad for t in (d, a, b)]
    ref = [t.detach().clone().requires_grad_() for t in (d, a, b)]
    dense = torch.diag(ref[0]).to(C128) + torch.outer(ref[1], ref[2].conj())
    loss(*_dense_topk(3)(dense)).backward()
    for g, r in zip(got, ref, strict=True):
        assert g is not None and r.grad is not None
        assert _rel(g, r.grad) <= 1e-8


def test_spectral_norm_gradient_is_u1_v1h() -> None:
    A = matrix_with_singular_values(
        spectrum("gaussian", 40, seed=0), 50, 40, batch=(2,), seed=1, dtype=C128
    ).requires_grad_()
    sigma = torchsvd.spectral_norm(A)
    U, S, Vh = torch.linalg.svd(A.detach())
    torch.testing.assert_close(sigma.detach(), S[..., 0], atol=1e-10, rtol=0)
    sigma.sum().backward()
    assert A.grad is not None
    torch.testing.assert_close(A.grad, U[..., :, :1] * Vh[..., :1, :], atol=1e-9, rtol=0)


def test_warm_start_from_a_complex_vh() -> None:
    A = matrix_with_singular_values(_small_gap(200), 300, 200, seed=6, dtype=C128)
    _, S, Vh = svds(A, 4, tol=1e-10)
    # A previous Vh holds conjugated rows; starting from it must find the same subspace at once.
    _, S2, Vh2 = svds(A + 1e-9 * torch.ones_like(A), 4, tol=1e-10, v0=Vh)
    torch.testing.assert_close(S2, S, atol=1e-8, rtol=0)
    torch.testing.assert_close(_projector(Vh2.mH), _projector(Vh.mH), atol=1e-7, rtol=0)


def test_phase_dependent_loss_warns() -> None:
    A = matrix_with_singular_values(_small_gap(40), 60, 40, seed=8, dtype=C128).requires_grad_()
    U = svds(A, 2)[0]
    with pytest.warns(DegenerateGradientWarning, match="phase"):
        U[0, 0].real.backward()
    assert A.grad is not None and bool(torch.isfinite(A.grad).all())


def test_transpose_instead_of_adjoint_is_rejected() -> None:
    # A common mistake with complex operators: rmatmat = Aᵀ Y instead of Aᴴ Y.
    A = matrix_with_singular_values(_small_gap(200), 300, 200, seed=9, dtype=C128)
    op = LinearOperator(A.shape, lambda X: A @ X, lambda Y: A.mT @ Y, dtype=C128)
    with pytest.raises(ValueError, match="adjoint"):
        svds(op, 2)


def test_complex_sparse_and_mismatched_v0_are_rejected() -> None:
    A = torch.randn(30, 20, dtype=C128)
    with pytest.raises(TypeError, match="sparse"):
        svds(A.to_sparse(), 2)
    with pytest.raises(TypeError, match="v0"):
        svds(A.real.contiguous(), 2, v0=torch.randn(2, 20, dtype=C128))
