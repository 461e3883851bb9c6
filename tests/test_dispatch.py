"""svds's dispatch: the dense Gram path and the Krylov path give the same triplets and gradients,
and the cost model picks what it says."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import torchsvd
from _helpers import C128, F32, F64, projector, rel, weights
from torchsvd import LinearOperator, svds
from torchsvd._dispatch import MIN_PROBE_STEPS, choose_method, estimate_costs, probe_steps
from torchsvd._gram import gram_topk
from torchsvd._operators import aslinearoperator
from torchsvd.testing import matrix_with_singular_values, spectrum

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _loss(m: int, n: int, dtype: torch.dtype) -> Loss:
    """Gauge- and phase-invariant: Σσ + Σ|aᴴu_i|² + Σ|v_iᴴb|² + Re⟨W, U Vᴴ⟩."""
    a, b = weights((m,), dtype, 1), weights((n,), dtype, 2)
    W = weights((m, n), dtype, 3)

    def loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
        return (
            S.sum()
            + (a.conj() @ U).abs().square().sum()
            + (Vh @ b).abs().square().sum()
            + (W.conj() * (U @ Vh)).real.sum()
        )

    return loss


def _both(A: torch.Tensor, k: int, loss: Loss, tol: float) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for method in ("dense", "krylov"):
        X = A.detach().clone().requires_grad_()
        U, S, Vh = svds(X, k, tol=tol, method=method)
        loss(U, S, Vh).backward()
        out.append((U.detach(), S.detach(), Vh.detach(), X.grad))
    return out


@pytest.mark.parametrize("dtype", [F64, C128])
@pytest.mark.parametrize(
    ("shape", "k"),
    [((150, 90), 3), ((90, 150), 3), ((80, 80), 5), ((2, 100, 70), 4), ((70, 40), 40)],
)
def test_dense_and_krylov_agree(shape: tuple[int, ...], k: int, dtype: torch.dtype) -> None:
    *batch, m, n = shape
    s = spectrum("decaying", min(m, n), seed=5)
    A = matrix_with_singular_values(s, m, n, dtype=dtype, seed=1)
    if batch:
        A = torch.stack([A, matrix_with_singular_values(s * 2, m, n, dtype=dtype, seed=2)])
    (U1, S1, V1, g1), (U2, S2, V2, g2) = _both(A, k, _loss(m, n, dtype), 1e-12)
    torch.testing.assert_close(S1, S2, atol=1e-11, rtol=0)
    torch.testing.assert_close(projector(U1), projector(U2), atol=1e-9, rtol=0)
    torch.testing.assert_close(projector(V1.mH), projector(V2.mH), atol=1e-9, rtol=0)
    assert rel(g1, g2) < 1e-8
    # Both against the dense SVD of torch.
    torch.testing.assert_close(S1, torch.linalg.svdvals(A)[..., :k], atol=1e-11, rtol=0)


@pytest.mark.parametrize("dtype", [F64, C128])
@pytest.mark.parametrize(("m", "n"), [(12, 7), (7, 12), (8, 8)])
def test_dense_path_gradcheck(m: int, n: int, dtype: torch.dtype) -> None:
    A = matrix_with_singular_values([3.0, 2.0, 1.5, 1.0, 0.5], m, n, dtype=dtype, seed=3)
    loss = _loss(m, n, dtype)
    torch.autograd.gradcheck(
        lambda X: loss(*svds(X, 2, tol=1e-13, method="dense")), A.requires_grad_()
    )


def _cg_steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """Records (preconditioned, steps) of every backward solve."""
    import torchsvd._topk

    log: list[tuple[bool, int]] = []
    original = torchsvd._topk.projected_shifted_cg

    def recorded(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        sol = original(*args, **kwargs)  # type: ignore[arg-type]
        log.append((kwargs["precondition"] is not None, sol.steps))
        return sol

    monkeypatch.setattr(torchsvd._topk, "projected_shifted_cg", recorded)
    return log


@pytest.mark.parametrize(("dtype", "most"), [(F64, 2), (F32, 4), (C128, 2)])
@pytest.mark.parametrize(("m", "n"), [(600, 60), (60, 600), (100, 100)])
def test_dense_backward_is_preconditioned_and_matches_krylov(
    m: int, n: int, dtype: torch.dtype, most: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Gaussian spectrum: small gaps, where plain CG needs dozens of steps.
    gen = torch.Generator().manual_seed(8)
    A = torch.randn(m, n, generator=gen, dtype=dtype)
    loss = _loss(m, n, dtype)
    log = _cg_steps(monkeypatch)
    (_, _, _, g_dense), _ = _both(A, 6, loss, 1e-12 if dtype != F32 else 1e-5)
    assert log[0][0] and log[0][1] <= most, log  # a wrong preconditioner needs more steps
    assert not log[1][0] and log[1][1] > 3 * most, log
    ref = _both(
        A.to(C128 if dtype.is_complex else F64),
        6,
        _loss(m, n, C128 if dtype.is_complex else F64),
        1e-12,
    )
    assert rel(g_dense.to(ref[1][3].dtype), ref[1][3]) < (1e-9 if dtype != F32 else 1e-3)


def test_rank_deficient_agree() -> None:
    # rank 3, k = 5: two zero singular values, whose vectors are any null-space basis; the
    # loss depends on the resolved triplets only (on the null ones it has no derivative).
    A = matrix_with_singular_values([3.0, 2.0, 1.0, 0.0, 0.0, 0.0], 120, 60, seed=4)
    a = weights((120,), F64, 1)

    def loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
        return S[:3].sum() + (a @ U[:, :3]).square().sum()

    results = _both(A, 5, loss, 1e-12)
    (U1, S1, V1, g1), (U2, S2, V2, g2) = results
    torch.testing.assert_close(S1, S2, atol=1e-11, rtol=0)
    assert float(S1[3:].abs().max()) < 1e-12
    torch.testing.assert_close(projector(U1[:, :3]), projector(U2[:, :3]), atol=1e-9, rtol=0)
    assert rel(g1, g2) < 1e-8
    for U, Vh in ((U1, V1), (U2, V2)):  # orthonormal, null vectors included
        torch.testing.assert_close(U.mT @ U, torch.eye(5, dtype=F64), atol=1e-12, rtol=0)
        torch.testing.assert_close(Vh @ Vh.mT, torch.eye(5, dtype=F64), atol=1e-12, rtol=0)


def test_float32_dense_path_meets_default_tol() -> None:
    A = matrix_with_singular_values(spectrum("gaussian", 64, seed=0), 2000, 64, seed=0).float()
    U, S, Vh = svds(A, 4, method="dense")
    A64, U, S, Vh = A.double(), U.double(), S.double(), Vh.double()
    r1 = (A64 @ Vh.mT - U * S).norm(dim=0).max()
    r2 = (A64.mT @ U - Vh.mT * S).norm(dim=0).max()
    assert float(torch.maximum(r1, r2)) <= 6.5e-6 * float(S[0]) * 1.5


def test_gram_misses_tol_then_krylov_takes_over() -> None:
    # σ down to 1e-7·σ_1: the Gram matrix holds σ_5² = 1e-14·σ_1² at the rounding of float64,
    # so its triplets miss tol = 1e-13 and svds must fall back instead of returning them.
    s = torch.tensor([1.0, 1e-2, 1e-4, 1e-6, 1e-7] + [1e-9] * 35, dtype=F64)
    A = matrix_with_singular_values(s, 400, 40, seed=6)
    op = aslinearoperator(A)
    _, ok, _ = gram_topk(A, op, 5, 1e-13, torch.Generator().manual_seed(0))
    assert not ok
    U, S, Vh = svds(A, 5, tol=1e-13, method="dense")
    r1 = (A @ Vh.mT - U * S).norm(dim=0).max()
    r2 = (A.mT @ U - Vh.mT * S).norm(dim=0).max()
    assert float(torch.maximum(r1, r2)) <= 1e-13 * 1.01
    torch.testing.assert_close(S, s[:5], atol=1e-14, rtol=0)


def test_vmap_and_jvp_on_the_dense_path() -> None:
    A = matrix_with_singular_values(spectrum("decaying", 20, seed=1), 50, 20, seed=1)
    batch = torch.stack([A, 2 * A])
    S = torch.func.vmap(lambda X: svds(X, 3, tol=1e-13, method="dense")[1])(batch)
    torch.testing.assert_close(S, torch.linalg.svdvals(batch)[:, :3], atol=1e-12, rtol=0)
    dA = weights((50, 20), F64, 7)
    _, dS = torch.func.jvp(lambda X: svds(X, 3, tol=1e-13, method="dense")[1], (A,), (dA,))
    _, dS_ref = torch.func.jvp(lambda X: torch.linalg.svdvals(X)[:3], (A,), (dA,))
    torch.testing.assert_close(dS, dS_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("shape", "k", "want"),
    [
        ((60000, 192), 10, "dense"),
        ((60000, 192), 1, "dense"),
        ((192, 60000), 10, "dense"),
        ((300, 300), 10, "dense"),
        ((20000, 500), 1, "probe"),
        ((20000, 500), 10, "dense"),  # a probe of 3 block steps: too few to pay
        ((4000, 4000), 10, "krylov"),
        ((4000, 4000), 1, "krylov"),
        ((2000, 2000), 10, "krylov"),
        ((10000, 1000), 10, "probe"),
        ((10000, 1000), 1, "krylov"),
        ((1000, 8000), 10, "probe"),
        ((1000, 8000), 1, "krylov"),
    ],
)
def test_chooser_follows_the_cost_model(shape: tuple[int, int], k: int, want: str) -> None:
    op = aslinearoperator(torch.empty(shape, device="meta"))
    costs = estimate_costs(*shape, k)
    assert (costs.dense <= costs.krylov) == (want != "krylov")
    assert (probe_steps(*shape, k) >= MIN_PROBE_STEPS) == (want == "probe") or want == "krylov"
    assert choose_method(op, k) == want


@pytest.mark.parametrize(
    ("shape", "dtype"), [((2, 10000, 1000), F32), ((10000, 1000), torch.complex64)]
)
def test_chooser_probes_only_one_real_matrix(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    # Batched or complex: the one-basis solver takes neither, so the model's pick stands.
    op = aslinearoperator(torch.empty(shape, dtype=dtype, device="meta"))
    costs = estimate_costs(*shape[-2:], 10, dtype=dtype)
    assert costs.dense <= costs.krylov
    assert probe_steps(*shape[-2:], 10, dtype=dtype) >= MIN_PROBE_STEPS
    assert choose_method(op, 10) == "dense"


def test_chooser_prices_the_backward_when_one_follows() -> None:
    # 2000×1000, k = 10, float32: Krylov's forward is a little cheaper, but its backward
    # (plain CG) costs more than the dense path's (CG preconditioned by the eigendecomposition).
    shape, k = (2000, 1000), 10
    fwd, both = estimate_costs(*shape, k), estimate_costs(*shape, k, backward=True)
    assert fwd.krylov < fwd.dense and both.dense < both.krylov
    A = torch.empty(shape, device="meta")
    assert choose_method(aslinearoperator(A), k) == "krylov"
    X = A.requires_grad_()
    assert choose_method(aslinearoperator(X), k) == "probe"
    with torch.no_grad():
        assert choose_method(aslinearoperator(X), k) == "krylov"
    # float64 runs at half the float32 rates, which moves the boundary.
    assert estimate_costs(5000, 1000, 10).dense < estimate_costs(5000, 1000, 10).krylov
    f64 = estimate_costs(5000, 1000, 10, dtype=F64)
    assert f64.krylov < f64.dense


@pytest.mark.parametrize(("dtype", "slowdown"), [(F64, 2), (torch.complex64, 4), (C128, 8)])
def test_cost_model_prices_precision_and_complex_arithmetic(
    dtype: torch.dtype, slowdown: int
) -> None:
    # 60000×192, k = 10: every dense term is compute-bound, so it scales by the slowdown.
    base, other = estimate_costs(60000, 192, 10), estimate_costs(60000, 192, 10, dtype=dtype)
    assert other.dense == pytest.approx(slowdown * base.dense)


def test_cost_model_streams_a_for_a_single_vector() -> None:
    # A product with one vector is memory-bound: the backward's CG at k = 1 costs about as
    # much per step as at k = 4, not a quarter.
    cg = [
        estimate_costs(10000, 1000, k, backward=True).krylov - estimate_costs(10000, 1000, k).krylov
        for k in (1, 4)
    ]
    assert cg[0] > 0.9 * cg[1]


def test_svds_auto_takes_the_method_the_chooser_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchsvd._topk

    seen: list[str] = []
    solve = torchsvd._topk.solve

    def recording(*args: object, method: str, **kwargs: object) -> object:
        seen.append(method)
        return solve(*args, method=method, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torchsvd._topk, "solve", recording)
    monkeypatch.setattr(torchsvd._topk, "choose_method", lambda op, k: "krylov")
    A = matrix_with_singular_values(spectrum("decaying", 20, seed=1), 60, 20, seed=1)
    svds(A, 3)
    svds(A, 3, method="dense")
    assert seen == ["krylov", "dense"]


# σ_i = 1/i: long enough (300 columns) for the one-basis solver at k = 1 and 10.
_DECAYING = matrix_with_singular_values(1 / torch.arange(1.0, 301.0, dtype=F64), 1500, 300, seed=3)


def _probe(
    A: torch.Tensor, k: int, steps: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """``solve(method="probe")`` with a probe of ``steps`` block steps: U, S, Vh, and whether
    the dense path ran (it returns the Gram eigendecomposition)."""
    from torchsvd import _dispatch
    from torchsvd._topk import default_tol

    monkeypatch.setattr(_dispatch, "probe_steps", lambda *args, **kwargs: steps)
    op = aslinearoperator(A)
    tol = default_tol(A.dtype)
    res, eigen = _dispatch.solve(op, op, None, k, tol=tol, maxiter=1000, v0=None, method="probe")
    U, S, Vh = res.U.to(F64), res.S.to(F64), res.Vh.to(F64)
    A64 = A.to(F64)
    worst = torch.maximum(
        (A64 @ Vh.mT - U * S).norm(dim=0).max(), (A64.mT @ U - Vh.mT * S).norm(dim=0).max()
    )
    assert float(worst) <= 2 * tol * float(S[0])
    torch.testing.assert_close(S, torch.linalg.svdvals(A64)[:k], atol=4 * tol, rtol=0)
    return U, S, Vh, eigen is not None


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("k", [1, 10])
def test_probe_keeps_a_krylov_solve_that_converges(
    k: int, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    # σ_i = 1/i converges within a few block steps. float32, k = 10: σ_1/σ_10 is too large to
    # square at tol 6.5e-6, the one-basis solver gives the problem back, and the two-basis
    # solver finishes within the same probe.
    assert not _probe(_DECAYING.to(dtype), k, 20, monkeypatch)[3]


def test_probe_falls_back_to_dense_when_krylov_is_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    # A flat spectrum needs dozens of block steps: a probe of two ends unconverged.
    A = torch.randn(1500, 300, generator=torch.Generator().manual_seed(4), dtype=F64)
    assert _probe(A, 3, 2, monkeypatch)[3]


def test_probe_leaves_a_possibly_cut_tie_to_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchsvd import _dispatch

    monkeypatch.setattr(_dispatch, "cut_tie", lambda S, block, tol: block + 1)
    assert _probe(_DECAYING, 1, 20, monkeypatch)[3]


def test_svds_through_the_probe_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchsvd._topk

    A, loss = _DECAYING, _loss(1500, 300, F64)
    out = []
    for method in ("probe", "dense"):
        monkeypatch.setattr(torchsvd._topk, "choose_method", lambda op, k, m=method: m)
        X = A.clone().requires_grad_()
        U, S, Vh = svds(X, 4, tol=1e-12)
        loss(U, S, Vh).backward()
        out.append((U.detach(), S.detach(), X.grad))
    (U1, S1, g1), (U2, S2, g2) = out
    torch.testing.assert_close(S1, S2, atol=1e-11, rtol=0)
    torch.testing.assert_close(projector(U1), projector(U2), atol=1e-9, rtol=0)
    assert g1 is not None and g2 is not None and rel(g1, g2) < 1e-8


def test_probe_gradient_matches_torch_and_central_differences(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # References outside torchsvd for the probe's Krylov result: autograd through
    # torch.linalg.svd (σ_i = 1/i, no ties) and a central difference along a random direction.
    import torchsvd._topk

    monkeypatch.setattr(torchsvd._topk, "choose_method", lambda op, k: "probe")
    monkeypatch.setattr(torchsvd._dispatch, "probe_steps", lambda *args, **kwargs: 20)
    k, loss = 4, _loss(1500, 300, F64)
    X = _DECAYING.clone().requires_grad_()
    loss(*svds(X, k, tol=1e-12)).backward()
    Y = _DECAYING.clone().requires_grad_()
    U, S, Vh = torch.linalg.svd(Y, full_matrices=False)
    loss(U[:, :k], S[:k], Vh[:k]).backward()
    assert X.grad is not None and Y.grad is not None and rel(X.grad, Y.grad) < 1e-8
    dA = weights((1500, 300), F64, 9)
    dA = dA / dA.norm()

    def f(t: float) -> float:
        U, S, Vh = torch.linalg.svd(_DECAYING + t * dA, full_matrices=False)
        return float(loss(U[:, :k], S[:k], Vh[:k]))

    h = 1e-5
    fd = (f(h) - f(-h)) / (2 * h)
    assert abs(float((X.grad * dA).sum()) - fd) <= 1e-6 * abs(fd)


def test_chooser_never_picks_dense_for_sparse_or_operators() -> None:
    D = torch.eye(50, dtype=F64)
    assert choose_method(aslinearoperator(D.to_sparse_csr()), 3) == "krylov"
    op = LinearOperator((50, 50), lambda X: D @ X, lambda Y: D @ Y, dtype=F64)
    assert choose_method(op, 3) == "krylov"
    assert estimate_costs(50, 50, 3).dense < estimate_costs(50, 50, 3).krylov
    with pytest.raises(ValueError, match="dense"):
        svds(D.to_sparse_csr(), 3, method="dense")
    with pytest.raises(ValueError, match="dense"):
        svds(op, 3, method="dense")
    with pytest.raises(ValueError, match="method"):
        svds(D, 3, method="lanczos")


def test_float32_batched_auto_matches_krylov() -> None:
    A = torch.randn(3, 300, 40, generator=torch.Generator().manual_seed(0), dtype=F32)
    S1 = svds(A, 3)[1]
    S2 = svds(A, 3, method="krylov")[1]
    torch.testing.assert_close(S1, S2, atol=1e-5 * float(S2.max()), rtol=0)


def test_pca_of_dense_data_takes_the_dense_path_with_the_same_result() -> None:
    from torchsvd._pca import _CenteredOperator

    X = matrix_with_singular_values(spectrum("decaying", 30, seed=2), 400, 30, seed=2) + 3.0
    assert choose_method(_CenteredOperator(aslinearoperator(X)), 4) == "dense"
    sparse = _CenteredOperator(aslinearoperator(X.to_sparse_csr()))
    assert choose_method(sparse, 4) == "krylov"
    a = weights((400,), F64, 1)

    def loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
        return S.sum() + (a @ U).square().sum()

    X1 = X.clone().requires_grad_()
    U1, S1, _ = torchsvd.pca(X1, 4, tol=1e-12)
    loss(U1, S1, _).backward()
    X2 = X.clone().requires_grad_()
    U2, S2, Vh2 = svds(X2 - X2.mean(dim=0), 4, tol=1e-12, method="krylov")
    loss(U2, S2, Vh2).backward()
    torch.testing.assert_close(S1.detach(), S2.detach(), atol=1e-11, rtol=0)
    torch.testing.assert_close(projector(U1.detach()), projector(U2.detach()), atol=1e-9, rtol=0)
    assert X1.grad is not None and X2.grad is not None and rel(X1.grad, X2.grad) < 1e-8


def test_unconverged_preconditioned_solve_falls_back_to_plain_cg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torchsvd._topk

    A = torch.randn(200, 40, generator=torch.Generator().manual_seed(9), dtype=F64)
    loss = _loss(200, 40, F64)
    monkeypatch.setattr(torchsvd._topk, "PRECONDITIONED_STEPS", 0)
    log = _cg_steps(monkeypatch)
    (_, _, _, g_dense), (_, _, _, g_krylov) = _both(A, 4, loss, 1e-12)
    assert log[0] == (True, 0) and log[1][0] is False and log[1][1] > 0, log
    assert rel(g_dense, g_krylov) < 1e-8


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_preconditioner_follows_the_internal_scaling(
    scale: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The forward's eigendecomposition is of the internally scaled matrix, the one the
    # backward solves with; were it of the unscaled one, the shifts would not match and the
    # solve would take many steps (or fall back to plain CG).
    A = torch.randn(300, 40, generator=torch.Generator().manual_seed(10), dtype=F64)
    X = (A * scale).requires_grad_()
    log = _cg_steps(monkeypatch)
    U, S, _ = svds(X, 4, tol=1e-12, method="dense")
    ((weights((300,), F64, 1) @ U).square().sum() + S.sum() / scale).backward()
    assert log == [(True, 1)], log
    assert X.grad is not None and bool(torch.isfinite(X.grad).all())
