"""block_lanczos: the Krylov basis and its invariants, restarts, drift, Gram–Schmidt, stagnation."""

from __future__ import annotations

import pytest
import torch

from _helpers import C128, F64, projector
from torchsvd import ConvergenceError, LinearOperator
from torchsvd._lanczos import (
    _Bidiagonalization,
    _orthonormal_rows,
    _orthonormalize,
    _project_out,
    _solve_lower,
    block_lanczos,
)
from torchsvd._operators import aslinearoperator
from torchsvd.testing import matrix_with_singular_values, spectrum


def _check_forward(
    A: torch.Tensor, k: int, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, tol: float
) -> None:
    Ur, Sr, _ = torch.linalg.svd(A, full_matrices=False)
    s1 = Sr[..., :1]
    r1 = (A @ Vh.mT - U * S.unsqueeze(-2)).norm(dim=-2)
    r2 = (A.mT @ U - Vh.mT * S.unsqueeze(-2)).norm(dim=-2)
    assert bool((r1 <= tol * s1 * 1.01).all()) and bool((r2 <= tol * s1 * 1.01).all())
    torch.testing.assert_close(S, Sr[..., :k], atol=1e-10, rtol=0)
    torch.testing.assert_close(projector(U), projector(Ur[..., :k]), atol=1e-8, rtol=0)


@pytest.mark.parametrize(("m", "n", "batch"), [(150, 100, ()), (90, 140, (2,))])
def test_thick_restarts(m: int, n: int, batch: tuple[int, ...]) -> None:
    # A small basis forces many restarts on a slowly converging (Gaussian) spectrum.
    s = spectrum("gaussian", min(m, n), seed=3)
    A = matrix_with_singular_values(s, m, n, batch=batch, seed=4)
    op = aslinearoperator(A)
    r = block_lanczos(op, 3, tol=1e-12, maxiter=2000, block=4, max_dim=14)
    assert r.steps > 10
    _check_forward(A, 3, r.U, r.S, r.Vh, 1e-12)


def test_recovers_when_the_recurrence_drifts() -> None:
    # rmatmat errs by 1e-9 (relative) on its first calls only, below the adjoint check: the
    # Krylov recurrence then carries that error, the estimate still falls below tol, and only
    # the true residual (computed with the exact product) shows it. svds must restart and meet
    # tol, not stop early or run out of iterations.
    A = matrix_with_singular_values(spectrum("decaying", 200), 300, 200, seed=7)
    E = 1e-9 * matrix_with_singular_values(torch.ones(200), 300, 200, seed=8)
    calls = [0]

    def rmatmat(Y: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return (A + E).mT @ Y if calls[0] <= 4 else A.mT @ Y

    op = LinearOperator(A.shape, lambda X: A @ X, rmatmat, dtype=F64)
    r = block_lanczos(op, 3, tol=1e-12, maxiter=500, block=4, max_dim=24)
    _check_forward(A, 3, r.U, r.S, r.Vh, 1e-12)


@pytest.mark.parametrize("local", [0, 3])
@pytest.mark.parametrize("dtype", [F64, torch.complex128])
def test_gram_schmidt_repeats_a_pass_that_cancelled(local: int, dtype: torch.dtype) -> None:
    # W lies in span(Q) up to 1e-10 of its norm: one pass would leave the result orthogonal to
    # Q only to about eps·1e10 of its size; the repeated pass must bring it to eps.
    gen = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(500, 12, generator=gen, dtype=dtype))[0].mT
    W = torch.randn(4, 12, generator=gen, dtype=dtype) @ Q
    W = W + 1e-10 * torch.randn(4, 500, generator=gen, dtype=dtype)
    out, coef = _project_out(Q, W, local=local)
    leak = (out @ Q.mH).abs().amax(dim=-1) / out.norm(dim=-1)
    assert float(leak.max()) <= 1e-13
    torch.testing.assert_close(coef, W @ Q.mH, atol=1e-14, rtol=0)


@pytest.mark.parametrize("dtype", [F64, C128])
def test_basis_keeps_the_krylov_relation_through_restarts(dtype: torch.dtype) -> None:
    # A V = U B to rounding (B from the projection coefficients, Θ after the restart), U and V
    # orthonormal, after expansions, the residual products and a thick restart.
    A = matrix_with_singular_values(spectrum("gaussian", 120, seed=0), 150, 120, dtype=dtype)
    op = aslinearoperator(A)
    gen = torch.Generator().manual_seed(0)
    basis = _Bidiagonalization(op, 40, gen)
    basis.begin(torch.randn(4, 120, generator=gen, dtype=dtype))
    for step in range(8):
        _, Z, size = basis.residual()
        torch.testing.assert_close(A @ basis.V.mT, basis.U.mT @ basis.B, atol=1e-12, rtol=0)
        if step == 5:
            P, theta, Qh = basis.ritz()
            basis.restart(P, theta, Qh, 10)
        basis.expand(Z, size)
        V, U, B = basis.V, basis.U, basis.B
        torch.testing.assert_close(A @ V.mT, U.mT @ B, atol=1e-12, rtol=0)
        eye = torch.eye(basis.d, dtype=dtype)
        torch.testing.assert_close(V.conj() @ V.mT, eye, atol=1e-12, rtol=0)
        torch.testing.assert_close(U.conj() @ U.mT, eye, atol=1e-12, rtol=0)


def test_stagnation_is_detected_on_a_noisy_operator() -> None:
    # Products with relative noise 1e-9: the residual cannot fall below about that, so
    # tol = 1e-13 stagnates; the error comes long before maxiter and names what was reached.
    A = matrix_with_singular_values(spectrum("decaying", 150), 200, 150, seed=1)
    gen = torch.Generator().manual_seed(2)

    def noisy(out: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(out.shape, generator=gen, dtype=F64)
        return out + 1e-9 * out.norm() * noise / noise.norm()

    op = LinearOperator(A.shape, lambda X: noisy(A @ X), lambda Y: noisy(A.mT @ Y), dtype=F64)
    with pytest.raises(ConvergenceError, match="stagnated") as info:
        block_lanczos(op, 3, tol=1e-13, maxiter=5000)
    assert 1e-13 < float(info.value.residuals.max()) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", [(2, 500), (7, 300), (3, 4, 200)])
def test_solve_lower_is_the_triangular_solve(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """``L⁻¹ W`` posed from the right: torch's own solve's values, rows contiguous."""
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    L = torch.linalg.cholesky(W @ W.mH)
    got = _solve_lower(L, W)
    want = torch.linalg.solve_triangular(L, W, upper=False)
    assert got.is_contiguous() and got.dtype == dtype
    assert torch.allclose(got, want, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-5)
    rows, _ = _orthonormal_rows(W)  # CholQR2 on it: orthonormal rows spanning W
    eye = torch.eye(shape[-2], dtype=dtype).expand(*shape[:-2], -1, -1)
    assert torch.allclose(rows @ rows.mH, eye, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_orthonormalize_reprojects_an_ill_conditioned_block() -> None:
    # A block conditioned 1e5 with rounding-size components along Q: its QR magnifies them
    # by the conditioning, so the rows must be projected once more.
    gen = torch.Generator().manual_seed(4)
    basis = torch.linalg.qr(torch.randn(2000, 17, generator=gen, dtype=F64))[0].mT
    Q, P = basis[:5], basis[5:]
    M = matrix_with_singular_values(10 ** (-torch.arange(12, dtype=F64) / 2.4), 12, 12, seed=4)
    W = M @ P + 1e-16 * torch.randn(12, 5, generator=gen, dtype=F64) @ Q
    rows = _orthonormalize(W, Q, gen, size=W.norm(dim=-1))
    torch.testing.assert_close(rows @ rows.mT, torch.eye(12, dtype=F64), rtol=0, atol=1e-14)
    assert float((rows @ Q.mT).abs().max()) <= 1e-14
