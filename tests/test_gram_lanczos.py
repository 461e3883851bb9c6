"""The one-basis Lanczos on Aᴴ A that `svds` runs for sparse matrices (`torchsvd._gram_lanczos`)."""

from __future__ import annotations

import pytest
import torch

from _helpers import F32, F64, projector
from _sparse_cases import check, tied
from torchsvd import ConvergenceError, LinearOperator, _dispatch, _gram_lanczos, svds
from torchsvd._gram_lanczos import _Accumulating, gram_lanczos, suited
from torchsvd._lanczos import KrylovResult
from torchsvd._operators import aslinearoperator
from torchsvd._topk import default_tol
from torchsvd.testing import matrix_with_singular_values, spectrum


def _sparse(s: torch.Tensor, m: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A CSR matrix with singular values ``s``, most of its entries zero: a row-and-column
    permuted block diagonal of dense blocks, so the dense reference is exact."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.zeros(m, n, dtype=F64)
    blocks = 4
    r = len(s) // blocks
    for j in range(blocks):
        rows = slice(j * (m // blocks), (j + 1) * (m // blocks))
        cols = slice(j * (n // blocks), (j + 1) * (n // blocks))
        A[rows, cols] = matrix_with_singular_values(
            s[j::blocks][:r], m // blocks, n // blocks, dtype=F64, seed=seed + j
        )
    A = A[torch.randperm(m, generator=gen)][:, torch.randperm(n, generator=gen)]
    return A.to(dtype).to_sparse_csr()


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What each call of `gram_lanczos` from `svds` returned."""
    outcomes: list[object] = []

    def spy(*args: object, **kwargs: object) -> object:
        out = gram_lanczos(*args, **kwargs)  # type: ignore[arg-type]
        outcomes.append(out)
        return out

    monkeypatch.setattr(_dispatch, "gram_lanczos", spy)
    return outcomes


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("m", "n"), [(400, 400), (600, 300), (300, 600)])
@pytest.mark.parametrize("k", [1, 6])
def test_sparse_svds_matches_the_dense_svd(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, m: int, n: int, k: int
) -> None:
    outcomes = _spy(monkeypatch)
    s = spectrum("gaussian", min(m, n), seed=1)
    A = _sparse(s, m, n, dtype)
    U, S, Vh = svds(A, k)
    assert len(outcomes) == 1 and isinstance(outcomes[0], KrylovResult)  # taken, not given back
    D = A.to_dense().double()
    _U0, S0, Vh0 = torch.linalg.svd(D)
    tol = default_tol(dtype)
    assert torch.allclose(S.double(), S0[:k], rtol=0, atol=10 * tol * float(S0[0]))
    # The triplets: residuals to tol, orthonormal factors, A v = σ u.
    U, S, V = U.double(), S.double(), Vh.double().mT
    assert float((D.mT @ U - V * S).norm(dim=0).max()) <= 1.5 * tol * float(S0[0])
    assert float((D @ V - U * S).norm(dim=0).max()) <= 1.5 * tol * float(S0[0])
    eye = torch.eye(k, dtype=F64)
    assert float((U.mT @ U - eye).abs().max()) < 50 * torch.finfo(dtype).eps
    assert float((V.mT @ V - eye).abs().max()) < 50 * torch.finfo(dtype).eps
    gap = float(S0[k - 1] - S0[k])
    # Gauge-invariant: the projector onto the top-k right singular space.
    err = float((projector(V) - projector(Vh0[:k].mT)).norm())
    assert err < 10 * tol * float(S0[0]) / gap


def test_the_gradient_through_the_sparse_path_matches_the_dense_svd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcomes = _spy(monkeypatch)
    s = spectrum("decaying", 300)
    A = _sparse(s, 300, 300, F64)
    w = torch.randn(300, generator=torch.Generator().manual_seed(3), dtype=F64)
    X = A.detach().clone().requires_grad_()
    U, S, _Vh = svds(X, 4)
    (S.sum() + ((w @ U) ** 2).sum()).backward()
    assert isinstance(outcomes[0], KrylovResult)
    D = A.to_dense().requires_grad_()
    U0, S0, _Vh0 = torch.linalg.svd(D)
    (S0[:4].sum() + ((w @ U0[:, :4]) ** 2).sum()).backward()
    assert D.grad is not None and X.grad is not None
    mask = A.to_dense() != 0
    assert torch.allclose(X.grad.to_dense()[mask], D.grad[mask], rtol=0, atol=1e-8)


def test_a_warm_start_converges_at_once() -> None:
    A = _sparse(spectrum("gaussian", 400, seed=2), 400, 400, F64)
    op = aslinearoperator(A)
    first = gram_lanczos(op, 2, tol=1e-10, maxiter=1000)  # k = 2: v0 fills the first block
    assert isinstance(first, KrylovResult)
    again = gram_lanczos(op, 2, tol=1e-10, maxiter=1000, v0=first.Vh)
    assert isinstance(again, KrylovResult)
    assert again.steps < first.steps / 3


@pytest.mark.parametrize("kind", ["zeros", "steep"])
def test_a_steep_or_rank_deficient_spectrum_is_given_back(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """σ_1/σ_k too large for squaring (or σ_k = 0): Golub–Kahan–Lanczos, warm-started, solves."""
    outcomes = _spy(monkeypatch)
    n, k = 400, 12
    s = torch.logspace(0, -10, 16, dtype=F64) if kind == "steep" else spectrum("zeros", 16)
    s = torch.cat([s, torch.zeros(n - len(s), dtype=F64)])
    A = _sparse(s, n, n, F64)
    U, S, Vh = svds(A, k)
    assert len(outcomes) == 1 and not isinstance(outcomes[0], KrylovResult)
    D = A.to_dense()
    S0 = torch.linalg.svdvals(D)
    assert torch.allclose(S, S0[:k], rtol=0, atol=1e-10 * float(S0[0]))
    assert float((U.mT @ U - torch.eye(k, dtype=F64)).abs().max()) < 1e-12
    assert float((D @ Vh.mT - U * S).norm(dim=0).max()) < 1e-10 * float(S0[0])


@pytest.mark.parametrize("N", [7, 999, 1000, 1001, 100_007])
def test_float32_inner_products_are_summed_in_float64(N: int) -> None:
    gen = torch.Generator().manual_seed(N)
    # Entries of one sign: sums grow with N, which float32 accumulation alone does not survive.
    X = 1 + 0.1 * torch.randn(3, N, generator=gen)
    Y = 1 + 0.1 * torch.randn(5, N, generator=gen)
    got = _Accumulating(N).dot(X, Y)
    want = X.double() @ Y.double().mT
    assert got.dtype == F32 and got.shape == (3, 5)
    assert float(((got.double() - want) / want).abs().max()) < 2 * torch.finfo(F32).eps


def test_a_float32_sparse_matrix_gets_a_float32_basis(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.dtype] = []
    dot = _Accumulating.dot

    def spy(self: _Accumulating, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        seen.append(X.dtype)
        return dot(self, X, Y)

    monkeypatch.setattr(_Accumulating, "dot", spy)
    A = _sparse(spectrum("gaussian", 400, seed=5), 400, 400, F32)
    svds(A, 3)
    assert seen and set(seen) == {F32}
    seen.clear()
    svds(_sparse(spectrum("gaussian", 400, seed=5), 400, 400, F64), 3)
    assert not seen


def test_the_float32_basis_hands_over_to_float64_where_it_misses_tol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first true residual check that fails (forced here) continues with a float64 basis."""
    calls: list[bool] = []
    solve, triplets = _gram_lanczos.gram_lanczos, _gram_lanczos._triplets

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("float32_basis", True)))
        return solve(*args, **kwargs)  # type: ignore[arg-type]

    def failing_once(*args: object) -> object:
        U, S, V, res = triplets(*args)  # type: ignore[arg-type]
        return U, S, V, res * (1e3 if len(calls) == 1 else 1)

    monkeypatch.setattr(_gram_lanczos, "gram_lanczos", spy)
    monkeypatch.setattr(_gram_lanczos, "_triplets", failing_once)
    A = _sparse(spectrum("gaussian", 400, seed=6), 400, 400, F32)
    out = spy(aslinearoperator(A).promoted(), 4, tol=default_tol(F32), maxiter=1000)
    assert calls == [True, False]
    assert isinstance(out, KrylovResult) and bool((out.residuals <= default_tol(F32)).all())
    S0 = torch.linalg.svdvals(A.to_dense().double())
    assert torch.allclose(out.S, S0[:4], rtol=0, atol=10 * default_tol(F32) * float(S0[0]))
    # No steps left for the float64 basis: the budget's ConvergenceError, not a crash.
    calls.clear()
    first = solve(aslinearoperator(A).promoted(), 4, tol=default_tol(F32), maxiter=1000)
    assert isinstance(first, KrylovResult)
    calls.clear()
    with pytest.raises(ConvergenceError, match="did not converge"):
        spy(aslinearoperator(A).promoted(), 4, tol=default_tol(F32), maxiter=first.steps)
    assert calls == [True]


def test_not_converging_raises_with_the_iterate() -> None:
    A = _sparse(spectrum("gaussian", 400, seed=4), 400, 400, F64)
    with pytest.raises(ConvergenceError, match="did not converge in 5 block steps") as info:
        gram_lanczos(aslinearoperator(A), 3, tol=1e-12, maxiter=5)
    U, S, Vh = info.value.result
    assert U.shape == (400, 3) and S.shape == (3,) and Vh.shape == (3, 400)


def test_a_wrong_adjoint_is_caught() -> None:
    A = torch.randn(300, 200, generator=torch.Generator().manual_seed(5), dtype=F64)
    B = torch.randn(300, 200, generator=torch.Generator().manual_seed(6), dtype=F64)
    op = LinearOperator(
        A.shape, lambda X: A @ X, lambda Y: B.mT @ Y, dtype=F64, cheap_products=True
    )
    assert suited(op)
    with pytest.raises(ValueError, match="not the adjoint"):
        gram_lanczos(op, 2, tol=1e-10, maxiter=100)


def test_which_operators_are_suited() -> None:
    A = _sparse(spectrum("gaussian", 200, seed=7), 200, 200, F64)
    assert suited(aslinearoperator(A))
    assert suited(aslinearoperator(A.to_sparse_coo()).promoted())
    assert suited(aslinearoperator(A.to_dense()))  # one basis pays on dense matrices too
    assert not suited(aslinearoperator(A.to_dense().to(torch.complex128)))
    assert not suited(LinearOperator(A.shape, lambda X: A @ X, lambda Y: A.mT @ Y, dtype=F64))
    batched = LinearOperator((2, 50, 40), lambda X: X, lambda Y: Y, dtype=F64, cheap_products=True)
    assert not suited(batched)
    with pytest.raises(TypeError, match="cheap_products must be a bool"):
        LinearOperator((5, 4), lambda X: X, lambda Y: Y, cheap_products=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("multiplicity", [3, 5])
@pytest.mark.parametrize("extra", [0, 1])
@pytest.mark.parametrize("kind", ["sparse", "operator"])
def test_a_tie_wider_than_the_block_is_not_cut_short(
    multiplicity: int, extra: int, kind: str
) -> None:
    """Blocks of 2 see two copies of a repeated σ: without the check, the third copy of σ = 3
    came out as 2 (residuals and orthogonality perfect: a silent wrong answer)."""
    D = tied(multiplicity, 223, 290)
    if kind == "sparse":
        A: torch.Tensor | LinearOperator = D.to_sparse_csr()
    else:
        A = LinearOperator(D.shape, lambda X: D @ X, lambda Y: D.mT @ Y, dtype=F64, block_size=2)
    k = multiplicity + extra
    U, S, Vh = svds(A, k)
    want = torch.tensor([3.0] * multiplicity + [2.0] * extra, dtype=F64)
    assert torch.allclose(S, want, rtol=0, atol=1e-10)
    assert float((D @ Vh.mT - U * S).abs().max()) < 1e-10
    assert float((U.mT @ U - torch.eye(k, dtype=F64)).abs().max()) < 1e-12


@pytest.mark.parametrize("cheap", [True, False])
def test_blocks_of_one_see_a_repeated_value(cheap: bool) -> None:
    """A single vector sees one copy of σ = 3 (twice repeated); the tie check solves again
    with a wider block (the cost of ``block_size=1`` that `LinearOperator` documents)."""
    D = tied(2, 223, 290)
    A = LinearOperator(
        D.shape,
        lambda X: D @ X,
        lambda Y: D.mT @ Y,
        dtype=F64,
        block_size=1,
        cheap_products=cheap,
    )
    U, S, Vh = svds(A, 4)
    assert torch.allclose(S, torch.tensor([3.0, 3.0, 2.0, 2.0], dtype=F64), rtol=0, atol=1e-10)
    assert float((D @ Vh.mT - U * S).abs().max()) < 1e-10


def test_which_ties_ask_for_a_wider_block() -> None:
    tol = 1e-12
    S = torch.tensor([[3.0, 3.0, 2.0, 1.0], [3.0, 2.0, 2.0, 2.0]], dtype=F64)
    assert _dispatch.cut_tie(S, 2, tol) == 3  # two copies above σ_k: room for a third
    assert _dispatch.cut_tie(S, 3, tol) is None  # a block of 3 would have seen a third copy
    assert _dispatch.cut_tie(S[1:], 2, tol) is None  # the tie reaches σ_k: nothing is cut
    S = torch.tensor([4.0, 3.0, 3.0, 3.0, 1.0], dtype=F64)
    assert _dispatch.cut_tie(S, 2, tol) == 5  # the group ends at index 3
    assert _dispatch.cut_tie(S * (1 - 1e-6 * torch.arange(5)), 2, tol) is None  # not tied


@pytest.mark.parametrize("seed", range(32))
def test_random_sparse_matrices_agree_with_the_dense_svd(seed: int) -> None:
    """Four of each kind of `_sparse_cases` (``make fuzz`` runs thousands more)."""
    assert check(seed) is None


def test_steep_spectrum_keeps_the_basis_orthogonal() -> None:
    # σ_i = 10^(-i/4): the first Gram block is conditioned 1e5, and its QR left the basis
    # orthogonal to 1e-8 only; the true residuals stalled above tol (22 steps here, 19 s and
    # a give-back on 3000²) until an ill-conditioned block was projected once more.
    n = 400
    s = 10 ** (-torch.arange(1, n + 1, dtype=F64) / 4)
    A = matrix_with_singular_values(s, n, n, dtype=F64, seed=3)
    res = gram_lanczos(aslinearoperator(A), 10, tol=default_tol(F64), maxiter=40)
    assert isinstance(res, KrylovResult)
    assert res.steps <= 6
    torch.testing.assert_close(res.S, s[:10], rtol=1e-13, atol=0)
    assert float((A.mT @ res.U - res.Vh.mT * res.S).norm(dim=0).max()) <= default_tol(F64) * s[0]


def test_budget_ending_on_a_restart_raises_convergence_error() -> None:
    # The Ritz vectors of the restarted basis: a budget ending there raised a shape mismatch.
    A = torch.randn(600, 500, generator=torch.Generator().manual_seed(0), dtype=F64)
    for maxiter in range(4, 12):
        with pytest.raises(ConvergenceError) as info:
            gram_lanczos(aslinearoperator(A), 3, tol=1e-13, maxiter=maxiter, max_dim=40)
        U, S, Vh = info.value.result
        assert U.shape == (600, 3) and S.shape == (3,) and Vh.shape == (3, 500)
        assert bool(torch.isfinite(info.value.residuals).all())
