"""The batched small-matrix SVD kernel: torch.linalg.svd's contract, sweeps, gradients, dispatch."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchsvd
from _helpers import F32, F64, projector, weights
from torchsvd import _small
from torchsvd.testing import matrix_with_singular_values, numerical_gradient, random_unitary

SHAPES = [(3, 3), (2, 2), (3, 2), (2, 3), (1, 3), (3, 1), (2, 1), (1, 2), (1, 1)]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]
# Bounds in units of eps, relative to σ_max; the kernel reaches about a third of them.
REC, ORTH, VALUES = 24, 12, 16
TIE = 1e-8  # tie tolerance of the gradient tests (float64)


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def _batch_with(s: torch.Tensor, m: int, n: int, seed: int) -> torch.Tensor:
    """U diag(s) Vᵀ in float64 with a different Haar pair per matrix, s of shape (N, k)."""
    N, k = s.shape
    U = random_unitary(m, k, batch=(N,), seed=seed)
    V = random_unitary(n, k, batch=(N,), seed=seed + 1)
    return (U * s.unsqueeze(-2)) @ V.mT


def _spectra(k: int, N: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    one = torch.ones(N, k, dtype=F64)
    first = torch.zeros(N, k, dtype=F64)
    first[:, 0] = 1
    return {
        "graded": 10.0 ** (-4.0 * torch.arange(k, dtype=F64)).expand(N, k),
        "graded-8": 10.0 ** (-8.0 * torch.arange(k, dtype=F64)).expand(N, k),
        "tied": one,
        "near-tie": 1 + 1e-7 * torch.randn(N, k, generator=gen, dtype=F64),
        "cluster": 1 + 1e-3 * torch.rand(N, k, generator=gen, dtype=F64),
        "rank-1": first,
        "tie-and-zero": torch.tensor([1.0, 1.0, 0.0][:k], dtype=F64).expand(N, k),
        "eps-values": torch.tensor([1.0, 1e-17, 1e-17][:k], dtype=F64).expand(N, k),
    }


def _inputs(m: int, n: int, N: int = 2000, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(N, m, n, generator=gen, dtype=F64)
    cases = {
        name: _batch_with(s.sort(dim=-1, descending=True).values, m, n, seed)
        for name, s in _spectra(min(m, n), N, seed).items()
    }
    zero_col = g.clone()
    zero_col[..., 0] = 0
    equal_rows = g.clone()
    equal_rows[..., 0, :] = g[..., -1, :]
    spread = 10.0 ** torch.randint(-20, 21, (N, m, n), generator=gen)
    cases.update(
        {
            "gaussian": g,
            "tiny": g * 1e-30,
            "huge": g * 1e30,
            "zero": torch.zeros_like(g),
            "zero column": zero_col,
            "equal rows": equal_rows,
            "small integers": torch.randint(-2, 3, (N, m, n), generator=gen).to(F64),
            "entries 1e-20..1e20": g * spread,
            "upper triangular": torch.triu(g),
        }
    )
    return cases


def _check_contract(A: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> None:
    """torch.linalg.svd's contract, errors in units of eps relative to σ_max (or max |a_ij|)."""
    eps, k = _eps(A.dtype), S.shape[-1]
    assert U.shape == (*A.shape[:-1], k) and Vh.shape == (*A.shape[:-2], k, A.shape[-1])
    assert bool((S >= 0).all()) and bool((S[..., :-1] >= S[..., 1:]).all())
    scale = torch.maximum(S[..., 0], A.abs().amax((-2, -1))).clamp_min(torch.finfo(A.dtype).tiny)
    rec = ((U * S.unsqueeze(-2)) @ Vh - A).abs().amax((-2, -1)) / scale
    assert float(rec.max()) <= REC * eps
    eye = torch.eye(k, dtype=A.dtype, device=A.device)
    assert float((U.mT @ U - eye).abs().max()) <= ORTH * eps
    assert float((Vh @ Vh.mT - eye).abs().max()) <= ORTH * eps
    ref = torch.linalg.svdvals(A.double().cpu())
    err = (S.double().cpu() - ref).abs().amax(-1) / ref[..., 0].clamp_min(1e-300)
    assert float(err.max()) <= VALUES * eps


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_contract_of_torch_linalg_svd(m: int, n: int, dtype: torch.dtype, device: str) -> None:
    for name, A in _inputs(m, n).items():
        A = A.to(dtype=dtype, device=device)
        before = A.clone()
        U, S, Vh = _small.decompose(A)
        assert torch.equal(A, before), "the input was modified"
        try:
            _check_contract(A, U, S, Vh)
        except AssertionError as err:
            raise AssertionError(f"{m}x{n} {dtype} {name}") from err


@pytest.mark.parametrize(("dtype", "size"), [(F64, 1e-310), (F32, 1e-40), (F64, 1e300)])
def test_subnormal_and_near_overflow_entries(dtype: torch.dtype, size: float) -> None:
    A = (weights((64, 3, 3), F64, seed=21) * size).to(dtype)
    U, S, Vh = _small.decompose(A)
    eye = torch.eye(3, dtype=dtype)
    assert float((U.mT @ U - eye).abs().max()) <= ORTH * _eps(dtype)
    assert float((Vh @ Vh.mT - eye).abs().max()) <= ORTH * _eps(dtype)
    # Subnormal entries carry an absolute error of half their spacing, not eps relative.
    spacing = float(torch.finfo(dtype).smallest_normal) * _eps(dtype)
    ref = torch.linalg.svdvals(A.double())
    tol = VALUES * _eps(dtype) * ref[..., :1] + 16 * spacing
    assert bool(((S.double() - ref).abs() <= tol).all())
    rec = ((U * S.unsqueeze(-2)) @ Vh - A).abs()
    assert bool((rec <= REC * _eps(dtype) * S[..., :1, None] + 16 * spacing).all())


def test_batch_shapes_and_strides() -> None:
    A = weights((2, 3, 1600, 3, 2), F64, seed=1)
    U, S, Vh = _small.decompose(A)
    _check_contract(A, U, S, Vh)
    U1, S1, Vh1 = _small.decompose(A[1, 2, 7])
    assert torch.equal(S1, S[1, 2, 7]) and torch.equal(U1, U[1, 2, 7])
    assert torch.equal(Vh1, Vh[1, 2, 7])


def _relative_inner_products(A: torch.Tensor) -> float:
    X, _ = _small._jacobi(A)
    B = X[:, : A.shape[-2]]
    norms = B.norm(dim=1).clamp_min(1e-300)
    worst = 0.0
    for p, q in ((0, 1), (0, 2), (1, 2)):
        worst = max(worst, float(((B[p] * B[q]).sum(0) / (norms[p] * norms[q])).abs().max()))
    return worst


def _adversarial(N: int = 20000) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    near_diag = torch.diag_embed(torch.rand(N, 3, generator=gen, dtype=F64))
    perm = torch.eye(3, dtype=F64)[[1, 2, 0]].expand(N, 3, 3)
    cases = {
        name: _batch_with(s.sort(dim=-1, descending=True).values, 3, 3, 3)
        for name, s in _spectra(3, N, 4).items()
    }
    cases.update(
        {
            "gaussian": torch.randn(N, 3, 3, generator=gen, dtype=F64),
            "uniform": torch.rand(N, 3, 3, generator=gen, dtype=F64),
            "upper": torch.triu(torch.randn(N, 3, 3, generator=gen, dtype=F64)),
            "nearly diagonal": near_diag + 1e-3 * torch.randn(N, 3, 3, generator=gen, dtype=F64),
            "permuted identity": perm + 1e-7 * torch.randn(N, 3, 3, generator=gen, dtype=F64),
            "gap 1e-4 above a zero": _batch_with(
                torch.tensor([[1.0, 1 - 1e-4, 1e-4]], dtype=F64).expand(N, 3), 3, 3, 8
            ),
        }
    )
    return cases


@pytest.mark.parametrize("dtype", [F32, F64])
def test_sweep_count_reaches_rounding(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixed sweep count orthogonalises the columns to rounding on adversarial inputs."""
    cases = _adversarial()
    for name, A in cases.items():
        assert _relative_inner_products(A.to(dtype)) <= 8 * _eps(dtype), name
    # Four sweeps are enough in both precisions (float64 runs one more as a margin) and three
    # are not: the count is not arbitrary.
    monkeypatch.setitem(_small.SWEEPS, dtype, 4)
    assert max(_relative_inner_products(A.to(dtype)) for A in cases.values()) <= 8 * _eps(dtype)
    monkeypatch.setitem(_small.SWEEPS, dtype, 3)
    assert max(_relative_inner_products(A.to(dtype)) for A in cases.values()) > 100 * _eps(dtype)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    m=st.integers(1, 3),
    n=st.integers(1, 3),
    double=st.booleans(),
    exponent=st.integers(-35, 35),
    rank=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_property_contract(
    m: int, n: int, double: bool, exponent: int, rank: int, seed: int
) -> None:
    k = min(m, n)
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(64, k, generator=gen, dtype=F64).sort(dim=-1, descending=True).values
    s[:, min(rank, k) :] = 0
    dtype = F64 if double else F32
    A = (_batch_with(s, m, n, seed) * 10.0**exponent).to(dtype)
    _check_contract(A, *_small.decompose(A))


# Gradients: gauge-invariant losses, float64.


def _loss_terms(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, seed: int) -> torch.Tensor:
    m, n = U.shape[-2], Vh.shape[-1]
    batch = U.shape[:-2]
    P = projector(U[..., :1])
    Q = projector(Vh.mT[..., :1])
    return (
        (P * weights((*batch, m, m), F64, seed)).sum()
        + (Q * weights((*batch, n, n), F64, seed + 1)).sum()
        + (S.square() * weights((*batch, S.shape[-1]), F64, seed + 2)).sum()
    )


@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_gradient_matches_general_backward_and_torch(m: int, n: int) -> None:
    """Separated spectra: the fused rule agrees with torchsvd's general one and with PyTorch's."""
    k = min(m, n)
    s = torch.linspace(3, 1, k, dtype=F64).expand(6, k)
    A = _batch_with(s, m, n, seed=2).requires_grad_()
    dA = weights(A.shape, F64, seed=9)

    def loss(svd):  # type: ignore[no-untyped-def]
        def f(X: torch.Tensor) -> torch.Tensor:
            U, S, Vh = svd(X)
            return _loss_terms(U, S, Vh, seed=3) + ((U @ Vh) * weights(X.shape, F64, 4)).sum()

        return f

    small = loss(lambda X: _small.svd(X, TIE))
    general = loss(lambda X: torchsvd._svd._SVD.apply(X, False, TIE, 0.0))
    reference = loss(lambda X: torch.linalg.svd(X, full_matrices=False))
    (g,) = torch.autograd.grad(small(A), A)
    for ref in (general, reference):
        (g_ref,) = torch.autograd.grad(ref(A), A)
        torch.testing.assert_close(g, g_ref, rtol=1e-11, atol=1e-12)
    _, t = torch.func.jvp(small, (A.detach(),), (dA,))
    _, t_ref = torch.func.jvp(general, (A.detach(),), (dA,))
    torch.testing.assert_close(t, t_ref, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(t, (g * dA).sum(), rtol=1e-11, atol=1e-12)


def _polar_loss(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    U, _, Vh = _small.svd(X, TIE)
    return ((U @ Vh) * W).sum()


@pytest.mark.parametrize(("m", "n"), [(3, 3), (2, 2), (3, 2), (2, 3)])
def test_polar_gradient_at_a_full_tie(m: int, n: int) -> None:
    """U Vᵀ at a matrix with orthonormal columns/rows: all σ tied; PyTorch gives NaN here."""
    k = min(m, n)
    A = _batch_with(torch.ones(2, k, dtype=F64), m, n, seed=6)
    W = weights(A.shape, F64, seed=7)
    Ag = A.clone().requires_grad_()
    (g,) = torch.autograd.grad(_polar_loss(Ag, W), Ag)
    torch.testing.assert_close(
        g, numerical_gradient(lambda X: _polar_loss(X, W), A), atol=1e-8, rtol=1e-7
    )


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_gradients_at_ties_zeros_and_extreme_scales(scale: float) -> None:
    """Projector onto a top-2 block holding a tie, above a zero singular value; σ of all sizes."""
    s = torch.tensor([[2.0, 2.0, 0.0], [3.0, 1.0, 1.0], [1.0, 1.0, 1.0]], dtype=F64) * scale
    A = _batch_with(s, 3, 3, seed=11)
    W = weights((3, 3, 3), F64, seed=12)
    w = weights((3, 1), F64, seed=13)

    def loss(X: torch.Tensor) -> torch.Tensor:
        U, S, _ = _small.svd(X, TIE)
        # First matrix: the tie σ₁ = σ₂ inside the top-2 block, above a zero; second: the
        # top-1 projector above a tie; third: a symmetric function of S at a threefold tie.
        top2 = (projector(U[0, :, :2]) * W[0]).sum()
        top1 = (projector(U[1, :, :1]) * W[1]).sum()
        return top2 + top1 + S[2].square().sum() * w[2, 0] / scale**2

    Ag = A.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (g,) = torch.autograd.grad(loss(Ag), Ag)
    ref = numerical_gradient(loss, A, h=1e-6 * scale)
    torch.testing.assert_close(g * scale, ref * scale, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize(("m", "n"), [(3, 3), (3, 2), (2, 3)])
def test_cotangents_of_single_outputs(m: int, n: int) -> None:
    """Unused outputs get no cotangent (None, not zeros): each alone gives the right gradient."""
    A = _batch_with(torch.tensor([[3.0, 2.0, 1.0][: min(m, n)]], dtype=F64), m, n, seed=22)
    W = weights((1, m, m), F64, seed=23)
    for pick in (
        lambda U, S, Vh: S.square().sum(),
        lambda U, S, Vh: (projector(U[..., :1]) * W).sum(),
        lambda U, S, Vh: projector(Vh.mT[..., 1:2]).diagonal(dim1=-2, dim2=-1).square().sum(),
    ):

        def loss(X: torch.Tensor) -> torch.Tensor:
            return pick(*_small.svd(X, TIE))  # noqa: B023

        Ag = A.clone().requires_grad_()
        (g,) = torch.autograd.grad(loss(Ag), Ag)
        torch.testing.assert_close(g, numerical_gradient(loss, A), atol=1e-8, rtol=1e-6)
    # No cotangent at all (a caller with its own rule, as the spectral functions): no work.
    assert _small._SmallSVD.backward(None, None, None, None) == (None, None, None)


def test_double_backward_and_gradcheck() -> None:
    A = _batch_with(torch.tensor([[3.0, 2.0, 1.0], [2.0, 2.0, 1.0]], dtype=F64), 3, 3, seed=14)
    A.requires_grad_()

    def f(X: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Quantities with a derivative at the tie σ₁ = σ₂ of the second matrix.
        U, S, Vh = _small.svd(X, TIE)
        return U @ Vh, projector(U[..., :2]), S.square().sum(-1)

    assert torch.autograd.gradcheck(f, (A,), check_forward_ad=True)
    # Second derivatives only at the separated spectrum: a finite difference of the backward
    # itself breaks the tie, which the rule masks.
    assert torch.autograd.gradgradcheck(f, (A[:1].detach().requires_grad_(),))


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_vmap_matches_a_loop() -> None:
    A = weights((4, 3, 2), F64, seed=15)
    W = weights((4, 3, 2), F64, seed=16)

    def one(X: torch.Tensor, Wi: torch.Tensor) -> torch.Tensor:
        return _polar_loss(X, Wi)

    g = torch.func.vmap(torch.func.grad(one))(A, W)
    for i in range(4):
        torch.testing.assert_close(g[i], torch.func.grad(one)(A[i], W[i]))


def test_warns_when_the_loss_depends_on_the_basis_inside_a_tie() -> None:
    A = torch.eye(3, dtype=F64).expand(2, 3, 3).clone().requires_grad_()
    U, _, _ = _small.svd(A, TIE)
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="tied singular values"):
        U[..., 0].sum().backward()


# Dispatch from torchsvd.svd.


def test_svd_dispatches_large_batches_of_small_real_matrices() -> None:
    A = weights((_small.MIN_BATCH, 3, 3), F64, seed=17).requires_grad_()
    U, S, Vh = torchsvd.svd(A)
    assert type(S.grad_fn).__name__ == "_SmallSVDBackward"
    _check_contract(A.detach(), U.detach(), S.detach(), Vh.detach())
    U2, S2, Vh2 = torchsvd.svd(A, full_matrices=True)  # square: full is reduced
    assert type(S2.grad_fn).__name__ == "_SmallSVDBackward"
    assert torch.equal(U2, U) and torch.equal(Vh2, Vh)


@pytest.mark.parametrize(
    ("shape", "dtype", "full"),
    [
        ((4, 3, 3), F64, False),  # batch below MIN_BATCH
        ((_small.MIN_BATCH, 4, 3), F64, False),  # too large
        ((_small.MIN_BATCH, 3, 3), torch.complex128, False),  # complex
        ((_small.MIN_BATCH, 3, 2), F64, True),  # full_matrices of a non-square matrix
    ],
)
def test_other_inputs_take_the_general_path(
    shape: tuple[int, ...], dtype: torch.dtype, full: bool
) -> None:
    A = weights(shape, dtype, seed=18)
    assert not _small.eligible(A, full)
    _, S, _ = torchsvd.svd(A.requires_grad_(), full_matrices=full)
    # The general path's rule, or torch's graph where its spectrum is clear (test_svd_clear).
    assert type(S.grad_fn).__name__ in {"_SVDBackward", "LinalgSvdBackward0"}


def test_half_precision_is_computed_in_float32() -> None:
    A = weights((_small.MIN_BATCH, 2, 2), F32, seed=19).to(torch.bfloat16)
    U, S, Vh = torchsvd.svd(A)
    assert U.dtype == S.dtype == Vh.dtype == torch.bfloat16
    torch.testing.assert_close(S.float(), torch.linalg.svdvals(A.float()), atol=1e-2, rtol=1e-2)


def test_matrix_with_singular_values_is_reproduced() -> None:
    A = matrix_with_singular_values([5.0, 2.0, 2.0], 3, 3, batch=(4,), seed=20)
    _, S, _ = _small.decompose(A)
    torch.testing.assert_close(S, torch.tensor([5.0, 2.0, 2.0], dtype=F64).expand(4, 3))


# The spectral functions on large batches of square real matrices (entry-by-entry products).


def _square_batch(n: int, seed: int) -> torch.Tensor:
    """MIN_BATCH n×n float64 matrices: Gaussian, rotations (all σ tied), orthogonal times
    distinct values (reflections among them), and diagonal ones with a tie.

    No tied reflection: its nearest rotation is not unique, so two correct SVDs can give two.
    """
    N = _small.MIN_BATCH
    A = weights((N, n, n), F64, seed=seed)
    Q = random_unitary(n, batch=(N // 4,), seed=seed + 1)
    Q[: N // 8, :, 0] *= torch.linalg.det(Q[: N // 8]).sign().unsqueeze(-1)
    A[: N // 8] = Q[: N // 8]  # orthogonal: all σ tied (rotations and reflections)
    A[N // 8 : N // 4] = Q[N // 8 :] * torch.tensor([3.0, 2.0, 1.0][:n], dtype=F64)
    A[N // 4 : N // 4 + 8] = torch.diag_embed(torch.tensor([2.0, 2.0, 1.0][:n], dtype=F64))
    return A


def _general(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_small, "MIN_BATCH", 10**9)


SQUARE_FUNCTIONS = {
    "polar": lambda X: torchsvd.polar(X),
    "rotation": lambda X: torchsvd.polar(X, special=True),
    "s² + s": lambda X: torchsvd.svd_apply(X, lambda s: s.square() + s),
    "svt": lambda X: torchsvd.svt(X, 0.5),
}


@pytest.mark.parametrize("name", list(SQUARE_FUNCTIONS))
@pytest.mark.parametrize("n", [2, 3])
def test_spectral_functions_on_large_batches_match_the_general_path(
    name: str, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fn = SQUARE_FUNCTIONS[name]
    A = _square_batch(n, seed=21)
    W, T = weights(A.shape, F64, seed=22), weights(A.shape, F64, seed=23)
    Ag = A.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torchsvd.DegenerateGradientWarning)
        F = fn(Ag)
        (g,) = torch.autograd.grad((F * W).sum(), Ag)
        _, jvp = torch.func.jvp(fn, (A,), (T,))
        _general(monkeypatch)
        F_ref = fn(Ag)
        (g_ref,) = torch.autograd.grad((F_ref * W).sum(), Ag)
        _, jvp_ref = torch.func.jvp(fn, (A,), (T,))
    torch.testing.assert_close(F, F_ref, atol=1e-13, rtol=0)
    torch.testing.assert_close(g, g_ref, atol=1e-11, rtol=1e-11)
    torch.testing.assert_close(jvp, jvp_ref, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("n", [2, 3])
def test_nearest_rotation_of_a_large_batch_against_central_differences(n: int) -> None:
    """Directional derivative of ⟨R(A), W⟩ over the whole batch, rotations (ties) included."""
    A = _square_batch(n, seed=24)
    W, D = weights(A.shape, F64, seed=25), weights(A.shape, F64, seed=26)
    keep = torch.ones(A.shape[0], dtype=torch.bool)
    keep[_small.MIN_BATCH // 4 : _small.MIN_BATCH // 4 + 8] = False  # tied σ_{n−1} = σ_n: not
    D = D * keep[:, None, None]  # differentiable where det < 0, and here det > 0 anyway

    def loss(X: torch.Tensor) -> torch.Tensor:
        return (torchsvd.polar(X, special=True) * W).sum()

    Ag = A.clone().requires_grad_()
    R = torchsvd.polar(Ag, special=True)
    assert torch.allclose(torch.linalg.det(R.detach()), torch.ones((), dtype=F64))
    (g,) = torch.autograd.grad((R * W).sum(), Ag)
    h = 1e-6
    fd = (loss(A + h * D) - loss(A - h * D)) / (2 * h)
    assert abs(float((g * D).sum()) - float(fd)) <= 1e-6 * float(g.norm() * D.norm())


def test_nearest_rotation_second_derivatives_on_a_large_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Double backward through the entry-by-entry first derivative: the general second order."""
    A = _square_batch(3, seed=27)[_small.MIN_BATCH // 4 + 8 :]
    A = torch.cat([A, A[: _small.MIN_BATCH - A.shape[0]]])
    W, D = weights(A.shape, F64, seed=28), weights(A.shape, F64, seed=29)

    def hvp() -> torch.Tensor:
        Ag = A.clone().requires_grad_()
        (g,) = torch.autograd.grad(
            (torchsvd.polar(Ag, special=True) * W).sum(), Ag, create_graph=True
        )
        return torch.autograd.grad((g * D).sum(), Ag)[0]

    fast = hvp()
    _general(monkeypatch)
    torch.testing.assert_close(fast, hvp(), atol=1e-10, rtol=1e-10)


def test_nearest_rotation_of_a_large_batch_warns_where_it_is_not_unique() -> None:
    A = _square_batch(3, seed=30)
    A[0] = torch.diag(torch.tensor([3.0, 1.0, -1.0], dtype=F64))  # σ₂ = σ₃ with det A < 0
    with pytest.warns(torchsvd.DegenerateGradientWarning, match="not unique"):
        R = torchsvd.polar(A.requires_grad_(), special=True)
    assert bool(torch.isfinite(torch.autograd.grad(R.sum(), A)[0]).all())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_cofactor_determinant(n: int) -> None:
    M = weights((7, n, n), F64, seed=31)
    torch.testing.assert_close(_small.det(M), torch.linalg.det(M))


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (lambda U, S, Vh: U[..., 0].sum(), 1),  # a basis vector of a tie
        (lambda U, S, Vh: (U @ Vh).sum(), 1),  # u_i v_iᵀ of a zero σ
        (lambda U, S, Vh: projector(U[..., :2]).sum() + S.sum(), 0),  # nothing free
    ],
)
def test_warnings_on_part_of_a_batch_match_the_general_backward(
    loss: Any, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only some matrices of the batch are tied or singular: the same warnings as in general."""
    A = weights((_small.MIN_BATCH, 3, 3), F64, seed=32)
    A[5] = torch.diag(torch.tensor([2.0, 2.0, 1.0], dtype=F64))
    A[9] = torch.diag(torch.tensor([3.0, 1.0, 0.0], dtype=F64))

    def messages() -> set[str]:
        X = A.clone().requires_grad_()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.autograd.grad(loss(*torchsvd.svd(X)), X)
        return {str(w.message) for w in caught}

    small = messages()
    _general(monkeypatch)
    assert small == messages()
    assert len(small) == expected
