"""null_space, orth, low_rank: scipy in float64, Eckart–Young, the seeds' worked examples."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import torchsvd
from _helpers import projector
from torchsvd.testing import matrix_with_singular_values

# Seed 001: A = U Σ Vᵀ by hand, σ = 5, 3.
SEED001 = [[3.0, 2.0, 2.0], [2.0, 3.0, -2.0]]
# Seed 003: the 5×3 example, with its printed singular values and (absolute) singular vectors;
# the seed's text lost the minus signs, so only |entries| are compared. It prints σ_2 = 6.53207, a
# transposition of 6.53027 (the square root of a root of λ³ − 498λ² + 27239λ − 333506, the
# characteristic polynomial of AᵀA); its U and V agree with 6.53027.
SEED003 = [[3.0, 2.0, 3.0], [8.0, 8.0, 2.0], [8.0, 7.0, 4.0], [1.0, 8.0, 7.0], [6.0, 4.0, 7.0]]
SEED003_S = [20.916, 6.53027, 4.22807]
SEED003_ABS_U = [
    [0.215371, 0.030348, 0.305490],
    [0.519432, 0.503779, 0.419173],
    [0.534262, 0.311021, 0.011730],
    [0.438715, 0.787878, 0.431352],
    [0.453759, 0.166729, 0.738082],
]
SEED003_ABS_V = [
    [0.585051, 0.710399, 0.391212],
    [0.652648, 0.126068, 0.747098],
    [0.481418, 0.692415, 0.537398],
]


def _cases() -> list[tuple[str, torch.Tensor]]:
    """Matrices with known rank: full, deficient, zero, tall, wide, complex."""
    out = [
        ("tall full", matrix_with_singular_values([3.0, 2.0, 1.0], 6, 3, seed=0)),
        ("wide full", matrix_with_singular_values([3.0, 2.0, 1.0], 3, 6, seed=1)),
        ("square rank 2", matrix_with_singular_values([3.0, 1.0, 0.0, 0.0], 4, 4, seed=2)),
        ("tall rank 1", matrix_with_singular_values([2.0], 5, 3, seed=3)),
        ("wide rank 2 tie", matrix_with_singular_values([1.0, 1.0], 3, 5, seed=4)),
        ("zero", torch.zeros(3, 4, dtype=torch.float64)),
        (
            "complex rank 2",
            matrix_with_singular_values([2.0, 1.0], 4, 3, dtype=torch.complex128, seed=5),
        ),
        ("tiny scale", matrix_with_singular_values([1e-200, 1e-201, 0.0], 3, 3, seed=6)),
    ]
    return out


@pytest.mark.parametrize(("name", "A"), _cases(), ids=[c[0] for c in _cases()])
def test_null_space_and_orth_match_scipy(name: str, A: torch.Tensor) -> None:
    N = torchsvd.null_space(A)
    Q = torchsvd.orth(A)
    N_ref = torch.from_numpy(scipy.linalg.null_space(A.numpy()))
    Q_ref = torch.from_numpy(scipy.linalg.orth(A.numpy()))
    assert N.shape == N_ref.shape and Q.shape == Q_ref.shape
    assert N.dtype == A.dtype and Q.dtype == A.dtype
    # Bases are defined up to rotation: compare the projectors, and check orthonormality.
    torch.testing.assert_close(projector(N), projector(N_ref), atol=1e-12, rtol=0)
    torch.testing.assert_close(projector(Q), projector(Q_ref), atol=1e-12, rtol=0)
    eye_n = torch.eye(N.shape[-1], dtype=A.dtype)
    torch.testing.assert_close(N.mH @ N, eye_n, atol=1e-12, rtol=0)
    scale = max(float(torch.linalg.matrix_norm(A, ord=2)), 1e-300)
    assert float((A @ N).abs().sum()) <= 1e-12 * scale
    # rank–nullity, and agreement with torch.linalg.matrix_rank (same tolerance convention)
    assert Q.shape[-1] + N.shape[-1] == A.shape[-1]
    assert Q.shape[-1] == int(torch.linalg.matrix_rank(A))


def test_rtol_matches_scipy_rcond() -> None:
    A = matrix_with_singular_values([1.0, 1e-2, 1e-5], 5, 4, seed=7)
    for rtol, rank in [(None, 3), (1e-4, 2), (0.1, 1)]:
        N = torchsvd.null_space(A, rtol=rtol)
        Q = torchsvd.orth(A, rtol=rtol)
        ref = scipy.linalg.null_space(A.numpy(), rcond=rtol)
        assert N.shape[-1] == ref.shape[1] == 4 - rank
        assert Q.shape[-1] == rank
        torch.testing.assert_close(
            projector(N), projector(torch.from_numpy(ref)), atol=1e-10, rtol=0
        )


def test_batched_when_ranks_agree() -> None:
    A = matrix_with_singular_values([2.0, 1.0, 0.0], 4, 3, batch=(2, 3), seed=8)
    N = torchsvd.null_space(A)
    Q = torchsvd.orth(A)
    assert N.shape == (2, 3, 3, 1) and Q.shape == (2, 3, 4, 2)
    for idx in np.ndindex(2, 3):
        ref = torch.from_numpy(scipy.linalg.null_space(A[idx].numpy()))
        torch.testing.assert_close(projector(N[idx]), projector(ref), atol=1e-12, rtol=0)


def test_batched_rank_mismatch_is_a_clear_error() -> None:
    A = torch.stack(
        [
            matrix_with_singular_values([2.0, 1.0, 0.0], 3, 3, seed=9),
            matrix_with_singular_values([2.0, 1.0, 0.5], 3, 3, seed=10),
        ]
    )
    for fn in (torchsvd.null_space, torchsvd.orth):
        with pytest.raises(
            ValueError, match=r"ranks differ across the batch \(found ranks \[2, 3\]"
        ):
            fn(A)


def test_float32_and_empty() -> None:
    A = matrix_with_singular_values([3.0, 1.0, 0.0], 3, 3, seed=11, dtype=torch.float32)
    assert torchsvd.null_space(A).shape == (3, 1)
    assert torchsvd.orth(A).dtype == torch.float32
    assert torchsvd.null_space(torch.zeros(0, 3, dtype=torch.float64)).shape == (3, 3)
    assert torchsvd.orth(torch.zeros(0, 3, dtype=torch.float64)).shape == (0, 0)
    assert torchsvd.low_rank(torch.zeros(2, 0, dtype=torch.float64), 0).shape == (2, 0)


@pytest.mark.parametrize("fn", [torchsvd.null_space, torchsvd.orth])
def test_subspace_bad_input(fn) -> None:  # type: ignore[no-untyped-def]
    A = torch.eye(3, dtype=torch.float64)
    for bad in (-1.0, float("nan"), float("inf"), 1.0, 2.0):
        # 1 or more would make every singular value "zero": an empty basis, silently.
        with pytest.raises(ValueError, match=r"rtol must be a finite float in \[0, 1\), got"):
            fn(A, rtol=bad)
    with pytest.raises(TypeError, match="rtol must be a float"):
        fn(A, rtol="0.1")
    with pytest.raises(TypeError, match="floating dtype"):
        fn(torch.eye(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fn(torch.ones(3))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        fn([[1.0, 0.0]])


@pytest.mark.parametrize(
    ("m", "n", "dtype"),
    [(6, 4, torch.float64), (4, 7, torch.float64), (5, 5, torch.complex128), (5, 3, torch.float32)],
)
def test_eckart_young_identities(m: int, n: int, dtype: torch.dtype) -> None:
    A = matrix_with_singular_values(
        torch.linspace(3.0, 0.5, min(m, n), dtype=torch.float64), m, n, batch=(2,), seed=12
    ).to(dtype)
    S = torch.linalg.svdvals(A)
    tol = 1e-12 if dtype in (torch.float64, torch.complex128) else 2e-5
    for k in range(min(m, n) + 1):
        E = A - torchsvd.low_rank(A, k)
        tail = S[..., k:]
        sigma_next = tail[..., 0] if k < min(m, n) else torch.zeros_like(S[..., 0])
        torch.testing.assert_close(torch.linalg.matrix_norm(E, ord=2), sigma_next, atol=tol, rtol=0)
        torch.testing.assert_close(
            torch.linalg.matrix_norm(E) ** 2, (tail**2).sum(-1), atol=tol, rtol=0
        )
        assert int(torch.linalg.matrix_rank(A - E).max()) == k


def test_low_rank_bad_k() -> None:
    A = torch.ones(3, 2, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"0 <= k <= 2 \(min\(m, n\) for A of shape \(3, 2\)\), got 3"
    ):
        torchsvd.low_rank(A, 3)
    with pytest.raises(ValueError, match="got -1"):
        torchsvd.low_rank(A, -1)
    for bad in (1.0, True, "1"):
        with pytest.raises(TypeError, match="k must be an int"):
            torchsvd.low_rank(A, bad)  # type: ignore[arg-type]


def test_low_rank_gradcheck_and_matches_naive_autograd() -> None:
    A = matrix_with_singular_values([4.0, 3.0, 2.0, 1.0], 5, 4, seed=13).requires_grad_()
    assert torch.autograd.gradcheck(lambda X: torchsvd.low_rank(X, 2), (A,))
    assert torch.autograd.gradgradcheck(lambda X: torchsvd.low_rank(X, 2), (A,))
    G = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (g_ours,) = torch.autograd.grad((torchsvd.low_rank(A, 2) * G).sum(), A)

    def naive(X: torch.Tensor) -> torch.Tensor:
        U, S, Vh = torch.linalg.svd(X, full_matrices=False)
        return (U[:, :2] * S[:2]) @ Vh[:2]

    (g_ref,) = torch.autograd.grad((naive(A) * G).sum(), A)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("s", "k"), [([2.0, 2.0, 1.0, 0.5], 3), ([2.0, 2.0, 1.0, 0.0], 3), ([3.0, 1.0, 0.0, 0.0], 1)]
)
def test_low_rank_gradient_at_ties_inside_a_block(s: list[float], k: int) -> None:
    # Ties inside the kept block, or zeros in the discarded one: A_k is unique and smooth here
    # (PyTorch's own backward divides by 0). Reference: float64 central differences.
    A = matrix_with_singular_values(s, 4, 4, seed=14).requires_grad_()
    assert torch.autograd.gradcheck(lambda X: torchsvd.low_rank(X, k), (A,), atol=1e-6)


def test_low_rank_at_a_tie_across_k_warns() -> None:
    # σ_1 = σ_2: the best rank-1 approximation is not unique, there is no gradient.
    A = matrix_with_singular_values([1.0, 1.0, 0.5], 3, 3, seed=15).requires_grad_()
    G = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.warns(torchsvd.DegenerateGradientWarning):
        (torchsvd.low_rank(A, 1) * G).sum().backward()


def test_subspace_projector_gradients() -> None:
    # Range of a tall full-rank matrix and null space of a wide one: constant rank nearby,
    # so the projectors are smooth (the bases themselves are not unique).
    tall = matrix_with_singular_values([3.0, 1.0], 4, 2, seed=16).requires_grad_()
    wide = matrix_with_singular_values([3.0, 1.0], 2, 4, seed=17).requires_grad_()
    assert torch.autograd.gradcheck(lambda X: projector(torchsvd.orth(X)), (tall,))
    assert torch.autograd.gradcheck(lambda X: projector(torchsvd.null_space(X)), (wide,))


def test_seed001_worked_example() -> None:
    A = torch.tensor(SEED001, dtype=torch.float64)
    U, S, Vh = torchsvd.svd(A, full_matrices=True)
    torch.testing.assert_close(S, torch.tensor([5.0, 3.0], dtype=torch.float64))
    r2, r18 = 2**-0.5, 18**-0.5
    V_seed = torch.tensor(
        [[r2, r18, 2 / 3], [r2, -r18, -2 / 3], [0.0, 4 * r18, -1 / 3]], dtype=torch.float64
    )
    U_seed = torch.tensor([[r2, r2], [r2, -r2]], dtype=torch.float64)
    # Each singular pair is unique up to a common sign (distinct σ), the null vector up to sign.
    signs = torch.sign((Vh.mT * V_seed).sum(0))
    torch.testing.assert_close(Vh.mT * signs, V_seed)
    torch.testing.assert_close(U * signs[:2], U_seed)
    N = torchsvd.null_space(A)
    torch.testing.assert_close(projector(N), projector(V_seed[:, 2:]))
    torch.testing.assert_close(torchsvd.orth(A) @ torchsvd.orth(A).mT, torch.eye(2, dtype=A.dtype))
    torch.testing.assert_close(
        torchsvd.low_rank(A, 1), torch.tensor([[2.5, 2.5, 0.0], [2.5, 2.5, 0.0]], dtype=A.dtype)
    )


def test_seed003_worked_example() -> None:
    A = torch.tensor(SEED003, dtype=torch.float64)
    U, S, Vh = torchsvd.svd(A)
    torch.testing.assert_close(S, torch.tensor(SEED003_S, dtype=A.dtype), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        U.abs(), torch.tensor(SEED003_ABS_U, dtype=A.dtype), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        Vh.mT.abs(), torch.tensor(SEED003_ABS_V, dtype=A.dtype), atol=1e-6, rtol=0
    )
    # The toolkit of seed 003, from torch.linalg (see docs/toolkit.md).
    assert int(torch.linalg.matrix_rank(A)) == 3
    assert torchsvd.null_space(A).shape == (3, 0) and torchsvd.orth(A).shape == (5, 3)
    assert abs(float(torch.linalg.matrix_norm(A, ord=2)) - 20.916) < 1e-3
    assert abs(float(torch.linalg.cond(A)) - 20.916 / 4.22807) < 1e-4
    assert abs(float(torch.linalg.matrix_norm(torch.linalg.pinv(A), ord=2)) - 1 / 4.22807) < 1e-6
    # Eckart–Young on the seed's matrix: ‖A − A_1‖₂ = σ_2, ‖A − A_2‖₂ = σ_3.
    for k in (1, 2):
        err = torch.linalg.matrix_norm(A - torchsvd.low_rank(A, k), ord=2)
        assert abs(float(err) - SEED003_S[k]) < 1e-5
