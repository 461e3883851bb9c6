"""The spectrum-controlled generators are themselves tested: the tests of everything else rely
on them producing exactly the ties, zeros and scales they promise."""

from __future__ import annotations

import pytest
import torch

from torchsvd.testing import (
    matrix_with_singular_values,
    numerical_gradient,
    random_unitary,
    spectrum,
)

KINDS = ["decaying", "geometric", "ties", "identity", "zeros", "cluster", "dynamic", "gaussian"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.complex128])
def test_random_unitary_is_orthonormal(dtype: torch.dtype) -> None:
    Q = random_unitary(6, 4, batch=(3,), dtype=dtype, seed=1)
    assert Q.shape == (3, 6, 4) and Q.dtype == dtype
    eye = torch.eye(4, dtype=dtype).expand(3, 4, 4)
    tol = 1e-5 if dtype in (torch.float32, torch.complex64) else 1e-12
    torch.testing.assert_close(Q.mH @ Q, eye, rtol=0, atol=tol)
    assert Q.is_complex() == dtype.is_complex


def test_random_unitary_is_reproducible_and_seed_dependent() -> None:
    torch.testing.assert_close(random_unitary(5, seed=3), random_unitary(5, seed=3))
    assert not torch.allclose(random_unitary(5, seed=3), random_unitary(5, seed=4))
    with pytest.raises(ValueError, match="p <= n"):
        random_unitary(3, 4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_random_unitary_columns_are_those_of_the_square_one(dtype: torch.dtype) -> None:
    # p columns are the first p of the n×n draw (only their QR is computed), so a seed means
    # the same columns whatever p.
    full = random_unitary(40, batch=(2,), dtype=dtype, seed=7)
    for p in (0, 1, 9, 40):
        Q = random_unitary(40, p, batch=(2,), dtype=dtype, seed=7)
        torch.testing.assert_close(Q, full[..., :p], rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(7, 5), (5, 7), (6, 6)])
def test_matrix_has_the_requested_spectrum(kind: str, shape: tuple[int, int]) -> None:
    m, n = shape
    s = spectrum(kind, min(m, n), seed=2)
    assert torch.all(s[:-1] >= s[1:]), "spectra are descending"
    A = matrix_with_singular_values(s, m, n, seed=5)
    torch.testing.assert_close(torch.linalg.svdvals(A), s, rtol=0, atol=1e-13)


def test_spectrum_shapes_ties_zeros_and_range() -> None:
    ties = spectrum("ties", 5)
    assert ties.tolist() == [5.0, 3.0, 3.0, 1.0, 1.0]
    zeros = spectrum("zeros", 6)
    assert (zeros == 0).sum() == 3 and (zeros > 0).sum() == 3
    dyn = spectrum("dynamic", 4, scale=1e30)
    assert dyn[0] == 1e30 and torch.isclose(dyn[-1], torch.tensor(1e18, dtype=torch.float64))
    assert spectrum("identity", 3).tolist() == [1.0, 1.0, 1.0]
    cluster = spectrum("cluster", 6)
    assert 0 < float(cluster[0] - cluster[1]) < 1e-7
    assert spectrum("decaying", 3, dtype=torch.complex64).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown spectrum kind"):
        spectrum("flat", 3)


def test_complex_batched_and_broadcast_spectra() -> None:
    s = torch.tensor([[3.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    A = matrix_with_singular_values(s, 4, 3, dtype=torch.complex128, seed=9)
    assert A.shape == (2, 4, 3) and A.is_complex()
    torch.testing.assert_close(torch.linalg.svdvals(A)[..., :2], s)
    assert torch.linalg.svdvals(A)[..., 2].abs().max() < 1e-13
    B = matrix_with_singular_values([1.0], 2, 2, batch=(5,), seed=0)
    assert B.shape == (5, 2, 2)


def test_matrix_rejects_bad_spectra() -> None:
    with pytest.raises(ValueError, match="at most 2"):
        matrix_with_singular_values([3.0, 2.0, 1.0], 2, 4)
    with pytest.raises(ValueError, match="non-negative"):
        matrix_with_singular_values([1.0, -1.0], 2, 2)
    with pytest.raises(TypeError, match="floating or complex"):
        matrix_with_singular_values([1.0], 2, 2, dtype=torch.int32)


def test_numerical_gradient_real_and_complex() -> None:
    A = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(numerical_gradient(lambda X: (X**3).sum(), A), 3 * A**2)
    Z = torch.complex(A, A.flip(0))
    torch.testing.assert_close(numerical_gradient(lambda X: (X.abs() ** 2).sum(), Z), 2 * Z)
