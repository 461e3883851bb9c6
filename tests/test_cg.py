"""projected_shifted_cg: shifted Gram systems on the complement of a subspace, batched."""

from __future__ import annotations

from collections.abc import Callable

import torch

from _helpers import F64
from torchsvd._cg import CGResult, projected_shifted_cg
from torchsvd.testing import matrix_with_singular_values


def _setup(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    s = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.25], dtype=F64)
    A = matrix_with_singular_values(s, 30, 20, seed=0)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    return A, U[:, :k].mT, Vh[:k].conj(), S[:k]


def _gram(A: torch.Tensor):  # type: ignore[no-untyped-def]
    def gram(P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        AhP = P @ A.conj()  # rows of Aᴴ p
        return AhP @ A.mT, AhP

    return gram


def test_solution_matches_a_dense_solve_on_the_complement() -> None:
    A, Q, Q_aux, S = _setup(2)
    rhs = torch.randn(2, 30, generator=torch.Generator().manual_seed(1), dtype=F64)
    active = torch.ones(2, dtype=torch.bool)
    sol = projected_shifted_cg(
        _gram(A), S * S, rhs, Q, Q_aux, active=active, tol=1e-14, maxiter=200
    )
    assert bool(sol.converged.all()) and not bool(sol.indefinite.any())
    P = torch.eye(30, dtype=F64) - Q.mT @ Q
    for i in range(2):
        M = P @ (S[i] ** 2 * torch.eye(30, dtype=F64) - A @ A.mT) @ P
        want = torch.linalg.lstsq(M, P @ rhs[i]).solution
        want = P @ want
        torch.testing.assert_close(sol.x[i], want, atol=1e-10, rtol=0)
        torch.testing.assert_close(sol.aux[i], A.mT @ sol.x[i], atol=1e-10, rtol=0)
    assert float((sol.x @ Q.mT).abs().max()) <= 1e-13  # on the complement


def test_inactive_columns_are_zero_and_indefinite_ones_flagged() -> None:
    A, Q, Q_aux, S = _setup(2)
    rhs = torch.randn(2, 30, generator=torch.Generator().manual_seed(2), dtype=F64)
    active = torch.tensor([True, False])
    sol = projected_shifted_cg(
        _gram(A), S * S, rhs, Q, Q_aux, active=active, tol=1e-12, maxiter=200
    )
    assert bool(sol.converged[0]) and not bool(sol.converged[1])
    assert torch.equal(sol.x[1], torch.zeros(30, dtype=F64))
    # A shift below σ_3²: the operator is indefinite on the complement.
    shifts = torch.tensor([1.0, 1.0], dtype=F64)
    bad = projected_shifted_cg(
        _gram(A),
        shifts,
        rhs,
        Q,
        Q_aux,
        active=torch.ones(2, dtype=torch.bool),
        tol=1e-12,
        maxiter=200,
    )
    assert bool(bad.indefinite.all())


def _gram_preconditioner(A: torch.Tensor, S: torch.Tensor, k: int):  # type: ignore[no-untyped-def]
    from torchsvd._gram import GramEigen, gram_preconditioner

    values, vectors = torch.linalg.eigh(A @ A.mT)
    return gram_preconditioner(GramEigen(values, vectors), S * S, k, F64)


def _plain_and_preconditioned(
    A: torch.Tensor,
    Q: torch.Tensor,
    Q_aux: torch.Tensor,
    S: torch.Tensor,
    rhs: torch.Tensor,
    precondition: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[CGResult, CGResult]:
    """The same projected system solved by plain CG and by CG with ``precondition``."""

    def solve(p: Callable[[torch.Tensor], torch.Tensor] | None) -> CGResult:
        active = torch.ones(S.shape, dtype=torch.bool)
        return projected_shifted_cg(
            _gram(A), S * S, rhs, Q, Q_aux, active=active, tol=1e-13, maxiter=200, precondition=p
        )

    return solve(None), solve(precondition)


def test_preconditioned_matches_plain_cg_in_one_step() -> None:
    # With the exact eigendecomposition of G the preconditioner is the inverse on the
    # complement: one step; a wrong one would need more (or stall) and give another x.
    A, Q, Q_aux, S = _setup(2)
    rhs = torch.randn(2, 30, generator=torch.Generator().manual_seed(3), dtype=F64)
    plain, pre = _plain_and_preconditioned(A, Q, Q_aux, S, rhs, _gram_preconditioner(A, S, 2))
    assert bool(pre.converged.all()) and pre.steps == 1 < plain.steps
    torch.testing.assert_close(pre.x, plain.x, atol=1e-11, rtol=0)
    torch.testing.assert_close(pre.aux, plain.aux, atol=1e-11, rtol=0)


def test_an_inexact_preconditioner_still_converges_to_the_solution() -> None:
    # The preconditioner of another matrix (positive definite, wrong): CG still solves the
    # right system, judged on the unpreconditioned residual.
    A, Q, Q_aux, S = _setup(2)
    B = A + 0.05 * torch.randn(30, 20, generator=torch.Generator().manual_seed(4), dtype=F64)
    rhs = torch.randn(2, 30, generator=torch.Generator().manual_seed(5), dtype=F64)
    plain, pre = _plain_and_preconditioned(A, Q, Q_aux, S, rhs, _gram_preconditioner(B, S, 2))
    assert bool(pre.converged.all()) and pre.steps > 1
    torch.testing.assert_close(pre.x, plain.x, atol=1e-10, rtol=0)
