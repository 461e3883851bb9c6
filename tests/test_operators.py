"""LinearOperator and the dense / sparse adapters: products, validation, parameter gradients."""

from __future__ import annotations

import pytest
import torch

import torchsvd
from _helpers import F64, rel
from torchsvd import LinearOperator, svds
from torchsvd._operators import aslinearoperator
from torchsvd.testing import matrix_with_singular_values, spectrum


def _loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(U.shape[-2], generator=gen, dtype=F64)
    y = torch.randn(Vh.shape[-1], generator=gen, dtype=F64)
    return S.sum() + ((x @ U) ** 2).sum() + ((Vh @ y) ** 2).sum()


@pytest.mark.parametrize(("m", "n", "r"), [(160, 120, 30), (120, 160, 30), (30, 20, 8)])
def test_parameter_gradients_match_dense(m: int, n: int, r: int) -> None:
    # A(θ) = diag-like + W1 W2: never formed by svds; gradients reach W1, W2 and d.
    gen = torch.Generator().manual_seed(1)
    W1 = torch.randn(m, r, generator=gen, dtype=F64, requires_grad=True)
    W2 = torch.randn(r, n, generator=gen, dtype=F64, requires_grad=True)
    d = torch.linspace(1.0, 2.0, min(m, n), dtype=F64, requires_grad=True)

    def dense(W1: torch.Tensor, W2: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        D = torch.zeros(m, n, dtype=F64)
        D[range(min(m, n)), range(min(m, n))] = 1.0
        return W1 @ W2 + D * torch.nn.functional.pad(d, (0, n - min(m, n)))

    def matmat(X: torch.Tensor) -> torch.Tensor:
        top = d.unsqueeze(-1) * X[: min(m, n)]
        return W1 @ (W2 @ X) + torch.nn.functional.pad(top, (0, 0, 0, m - min(m, n)))

    def rmatmat(Y: torch.Tensor) -> torch.Tensor:
        top = d.unsqueeze(-1) * Y[: min(m, n)]
        return W2.mT @ (W1.mT @ Y) + torch.nn.functional.pad(top, (0, 0, 0, n - min(m, n)))

    op = LinearOperator((m, n), matmat, rmatmat, params=(W1, W2, d))
    assert op.dtype == F64 and op.batch_shape == ()
    _loss(*svds(op, 3, tol=1e-13)).backward()
    got = [p.grad.clone() for p in (W1, W2, d)]  # type: ignore[union-attr]
    for p in (W1, W2, d):
        p.grad = None
    U, S, Vh = torchsvd.svd(dense(W1, W2, d))
    _loss(U[:, :3], S[:3], Vh[:3]).backward()
    for g, p in zip(got, (W1, W2, d), strict=True):
        assert p.grad is not None and rel(g, p.grad) <= 1e-8


def test_batched_operator_and_non_leaf_parameter() -> None:
    A = matrix_with_singular_values(spectrum("decaying", 90), 100, 90, batch=(2,), seed=2)
    theta = torch.ones((), dtype=F64, requires_grad=True)
    W = 2 * theta * A  # a non-leaf parameter
    op = LinearOperator(A.shape, lambda X: W @ X, lambda Y: W.mT @ Y, params=(W,))
    S = svds(op, 2, tol=1e-13)[1]
    S.sum().backward()
    # d/dθ Σ σ_i(2θA) = 2 Σ σ_i(A)
    want = 2 * torch.linalg.svdvals(A)[..., :2].sum()
    assert theta.grad is not None
    torch.testing.assert_close(theta.grad, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize(("m", "n"), [(300, 200), (200, 300)])
def test_sparse_gradient_has_the_pattern(layout: torch.layout, m: int, n: int) -> None:
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(m, n, generator=gen) < 0.05
    D = torch.randn(m, n, generator=gen, dtype=F64) * mask
    A = (D.to_sparse() if layout == torch.sparse_coo else D.to_sparse_csr()).requires_grad_()
    U, S, Vh = svds(A, 3, tol=1e-13)
    _loss(U, S, Vh).backward()
    assert A.grad is not None and A.grad.layout == layout
    Ad = D.clone().requires_grad_()
    U2, S2, Vh2 = torch.linalg.svd(Ad, full_matrices=False)
    _loss(U2[:, :3], S2[:3], Vh2[:3]).backward()
    assert Ad.grad is not None
    torch.testing.assert_close(S.detach(), S2[:3].detach(), atol=1e-10, rtol=0)
    assert rel(A.grad.to_dense(), Ad.grad * mask) <= 1e-8


def test_adapters() -> None:
    A = torch.randn(5, 4, dtype=F64)
    op = aslinearoperator(A)
    assert aslinearoperator(op) is op
    X = torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(op.matmat(X), A @ X)
    torch.testing.assert_close(op.rmatmat(torch.randn(5, 2, dtype=F64)).shape, torch.Size([4, 2]))
    assert aslinearoperator(A.half()).dtype == torch.float32
    assert "shape=(5, 4)" in repr(op)
    with pytest.raises(ValueError, match="2-D"):
        aslinearoperator(torch.randn(2, 5, 4).to_sparse())
    with pytest.raises(TypeError, match=r"torch.Tensor"):
        aslinearoperator("A")
    with pytest.raises(TypeError, match="float32 or float64"):
        aslinearoperator(torch.ones(5, 4, dtype=torch.int64).to_sparse())
    with pytest.raises(TypeError, match="real"):
        aslinearoperator(torch.ones(5, 4, dtype=torch.complex128).to_sparse())
    assert aslinearoperator(torch.ones(5, 4, dtype=torch.complex64)).dtype == torch.complex64


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((5,), None, None), {}, ValueError, "shape"),
        (((5, -1), None, None), {}, ValueError, "shape"),
        (((5, 4), None, None), {}, TypeError, "callables"),
        (((5, 4), abs, abs), {"dtype": torch.float16}, TypeError, "complex64 or complex128"),
        (((5, 4), abs, abs), {"dtype": torch.int32}, TypeError, "complex64 or complex128"),
        (((5, 4), abs, abs), {"params": (1.0,)}, TypeError, "tensors"),
    ],
)
def test_bad_operators(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        LinearOperator(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("m", "n"), [(200, 150), (8, 6)])
def test_products_are_checked(m: int, n: int) -> None:
    A = torch.randn(m, n, dtype=F64)
    wrong_shape = LinearOperator((m, n), lambda X: A[:-1] @ X, lambda Y: A.mT @ Y, dtype=F64)
    with pytest.raises(ValueError, match=r"matmat .* returned"):
        svds(wrong_shape, 1)
    wrong_r = LinearOperator((m, n), lambda X: A @ X, lambda Y: A.mT[:-1] @ Y, dtype=F64)
    with pytest.raises(ValueError, match=r"rmatmat .* returned"):
        svds(wrong_r, 1)
    wrong_dtype = LinearOperator((m, n), lambda X: (A @ X).float(), lambda Y: A.mT @ Y, dtype=F64)
    with pytest.raises(ValueError, match="dtype"):
        svds(wrong_dtype, 1)
    B = torch.randn(m, n, dtype=F64)
    not_adjoint = LinearOperator((m, n), lambda X: A @ X, lambda Y: B.mT @ Y, dtype=F64)
    with pytest.raises(ValueError, match="adjoint"):
        svds(not_adjoint, 1)
    nan = LinearOperator((m, n), lambda X: A @ X * float("nan"), lambda Y: A.mT @ Y, dtype=F64)
    with pytest.raises(ValueError, match=r"non-finite|adjoint"):
        svds(nan, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128])
@pytest.mark.parametrize(("m", "n"), [(601, 299), (300, 601)])
def test_dense_products_cut_into_thread_blocks(dtype: torch.dtype, m: int, n: int) -> None:
    # Three threads: A is cut into three row (column) blocks, with rows (columns) left over.
    from torchsvd._operators import _dense_products

    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        gen = torch.Generator().manual_seed(0)
        A = torch.randn(m, n, generator=gen, dtype=dtype)
        matmat, rmatmat = _dense_products(A)
    finally:
        torch.set_num_threads(threads)
    assert matmat.__name__ == "matmat"  # the cut products, not the plain lambdas
    X = torch.randn(5, n, generator=gen, dtype=dtype).mT  # blocks arrive as transposed rows
    Y = torch.randn(5, m, generator=gen, dtype=dtype).mT
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(matmat(X), A @ X, atol=tol, rtol=tol)
    torch.testing.assert_close(rmatmat(Y), A.mH @ Y, atol=tol, rtol=tol)
