"""procrustes: scipy's orthogonal_procrustes, weights, rotations, gradients, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import torchsvd
from _helpers import C128, F32, F64, weights
from torchsvd.testing import numerical_gradient, random_unitary


def _clouds(batch: tuple[int, ...], N: int, n: int, seed: int, noise: float = 1e-2):
    A = weights((*batch, N, n), F64, seed)
    Q = random_unitary(n, batch=batch, seed=seed + 1)
    Q[..., -1] *= torch.linalg.det(Q).unsqueeze(-1)  # a rotation
    B = A @ Q + noise * weights((*batch, N, n), F64, seed + 2)
    return A, B, Q


@pytest.mark.parametrize(("N", "n"), [(10, 3), (5, 2), (4, 4), (1, 1), (3, 3)])
def test_matches_scipy(N: int, n: int) -> None:
    A, B, _ = _clouds((), N, n, seed=0, noise=0.5)
    R_ref, scale_ref = scipy.linalg.orthogonal_procrustes(A.numpy(), B.numpy())
    R = torchsvd.procrustes(A, B)
    np.testing.assert_allclose(R.numpy(), R_ref, atol=1e-12)
    M = A.mT @ B
    np.testing.assert_allclose(float((R * M).sum()), scale_ref, rtol=1e-12)


def test_complex_matches_scipy() -> None:
    A = weights((8, 3), C128, seed=3)
    B = weights((8, 3), C128, seed=4)
    R_ref, _ = scipy.linalg.orthogonal_procrustes(A.numpy(), B.numpy())
    np.testing.assert_allclose(torchsvd.procrustes(A, B).numpy(), R_ref, atol=1e-12)


def test_batched_and_broadcast_weights() -> None:
    A, B, _ = _clouds((4, 2), 20, 3, seed=5)
    w = weights((20,), F64, seed=6).abs()
    R = torchsvd.procrustes(A, B, weights=w)
    assert R.shape == (4, 2, 3, 3)
    for i in range(4):
        for j in range(2):
            sw = w.sqrt().unsqueeze(-1).numpy()
            R_ref, _ = scipy.linalg.orthogonal_procrustes(
                sw * A[i, j].numpy(), sw * B[i, j].numpy()
            )
            np.testing.assert_allclose(R[i, j].numpy(), R_ref, atol=1e-12)


def test_weights_select_points() -> None:
    """Zero weights drop points: the fit equals the fit of the others alone."""
    A, B, _ = _clouds((), 12, 3, seed=7, noise=0.3)
    w = torch.ones(12, dtype=F64)
    w[8:] = 0
    B_bad = B.clone()
    B_bad[8:] = 100 * weights((4, 3), F64, seed=8)
    torch.testing.assert_close(
        torchsvd.procrustes(A, B_bad, weights=w), torchsvd.procrustes(A[:8], B[:8])
    )


def test_recovers_the_rotation_float32() -> None:
    A, B, Q = _clouds((16,), 50, 3, seed=9, noise=0.0)
    R = torchsvd.procrustes(A.float(), B.float())
    assert R.dtype == F32
    torch.testing.assert_close(R, Q.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("with_weights", [False, True])
def test_gradients_match_central_differences(with_weights: bool) -> None:
    A, B, _ = _clouds((2,), 6, 3, seed=10, noise=0.3)
    w = weights((2, 6), F64, seed=11).abs() + 0.1
    W = weights((2, 3, 3), F64, seed=12)

    def loss(A: torch.Tensor, B: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        R = torchsvd.procrustes(A, B, weights=w if with_weights else None)
        return (R * W).sum()

    args = [t.clone().requires_grad_() for t in (A, B, w)]
    grads = torch.autograd.grad(loss(*args), args, allow_unused=True)
    refs = [
        numerical_gradient(lambda X: loss(X, B, w), A),
        numerical_gradient(lambda X: loss(A, X, w), B),
        numerical_gradient(lambda X: loss(A, B, X), w),
    ]
    for g, ref in zip(grads[: 3 if with_weights else 2], refs, strict=False):
        torch.testing.assert_close(g, ref, atol=1e-8, rtol=1e-6)


def test_gradient_at_exact_fit_of_a_symmetric_cloud() -> None:
    """A cube's corners: M = Qᵀ·const has all singular values tied (torch.linalg.svd: NaN)."""
    corners = torch.tensor(
        [[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)], dtype=F64
    )
    Q = random_unitary(3, seed=13)
    W = weights((3, 3), F64, seed=14)

    def loss(B: torch.Tensor) -> torch.Tensor:
        return (torchsvd.procrustes(corners, B) * W).sum()

    B = (corners @ Q).requires_grad_()
    (g,) = torch.autograd.grad(loss(B), B)
    torch.testing.assert_close(g, numerical_gradient(loss, B), atol=1e-8, rtol=1e-6)


def test_special_gives_the_best_rotation_of_a_mirrored_cloud() -> None:
    A, B, _ = _clouds((8,), 30, 3, seed=15, noise=0.1)
    B = B * torch.tensor([1.0, 1.0, -1.0], dtype=F64)  # mirrored: the best orthogonal R reflects
    R = torchsvd.procrustes(A, B, special=True)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(8, dtype=F64))
    assert bool((torch.linalg.det(torchsvd.procrustes(A, B)) < 0).all())
    # Reference: Kabsch's sign correction on scipy's SVD.
    for i in range(8):
        U, _, Vh = scipy.linalg.svd(A[i].numpy().T @ B[i].numpy())
        d = np.sign(np.linalg.det(U @ Vh))
        np.testing.assert_allclose(R[i].numpy(), U @ np.diag([1, 1, d]) @ Vh, atol=1e-12)


def test_special_fits_a_planar_cloud() -> None:
    """Coplanar points: M has rank 2 and the rotation is still unique."""
    A = weights((20, 3), F64, seed=16)
    A[:, 2] = 0
    Q = random_unitary(3, seed=17)
    Q[:, -1] *= torch.linalg.det(Q)  # a rotation
    R = torchsvd.procrustes(A, A @ Q, special=True)
    torch.testing.assert_close(R, Q, atol=1e-12, rtol=0)


def test_special_gradient_matches_central_differences() -> None:
    A, B, _ = _clouds((), 7, 3, seed=18, noise=0.3)
    W = weights((3, 3), F64, seed=19)

    def loss(B: torch.Tensor) -> torch.Tensor:
        return (torchsvd.procrustes(A, B, special=True) * W).sum()

    Bg = B.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(Bg), Bg)
    torch.testing.assert_close(g, numerical_gradient(loss, B), atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize(
    ("A", "B", "kwargs", "error", "match"),
    [
        (torch.ones(4, 3), torch.ones(4, 2), {}, ValueError, r"same N points.*\(4, 3\).*\(4, 2\)"),
        (torch.ones(4, 3), torch.ones(5, 3), {}, ValueError, "same N points"),
        (torch.ones(0, 3), torch.ones(0, 3), {}, ValueError, "N >= 1"),
        (torch.ones(2, 4, 3), torch.ones(3, 4, 3), {}, ValueError, "do not broadcast"),
        (torch.ones(4, 3), torch.ones(4, 3, dtype=F64), {}, TypeError, "same dtype"),
        (torch.ones(4, 3, dtype=torch.int64), torch.ones(4, 3), {}, TypeError, "floating"),
        (torch.ones(3), torch.ones(3), {}, ValueError, "at least 2 dimensions"),
        (torch.ones(4, 3), torch.full((4, 3), float("nan")), {}, ValueError, "NaN"),
        (torch.ones(4, 3), torch.ones(4, 3), {"weights": -torch.ones(4)}, ValueError, ">= 0"),
        (
            torch.ones(4, 3),
            torch.ones(4, 3),
            {"weights": torch.tensor([1.0, float("inf"), 1.0, 1.0])},
            ValueError,
            "finite",
        ),
        (torch.ones(4, 3), torch.ones(4, 3), {"weights": torch.ones(3)}, ValueError, "N = 4"),
        (torch.ones(4, 3), torch.ones(4, 3), {"weights": [1.0] * 4}, TypeError, "torch.Tensor"),
        (
            torch.ones(4, 3),
            torch.ones(4, 3),
            {"weights": torch.ones(4, dtype=torch.int64)},
            TypeError,
            "real floating",
        ),
        (
            torch.ones(2, 4, 3),
            torch.ones(2, 4, 3),
            {"weights": torch.ones(3, 4)},
            ValueError,
            "does not broadcast",
        ),
        (torch.ones(4, 3), torch.ones(4, 3), {"special": 1}, TypeError, "special must be a bool"),
    ],
)
def test_bad_input(
    A: torch.Tensor, B: torch.Tensor, kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        torchsvd.procrustes(A, B, **kwargs)  # type: ignore[arg-type]
