"""svds, spectral_norm: forward against torch.linalg.svd, backward against dense autograd.

Real and complex A; complex comparisons are phase-invariant (see the complex section).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchsvd
from _helpers import C128, F64, projector, rel
from torchsvd import ConvergenceError, DegenerateGradientWarning, LinearOperator, svds
from torchsvd._topk import default_tol
from torchsvd.testing import matrix_with_singular_values, spectrum

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _spectrum(kind: str, r: int) -> torch.Tensor:
    """Spectra with decay, a cluster at the top of the block, and a small gap after k = 4."""
    if kind == "cluster":
        # σ_1..σ_4 within 1e-3 of each other (a cluster inside the block), then a gap.
        head = torch.tensor([1.0, 1.0 - 3e-4, 1.0 - 6e-4, 1.0 - 9e-4], dtype=F64)
        return torch.cat([head, 0.5 * spectrum("decaying", r - 4)])
    if kind == "small_gap":
        s = spectrum("decaying", r)
        s[4:] = s[4:] * (s[3] * 0.99 / s[4])  # σ_5 = 0.99 σ_4
        return s
    return spectrum(kind, r, seed=5)


def _check_forward(A: torch.Tensor, k: int, result: Triplets, tol: float) -> None:
    U, S, Vh = result
    Ur, Sr, Vhr = torch.linalg.svd(A, full_matrices=False)
    s1 = Sr[..., :1]
    r1 = (A @ Vh.mT - U * S.unsqueeze(-2)).norm(dim=-2)
    r2 = (A.mT @ U - Vh.mT * S.unsqueeze(-2)).norm(dim=-2)
    assert bool((r1 <= tol * s1 * 1.01).all()) and bool((r2 <= tol * s1 * 1.01).all())
    torch.testing.assert_close(S, Sr[..., :k], atol=1e-10, rtol=0)
    assert bool((S[..., :-1] >= S[..., 1:]).all())
    torch.testing.assert_close(projector(U), projector(Ur[..., :k]), atol=1e-8, rtol=0)
    torch.testing.assert_close(projector(Vh.mT), projector(Vhr[..., :k, :].mT), atol=1e-8, rtol=0)


@pytest.mark.parametrize("kind", ["decaying", "cluster", "small_gap", "gaussian"])
@pytest.mark.parametrize(("m", "n"), [(300, 200), (200, 300), (120, 120)])
@pytest.mark.parametrize("k", [1, 4])
def test_forward_matches_dense_svd(kind: str, m: int, n: int, k: int) -> None:
    if kind == "cluster" and k == 1:
        pytest.skip("σ_1 inside a 1e-3 cluster: u_1 alone is determined only to tol/3e-4")
    A = matrix_with_singular_values(_spectrum(kind, min(m, n)), m, n, seed=1)
    _check_forward(A, k, svds(A, k, tol=1e-12), 1e-12)


def test_forward_batched_and_default_tol() -> None:
    s = torch.stack([spectrum("decaying", 40), spectrum("gaussian", 40, seed=2)])
    A = matrix_with_singular_values(s, 50, 40, batch=(3, 2), seed=3)
    result = svds(A, 3)
    assert result[0].shape == (3, 2, 50, 3) and result[2].shape == (3, 2, 3, 40)
    _check_forward(A, 3, result, default_tol(F64))


@pytest.mark.parametrize("kind", ["decaying", "gaussian"])
def test_float32_default_tol_is_reached(kind: str) -> None:
    A = matrix_with_singular_values(_spectrum(kind, 150), 200, 150, dtype=torch.float32, seed=4)
    U, S, Vh = svds(A, 5)
    tol = default_tol(torch.float32)
    A64, U64, S64, V64 = A.double(), U.double(), S.double(), Vh.double().mT
    assert float((A64 @ V64 - U64 * S64).norm(dim=0).max()) <= 2 * tol * float(S64[0])
    assert float((A64.mT @ U64 - V64 * S64).norm(dim=0).max()) <= 2 * tol * float(S64[0])


def test_low_precision_input_is_computed_in_float32() -> None:
    A = matrix_with_singular_values(spectrum("decaying", 20), 30, 20, seed=0).to(torch.bfloat16)
    U, S, Vh = svds(A, 2)
    assert U.dtype == S.dtype == Vh.dtype == torch.bfloat16
    torch.testing.assert_close(S.float(), torch.linalg.svdvals(A.float())[:2], rtol=1e-2, atol=0)


def test_deterministic_and_warm_start() -> None:
    A = matrix_with_singular_values(spectrum("gaussian", 200, seed=1), 250, 200, seed=2)
    first = svds(A, 3, tol=1e-12)
    again = svds(A, 3, tol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    calls = []
    op = LinearOperator(A.shape, lambda X: calls.append(1) or A @ X, lambda Y: A.mT @ Y, dtype=F64)
    svds(op, 3, tol=1e-12)
    cold = len(calls)
    calls.clear()
    warm = svds(op, 3, tol=1e-12, v0=first[2])
    assert len(calls) < cold / 2
    torch.testing.assert_close(warm[1], first[1], atol=1e-12, rtol=0)
    # A single vector (..., n) is accepted too.
    torch.testing.assert_close(svds(A, 1, v0=first[2][0])[1], first[1][:1], atol=1e-10, rtol=0)


@pytest.mark.parametrize(("m", "n"), [(12, 7), (150, 100), (100, 150)])
def test_rank_deficient(m: int, n: int) -> None:
    # rank 3 < k = 5: the trailing singular values are 0 and the Krylov space becomes invariant
    # (its vanishing directions are replaced by random ones); small sizes go the dense way.
    A = matrix_with_singular_values([3.0, 2.0, 1.0], m, n, seed=0)
    U, S, Vh = svds(A, 5, tol=1e-12)
    want = torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0], dtype=F64)
    torch.testing.assert_close(S, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(U.mT @ U, torch.eye(5, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(Vh @ Vh.mT, torch.eye(5, dtype=F64), atol=1e-12, rtol=0)


# --- gradients ------------------------------------------------------------------------------

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _losses(m: int, n: int, k: int, dtype: torch.dtype = F64) -> dict[str, Loss]:
    """Losses of S, of U and V through projectors, and mixed; phase-invariant for complex A."""
    gen = torch.Generator().manual_seed(7)
    Wm = torch.randn(m, m, generator=gen, dtype=dtype)
    Wn = torch.randn(n, n, generator=gen, dtype=dtype)
    Wmn = torch.randn(m, n, generator=gen, dtype=dtype)
    ws = torch.randn(k, generator=gen, dtype=F64)
    x = torch.randn(m, generator=gen, dtype=dtype)
    y = torch.randn(n, generator=gen, dtype=dtype)
    return {
        "S": lambda U, S, Vh: (S * ws).sum() + (S**2).sum(),
        "U": lambda U, S, Vh: (projector(U) * Wm.conj()).real.sum(),
        "V": lambda U, S, Vh: (projector(Vh.mH) * Wn.conj()).real.sum(),
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


def _robust_topk(k: int) -> Callable[[torch.Tensor], Triplets]:
    """Top k of torchsvd.svd: exact at ties and zero singular values, where torch's is NaN."""

    def fn(A: torch.Tensor) -> Triplets:
        U, S, Vh = torchsvd.svd(A)
        return U[..., :k], S[..., :k], Vh[..., :k, :]

    return fn


@pytest.mark.parametrize("loss_name", ["S", "U", "V", "mixed"])
@pytest.mark.parametrize(("m", "n", "batch"), [(60, 40, ()), (40, 60, ()), (30, 30, (2,))])
@pytest.mark.parametrize("k", [1, 3])
def test_gradient_matches_dense_autograd(
    loss_name: str, m: int, n: int, batch: tuple[int, ...], k: int
) -> None:
    s = _spectrum("small_gap", min(m, n)) if k == 3 else spectrum("decaying", min(m, n))
    A = matrix_with_singular_values(s, m, n, batch=batch, seed=11)
    loss = _losses(m, n, k)[loss_name]
    got = _grad(lambda X: svds(X, k, tol=1e-13), A, loss)
    want = _grad(_dense_topk(k), A, loss)
    assert rel(got, want) <= 1e-8


@pytest.mark.parametrize("loss_name", ["U", "mixed"])
@pytest.mark.parametrize(("m", "n"), [(300, 200), (200, 300)])
def test_gradient_through_the_krylov_forward(loss_name: str, m: int, n: int) -> None:
    A = matrix_with_singular_values(_spectrum("small_gap", min(m, n)), m, n, seed=12)
    loss = _losses(m, n, 4)[loss_name]
    got = _grad(lambda X: svds(X, 4, tol=1e-13), A, loss)
    want = _grad(_dense_topk(4), A, loss)
    assert rel(got, want) <= 1e-8


def test_gradient_with_a_tie_inside_the_block() -> None:
    # σ_1 = σ_2 inside k = 3: a projector loss is gauge invariant; torchsvd.svd is exact there.
    A = matrix_with_singular_values([2.0, 2.0, 1.5, 1.0, 0.5, 0.25], 30, 20, seed=3)
    loss = _losses(30, 20, 3)["U"]
    got = _grad(lambda X: svds(X, 3, tol=1e-13), A, loss)
    want = _grad(_robust_topk(3), A, loss)
    assert rel(got, want) <= 1e-8


def test_spectral_norm_value_and_gradient() -> None:
    A = matrix_with_singular_values(spectrum("gaussian", 40, seed=0), 50, 40, batch=(3,), seed=1)
    A.requires_grad_()
    sigma = torchsvd.spectral_norm(A)
    U, S, Vh = torch.linalg.svd(A.detach())
    torch.testing.assert_close(sigma.detach(), S[..., 0], atol=1e-10, rtol=0)
    sigma.sum().backward()
    assert A.grad is not None
    uv = U[..., :, :1] * Vh[..., :1, :]
    torch.testing.assert_close(A.grad, uv, atol=1e-9, rtol=0)


def test_values_only_loss_skips_the_linear_solve() -> None:
    A = matrix_with_singular_values(spectrum("decaying", 40), 50, 40, seed=0)
    W = A.clone().requires_grad_()
    counts = {"mm": 0, "rmm": 0}

    def mm(X: torch.Tensor) -> torch.Tensor:
        counts["mm"] += 1
        return W @ X

    def rmm(Y: torch.Tensor) -> torch.Tensor:
        counts["rmm"] += 1
        return W.mT @ Y

    U, S, Vh = svds(LinearOperator(A.shape, mm, rmm, params=(W,)), 2, tol=1e-12)
    counts.update(mm=0, rmm=0)
    (U.sum() * 0 + S.sum()).backward()  # U's cotangent is exactly zero: no CG
    assert counts == {"mm": 1, "rmm": 0}  # one differentiated matmat pushes Ā to W
    assert W.grad is not None
    torch.testing.assert_close(W.grad, U.detach() @ Vh.detach(), atol=1e-12, rtol=0)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    m=st.integers(2, 40),
    n=st.integers(2, 40),
    data=st.data(),
)
def test_property_residuals_and_values(m: int, n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, min(m, n)))
    seed = data.draw(st.integers(0, 1000))
    A = matrix_with_singular_values(spectrum("gaussian", min(m, n), seed=seed), m, n, seed=seed)
    U, S, Vh = svds(A, k, tol=1e-11)
    s1 = float(torch.linalg.matrix_norm(A, 2))
    assert float((A @ Vh.mT - U * S).norm(dim=0).max()) <= 1.01e-11 * s1
    assert float((A.mT @ U - Vh.mT * S).norm(dim=0).max()) <= 1.01e-11 * s1
    torch.testing.assert_close(S, torch.linalg.svdvals(A)[:k], atol=1e-9 * s1, rtol=0)


# --- bad input and degenerate cases -----------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 5])
def test_k_out_of_range(k: int) -> None:
    with pytest.raises(ValueError, match="1 <= k <= min"):
        svds(torch.randn(6, 4, dtype=F64), k)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"k": 1.0}, TypeError),
        ({"k": True}, TypeError),
        ({"k": 1, "tol": 0.0}, ValueError),
        ({"k": 1, "tol": 2.0}, ValueError),
        ({"k": 1, "maxiter": 0}, ValueError),
        ({"k": 1, "v0": torch.ones(3, 7)}, ValueError),
        ({"k": 1, "v0": [1.0]}, TypeError),
    ],
)
def test_bad_options(kwargs: dict[str, object], error: type[Exception]) -> None:
    k = kwargs.pop("k")
    with pytest.raises(error):
        svds(torch.randn(6, 4, dtype=F64), k, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_entries(bad: float) -> None:
    A = torch.randn(6, 4, dtype=F64)
    A[2, 1] = bad
    with pytest.raises(ValueError, match=r"NaN|infinite"):
        svds(A, 1)
    with pytest.raises(ValueError, match=r"NaN|infinite"):
        svds(A.to_sparse(), 1)


def test_finite_entries_whose_sum_overflows_are_accepted() -> None:
    # The finiteness check reads a sum first; an overflowing sum must fall back, not reject.
    A = torch.full((6, 4), 3e37)
    A[0, 0] = 1e38
    S = svds(A, 1)[1]
    assert torch.isfinite(S).all()
    A[1, 1], A[2, 2] = float("inf"), -float("inf")  # the sum is NaN here, not inf
    with pytest.raises(ValueError, match="infinite"):
        svds(A, 1)


@pytest.mark.parametrize(
    "A", [torch.ones(5, 4, dtype=torch.int64), torch.ones(5, 4, dtype=torch.bool), [[1.0]]]
)
def test_unsupported_types(A: object) -> None:
    with pytest.raises(TypeError):
        svds(A, 1)  # type: ignore[arg-type]


def test_non_convergence_reports_residuals_and_partial_result() -> None:
    A = matrix_with_singular_values(spectrum("gaussian", 300, seed=0), 300, 300, seed=0)
    with pytest.raises(ConvergenceError, match="did not converge") as info:
        svds(A, 2, tol=1e-14, maxiter=2, method="krylov")
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.residuals.shape == (2,) and bool((err.residuals > 1e-14).any())
    U, S, Vh = err.result
    assert U.shape == (300, 2) and S.shape == (2,) and Vh.shape == (2, 300)
    # Ritz values of a subspace never exceed the singular values they approximate.
    assert bool((S > 0).all()) and bool((S <= torch.linalg.svdvals(A)[:2] + 1e-12).all())
    # The partial result comes in the input's precision, as a converged one would.
    with pytest.raises(ConvergenceError) as info:
        svds(A.to(torch.complex64), 2, maxiter=2, method="krylov")
    U, S, Vh = info.value.result
    assert U.dtype == Vh.dtype == torch.complex64 and S.dtype == torch.float32
    assert info.value.residuals.dtype == torch.float32


@pytest.mark.parametrize(("m", "n"), [(8, 5), (200, 150)])
def test_zero_matrix(m: int, n: int) -> None:
    A = torch.zeros(m, n, dtype=F64, requires_grad=True)
    U, S, _ = svds(A, 2)
    assert torch.equal(S.detach(), torch.zeros(2, dtype=F64))
    torch.testing.assert_close(U.detach().mT @ U.detach(), torch.eye(2, dtype=F64))
    S.sum().backward()  # a subgradient u vᵀ, no warning
    with pytest.warns(DegenerateGradientWarning, match="rank < k"):  # free null vectors
        U = svds(A, 2)[0]
        ((torch.ones(m, dtype=F64) @ U) ** 2).sum().backward()
    assert A.grad is not None and bool(torch.isfinite(A.grad).all())


@pytest.mark.parametrize(("m", "n"), [(20, 10), (150, 100)])
def test_no_gap_after_k_warns_and_stays_finite(m: int, n: int) -> None:
    # σ_2 = σ_3: the top-2 subspace is not defined; σ_1's vectors still have a derivative.
    A = matrix_with_singular_values([3.0, 2.0, 2.0, 1.0, 0.5], m, n, seed=1)
    loss = _losses(m, n, 2)["U"]
    with pytest.warns(DegenerateGradientWarning, match="no gap"):
        g = _grad(lambda X: svds(X, 2, tol=1e-13), A, loss)
    assert bool(torch.isfinite(g).all())
    # The value-only gradient is unaffected and silent.
    g_values = _grad(lambda X: svds(X, 2, tol=1e-13), A, lambda U, S, Vh: S.sum())
    assert bool(torch.isfinite(g_values).all())
    # k = 1 ends at a gap: exact gradient of u_1 even though σ_2 = σ_3.
    loss1 = _losses(m, n, 1)["U"]
    got = _grad(lambda X: svds(X, 1, tol=1e-13), A, loss1)
    want = _grad(_robust_topk(1), A, loss1)  # torch.linalg.svd's gradient is NaN: zero σ
    assert rel(got, want) <= 1e-8


def test_float32_sparse_with_long_vectors_reaches_the_default_tol() -> None:
    # With float32 bases and float32 inner products of length 10⁵ (errors ~eps·√N = 4e-5) the
    # Ritz vectors lost orthogonality by as much and the residual stalled there, above the
    # default 6.5e-6 (ConvergenceError after 300 steps). The sparse solver's float32 basis
    # sums its inner products in float64 and reaches it.
    n, nnz = 100_000, 400_000
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, n, (2, nnz), generator=gen)
    values = torch.randn(nnz, generator=gen)
    A = torch.sparse_coo_tensor(idx, values, (n, n)).coalesce()
    U, S, Vh = svds(A, 4, maxiter=300)
    assert U.dtype == torch.float32
    A64, U64, S64, V64 = A.double(), U.double(), S.double(), Vh.double().mT
    tol = default_tol(torch.float32)
    assert float((A64 @ V64 - U64 * S64).norm(dim=0).max()) <= 2 * tol * float(S64[0])
    assert float((A64.mT @ U64 - V64 * S64).norm(dim=0).max()) <= 2 * tol * float(S64[0])


@pytest.mark.parametrize("seed", [9, 17])
def test_float32_products_pass_the_adjoint_check(seed: int) -> None:
    # The solver's bases are float64 but a float32 matrix's products round at float32: the
    # check that rmatmat is matmat's adjoint must allow for that (with float64's allowance
    # these matrices raised "rmatmat is not the adjoint of matmat").
    A = matrix_with_singular_values(
        spectrum("decaying", 400), 400, 400, dtype=torch.float32, seed=seed
    )
    U, S, Vh = svds(A, 1)
    A64 = A.double()
    tol = default_tol(torch.float32)
    assert float((A64.mT @ U.double() - Vh.double().mT * S.double()).norm()) <= 2 * tol * float(S)


# --- complex A ------------------------------------------------------------------------------
# Complex singular vectors are fixed only up to a phase (u_i, v_i → e^{iφ} u_i, e^{iφ} v_i), so
# comparisons go through phase-invariant quantities: projectors U Uᴴ, |aᴴu_i|², U Σ Vᴴ.


@pytest.mark.parametrize(("m", "n"), [(300, 200), (200, 300)])
@pytest.mark.parametrize("k", [1, 4])
def test_complex_forward_matches_dense_svd(m: int, n: int, k: int) -> None:
    A = matrix_with_singular_values(_spectrum("small_gap", min(m, n)), m, n, seed=1, dtype=C128)
    U, S, Vh = svds(A, k, tol=1e-12)
    assert U.dtype == Vh.dtype == C128 and S.dtype == torch.float64
    Ur, Sr, Vhr = torch.linalg.svd(A, full_matrices=False)
    s1 = Sr[0]
    assert float((A @ Vh.mH - U * S).norm(dim=0).max()) <= 1.01e-12 * s1
    assert float((A.mH @ U - Vh.mH * S).norm(dim=0).max()) <= 1.01e-12 * s1
    torch.testing.assert_close(S, Sr[:k], atol=1e-10, rtol=0)
    torch.testing.assert_close(projector(U), projector(Ur[:, :k]), atol=1e-8, rtol=0)
    torch.testing.assert_close(projector(Vh.mH), projector(Vhr[:k].mH), atol=1e-8, rtol=0)


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
def test_complex_gradient_matches_dense_autograd(
    loss_name: str, m: int, n: int, batch: tuple[int, ...]
) -> None:
    A = matrix_with_singular_values(
        _spectrum("small_gap", min(m, n)), m, n, batch=batch, seed=11, dtype=C128
    )
    loss = _losses(m, n, 3, C128)[loss_name]
    got = _grad(lambda X: svds(X, 3, tol=1e-13), A, loss)
    want = _grad(_dense_topk(3), A, loss)
    assert rel(got, want) <= 1e-8


@pytest.mark.parametrize("loss_name", ["U", "V", "mixed"])
@pytest.mark.parametrize(("m", "n"), [(300, 200), (200, 300)])
def test_complex_gradient_through_the_krylov_forward(loss_name: str, m: int, n: int) -> None:
    A = matrix_with_singular_values(_spectrum("small_gap", min(m, n)), m, n, seed=12, dtype=C128)
    loss = _losses(m, n, 4, C128)[loss_name]
    got = _grad(lambda X: svds(X, 4, tol=1e-13), A, loss)
    want = _grad(_dense_topk(4), A, loss)
    assert rel(got, want) <= 1e-8


def test_complex_gradient_matches_central_differences() -> None:
    # Along a random complex direction dA: dL = Re⟨grad, dA⟩ (PyTorch's convention).
    A = matrix_with_singular_values(_spectrum("small_gap", 120), 150, 120, seed=4, dtype=C128)
    loss = _losses(150, 120, 4, C128)["mixed"]
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
    loss = _losses(n, n, 3, C128)["mixed"]
    loss(*svds(op, 3, tol=1e-13)).backward()
    got = [t.grad for t in (d, a, b)]
    ref = [t.detach().clone().requires_grad_() for t in (d, a, b)]
    dense = torch.diag(ref[0]).to(C128) + torch.outer(ref[1], ref[2].conj())
    loss(*_dense_topk(3)(dense)).backward()
    for g, r in zip(got, ref, strict=True):
        assert g is not None and r.grad is not None
        assert rel(g, r.grad) <= 1e-8


def test_complex_spectral_norm_gradient_is_u1_v1h() -> None:
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
    A = matrix_with_singular_values(_spectrum("small_gap", 200), 300, 200, seed=6, dtype=C128)
    _, S, Vh = svds(A, 4, tol=1e-10)
    # A previous Vh holds conjugated rows; starting from it must find the same subspace at once.
    _, S2, Vh2 = svds(A + 1e-9 * torch.ones_like(A), 4, tol=1e-10, v0=Vh)
    torch.testing.assert_close(S2, S, atol=1e-8, rtol=0)
    torch.testing.assert_close(projector(Vh2.mH), projector(Vh.mH), atol=1e-7, rtol=0)


def test_phase_dependent_loss_warns() -> None:
    A = matrix_with_singular_values(
        _spectrum("small_gap", 40), 60, 40, seed=8, dtype=C128
    ).requires_grad_()
    U = svds(A, 2)[0]
    with pytest.warns(DegenerateGradientWarning, match="phase"):
        U[0, 0].real.backward()
    assert A.grad is not None and bool(torch.isfinite(A.grad).all())


def _flux_ring(n: int) -> torch.Tensor:
    """A Hermitian tight-binding ring with flux: the imaginary parts of each row sum to zero."""
    H = torch.diag(torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=F64))
    H = H.to(C128)
    hop = torch.tensor(0.7j, dtype=C128).exp()
    for j in range(n):
        H[j, (j + 1) % n] = hop
        H[(j + 1) % n, j] = hop.conj()
    return H


@pytest.mark.parametrize("n", [40, 400])  # the small (dense) path and the Krylov path
def test_transpose_instead_of_adjoint_is_rejected(n: int) -> None:
    # A common mistake with complex operators: rmatmat = Aᵀ Y instead of Aᴴ Y. On this matrix a
    # check with a vector of ones cannot see it.
    A = _flux_ring(n)
    op = LinearOperator(A.shape, lambda X: A @ X, lambda Y: A.mT @ Y, dtype=C128)
    with pytest.raises(ValueError, match="adjoint"):
        svds(op, 2)
    good = LinearOperator(A.shape, lambda X: A @ X, lambda Y: A.mH @ Y, dtype=C128)
    U, S, Vh = svds(good, 2, tol=1e-12)
    assert float((A @ Vh.mH - U * S).norm()) <= 1e-10 * float(S[0])


def test_complex_sparse_and_mismatched_v0_are_rejected() -> None:
    A = torch.randn(30, 20, dtype=C128)
    with pytest.raises(TypeError, match="sparse"):
        svds(A.to_sparse(), 2)
    with pytest.raises(TypeError, match="v0"):
        svds(A.real.contiguous(), 2, v0=torch.randn(2, 20, dtype=C128))


# --- k = min(m, n), k > rank, extreme scales, empty batches, stagnation, torch.func ----------


def _full_k_losses(m: int, n: int, dtype: torch.dtype) -> dict[str, Loss]:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(m, generator=gen, dtype=F64).to(dtype)
    losses = _losses(m, n, min(m, n), dtype)
    losses["polar"] = lambda U, S, Vh: ((U @ Vh) * w.conj()[:, None]).real.sum()
    losses["u1"] = lambda U, S, Vh: ((w.conj() @ U[..., :1]).abs() ** 2).sum()
    return losses


@pytest.mark.parametrize("loss_name", ["polar", "u1", "U", "V", "mixed"])
@pytest.mark.parametrize(("m", "n"), [(17, 4), (4, 17), (4, 4), (9, 6)])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_k_equal_to_min_m_n_gradient_matches_dense(
    loss_name: str, m: int, n: int, dtype: torch.dtype
) -> None:
    # The complement on the smaller side is empty: no solve. It used to run CG there on rounding
    # noise (gradients up to 1e93, or "matmat returned non-finite values").
    k = min(m, n)
    A = torch.randn(m, n, generator=torch.Generator().manual_seed(0), dtype=dtype)
    loss = _full_k_losses(m, n, dtype)[loss_name]
    if dtype.is_complex and loss_name == "polar":
        pytest.skip("Re⟨w, U Vᴴ⟩ is phase invariant but covered by 'mixed'")
    got = _grad(lambda X: svds(X, k, tol=1e-13), A, loss)
    want = _grad(_dense_topk(k), A, loss)
    assert bool(torch.isfinite(got).all())
    # (Projectors onto the whole space are constant: their gradient is rounding, hence max(·, 1).)
    assert float((got - want).norm()) <= 1e-8 * max(float(want.norm()), 1.0)


def test_k_equal_to_min_m_n_batched_matches_central_differences() -> None:
    A = torch.randn(2, 7, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    loss = _full_k_losses(7, 4, F64)["polar"]
    got = _grad(lambda X: svds(X, 4, tol=1e-13), A, loss)
    num = torchsvd.testing.numerical_gradient(lambda X: loss(*svds(X, 4, tol=1e-13)), A)
    assert rel(got, num) <= 1e-7


@pytest.mark.parametrize(("m", "n"), [(12, 7), (7, 12), (150, 100), (100, 150)])
def test_k_above_the_rank_gradient_is_exact_for_the_resolved_part(m: int, n: int) -> None:
    # rank 3 < k = 5: σ_4 = σ_5 = 0, their vectors are any basis of the null spaces. A loss of
    # the resolved triplets (and of S) has a gradient, equal to the dense one and to central
    # differences; a loss of the free null vectors warns.
    A = matrix_with_singular_values([3.0, 2.0, 1.0], m, n, seed=0)
    gen = torch.Generator().manual_seed(2)
    Wm = torch.randn(m, m, generator=gen, dtype=F64)
    Wn = torch.randn(n, n, generator=gen, dtype=F64)

    def loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
        top_u, top_v = projector(U[..., :3]), projector(Vh[..., :3, :].mT)
        return (top_u * Wm).sum() + (top_v * Wn).sum() + (S * S).sum()

    got = _grad(lambda X: svds(X, 5, tol=1e-13), A, loss)
    want = _grad(_robust_topk(5), A, loss)
    assert rel(got, want) <= 1e-8
    if m * n < 200:
        num = torchsvd.testing.numerical_gradient(lambda X: loss(*svds(X, 5, tol=1e-13)), A)
        assert rel(got, num) <= 1e-6
    with pytest.warns(DegenerateGradientWarning, match="rank < k"):
        g = _grad(lambda X: svds(X, 5, tol=1e-13), A, lambda U, S, Vh: (U[..., 0, 3:] ** 2).sum())
    assert bool(torch.isfinite(g).all())


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e155, 1e160, 1e300])
@pytest.mark.parametrize("kind", ["dense", "operator"])
def test_extreme_scales_float64(scale: float, kind: str) -> None:
    # On the Krylov path: σ was off by a factor 5 at 1e-170, 6e-5 at 1e155, and from 1e160 up
    # it raised ConvergenceError (Gram matrices of rows of size σ under- or overflowed).
    A = matrix_with_singular_values(_spectrum("small_gap", 150), 200, 150, seed=0)
    loss = _losses(200, 150, 3)["mixed"]
    base_U, base_S, _ = svds(A, 3, tol=1e-12)
    B = (A * scale).requires_grad_()
    op: torch.Tensor | LinearOperator = B
    if kind == "operator":
        op = LinearOperator(B.shape, lambda X: B @ X, lambda Y: B.mT @ Y, params=(B,))
    U, S, Vh = svds(op, 3, tol=1e-12)
    torch.testing.assert_close(S / scale, base_S, rtol=1e-12, atol=0)
    torch.testing.assert_close(projector(U), projector(base_U), atol=1e-9, rtol=0)
    # The loss of (U, S / scale, Vh) has gradient (1 / scale) times that at scale 1.
    loss(U, S / scale, Vh).backward()
    assert B.grad is not None
    want = _grad(lambda X: svds(X, 3, tol=1e-12), A, loss)
    assert rel(B.grad * scale, want) <= 1e-8


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e170, 1e300])
def test_extreme_scales_sparse(scale: float) -> None:
    gen = torch.Generator().manual_seed(0)
    D = torch.randn(300, 200, generator=gen, dtype=F64) * (
        torch.rand(300, 200, generator=gen) < 0.1
    )
    S = svds((D * scale).to_sparse_csr(), 3, tol=1e-12)[1]
    torch.testing.assert_close(S / scale, torch.linalg.svdvals(D)[:3], rtol=1e-11, atol=0)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e30])
def test_extreme_scales_float32(scale: float) -> None:
    A = matrix_with_singular_values(spectrum("decaying", 150), 200, 150, seed=1)
    S = svds((A * scale).float(), 3)[1]
    torch.testing.assert_close(S.double() / scale, torch.linalg.svdvals(A)[:3], rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", [(0, 4, 3), (0, 200, 150), (2, 0, 6, 5)])
def test_empty_batch(shape: tuple[int, ...]) -> None:
    A = torch.randn(shape, dtype=F64, requires_grad=True)
    U, S, Vh = svds(A, 2)
    *batch, m, n = shape
    assert U.shape == (*batch, m, 2) and S.shape == (*batch, 2) and Vh.shape == (*batch, 2, n)
    (U.sum() + S.sum() + Vh.sum()).backward()
    assert A.grad is not None and A.grad.shape == A.shape
    assert torchsvd.spectral_norm(A).shape == tuple(batch)


def test_meta_tensors_propagate_shapes() -> None:
    A = torch.empty(2, 50, 40, device="meta")
    U, S, Vh = svds(A, 3)
    assert U.shape == (2, 50, 3) and S.shape == (2, 3) and Vh.shape == (2, 3, 40)
    assert U.device.type == "meta"
    assert torchsvd.spectral_norm(A).shape == (2,)


def test_bad_v0_message_says_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"p >= 1 rows .* shape \(2, p, 4\), or one row of shape"):
        svds(torch.randn(2, 6, 4, dtype=F64), 1, v0=torch.ones(2, 3, 7))
    with pytest.raises(ValueError, match=r"shape \(p, 4\).*got shape \(0, 4\)"):
        svds(torch.randn(6, 4, dtype=F64), 1, v0=torch.ones(0, 4))


def _centred_operator(m: int, n: int) -> tuple[LinearOperator, torch.Tensor]:
    """A rank-8 float32 matrix on a large mean, centred matrix-free (as PCA does)."""
    gen = torch.Generator().manual_seed(0)
    low = torch.randn(m, 8, generator=gen) @ torch.randn(8, n, generator=gen)
    X = (1000.0 + 0.05 * low + 0.001 * torch.randn(m, n, generator=gen)).float()
    mu = X.mean(0, keepdim=True)
    op = LinearOperator(
        (m, n),
        lambda V: X @ V - mu @ V,
        lambda Y: X.mT @ Y - mu.mT @ Y.sum(0, keepdim=True),
    )
    return op, (X.double() - X.double().mean(0, keepdim=True))


def test_stagnation_stops_early_with_the_reachable_tolerance() -> None:
    # The rounding of the float32 products (1000 times the centred matrix) floors the residual
    # above the float32 default tol; the solver used to run all maxiter steps.
    op, Xc = _centred_operator(5000, 100)
    with pytest.raises(ConvergenceError, match=r"stagnated .* tol of \S+ was reachable") as info:
        svds(op, 5, maxiter=1000)
    err = info.value
    steps = int(str(err).split("stagnated after ")[1].split()[0])
    assert steps < 200
    U, S, Vh = (t.double() for t in err.result)
    s1 = float(torch.linalg.matrix_norm(Xc, 2))
    res = (Xc.mT @ U - Vh.mT * S).norm(dim=0) / s1
    # The iterate carried has the residual ‖Aᴴu − σv‖ the message names (float64 here).
    assert float(res.max()) <= 1.5 * float(err.residuals.max())
    assert float(err.residuals.max()) > default_tol(torch.float32)


def test_jvp_matches_dense() -> None:
    A = matrix_with_singular_values(_spectrum("small_gap", 40), 60, 40, seed=0)
    dA = torch.randn(A.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    for m, n, X, dX in ((60, 40, A, dA), (40, 60, A.mT, dA.mT)):
        loss = _losses(m, n, 3)["mixed"]
        got = torch.func.jvp(lambda Y, f=loss: f(*svds(Y, 3, tol=1e-13)), (X,), (dX,))[1]
        want = torch.func.jvp(lambda Y, f=loss: f(*_dense_topk(3)(Y)), (X,), (dX,))[1]
        torch.testing.assert_close(got, want, rtol=1e-8, atol=0)
    big = matrix_with_singular_values(_spectrum("small_gap", 150), 200, 150, seed=2)
    dbig = torch.randn(big.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    loss = _losses(200, 150, 4)["mixed"]
    got = torch.func.jvp(lambda Y: loss(*svds(Y, 4, tol=1e-13)), (big,), (dbig,))[1]
    want = torch.func.jvp(lambda Y: loss(*_dense_topk(4)(Y)), (big,), (dbig,))[1]
    torch.testing.assert_close(got, want, rtol=1e-8, atol=0)


def test_vmap_and_the_gradient_through_it() -> None:
    A = matrix_with_singular_values(_spectrum("small_gap", 40), 60, 40, batch=(3,), seed=4)
    loss = _losses(60, 40, 3)["mixed"]
    X = A.clone().requires_grad_()
    values = torch.func.vmap(lambda Y: loss(*svds(Y, 3, tol=1e-13)))(X)
    want = torch.stack([loss(*_dense_topk(3)(a)) for a in A])
    torch.testing.assert_close(values, want, rtol=1e-10, atol=0)
    values.sum().backward()
    assert X.grad is not None
    want_grad = torch.stack([_grad(_dense_topk(3), a, loss) for a in A])
    assert rel(X.grad, want_grad) <= 1e-8
    with pytest.raises(NotImplementedError, match="vmap over grad"):
        torch.func.vmap(torch.func.grad(lambda Y: loss(*svds(Y, 3))))(A)


def test_unsupported_transforms_raise_clear_errors() -> None:
    A = matrix_with_singular_values(spectrum("decaying", 40), 60, 40, seed=0)
    X = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(svds(X, 2)[0].sum(), X, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()

    def through_operator(c: torch.Tensor) -> torch.Tensor:
        op = LinearOperator(A.shape, lambda Y: c * (A @ Y), lambda Y: c * (A.mT @ Y), params=(c,))
        return svds(op, 2)[1]

    with pytest.raises(NotImplementedError, match="dense tensors only"):
        torch.func.vmap(through_operator)(torch.ones(2, dtype=F64))
    one = torch.ones((), dtype=F64)
    with pytest.raises(NotImplementedError, match="dense tensors only"):
        torch.func.jvp(through_operator, (one,), (one,))
