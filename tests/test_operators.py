"""LinearOperator and the dense / sparse adapters: products, validation, parameter gradients."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.autograd import forward_ad

import torchsvd
from _helpers import C128, F64, inner, projector, rel, weights
from torchsvd import DegenerateGradientWarning, LinearOperator, svds
from torchsvd._operators import (
    _csr32,
    _dense_products,
    _DenseOperator,
    _onednn_products,
    _onednn_works,
    _transposed_csr,
    aslinearoperator,
    row_major,
)
from torchsvd._topk import default_tol
from torchsvd.testing import matrix_with_singular_values, spectrum


def _loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(U.shape[-2], generator=gen, dtype=F64)
    y = torch.randn(Vh.shape[-1], generator=gen, dtype=F64)
    return S.sum() + ((x @ U) ** 2).sum() + ((Vh @ y) ** 2).sum()


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.complex64, torch.float16, torch.int64]
)
@pytest.mark.parametrize(
    "shape", [(3, 2), (1, 2), (2, 2), (5, 257, 2), (1, 9), (8, 300), (9, 300), (4, 7, 33)]
)
def test_row_major_is_a_contiguous_copy(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """The slice-by-slice copy (a side of at most 8) and the plain copy, either direction."""
    gen = torch.Generator().manual_seed(0)
    base = (torch.randn(*shape[:-2], shape[-1], shape[-2], generator=gen) * 100).to(dtype)
    view = base.mT  # a transposed view, what the products hand over
    for X in (view, view.contiguous(), base[..., ::2, :].mT):
        out = row_major(X)
        assert out.is_contiguous() and out.dtype == X.dtype
        assert torch.equal(out, X)
        assert out.data_ptr() != base.data_ptr() or X.is_contiguous()


def test_row_major_passes_gradients() -> None:
    for shape in [(2, 50), (5, 50), (20, 50)]:
        base = torch.randn(*shape, dtype=F64, requires_grad=True)
        weight = torch.randn(shape[1], shape[0], dtype=F64)
        (row_major(base.mT) * weight).sum().backward()
        assert base.grad is not None and torch.equal(base.grad, weight.mT)
        # torch.func's wrapped tensors take the plain copy, which its transforms can follow.
        stacked = torch.stack([base.detach(), 2 * base.detach()])
        out = torch.func.vmap(lambda x: row_major(x.mT))(stacked)
        assert torch.equal(out, stacked.mT)


@pytest.mark.parametrize("view", ["contiguous", "transposed"])
def test_onednn_products_match_float64(view: str) -> None:
    """The oneDNN products of a large float32 A (and of a transposed view), plain and tracked."""
    if not _onednn_works():
        pytest.skip("oneDNN's inner product is not available in this torch")
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(1100, 1000, generator=gen)
    A = base if view == "contiguous" else base.mT
    assert _onednn_products(A, lambda X: X, lambda Y: Y) is not None  # the path under test
    matmat, rmatmat = _dense_products(A)
    X = torch.randn(3, A.shape[1], generator=gen)
    Y = torch.randn(3, A.shape[0], generator=gen)
    want = (A.double() @ X.double().mT, A.double().mT @ Y.double().mT)
    for got, ref in zip((matmat(X.mT), rmatmat(Y.mT)), want, strict=True):
        assert got.dtype == torch.float32 and got.shape == ref.shape
        assert float((got.double() - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    # Tracked blocks take torch's own products, whose gradients autograd knows.
    Xg = X.clone().requires_grad_()
    matmat(Xg.mT).sum().backward()
    assert Xg.grad is not None
    assert torch.allclose(Xg.grad, A.sum(0).expand_as(X), rtol=1e-5, atol=1e-4)


def test_krylov_svds_on_onednn_products_meets_tol() -> None:
    if not _onednn_works():
        pytest.skip("oneDNN's inner product is not available in this torch")
    S_true = spectrum("decaying", 1000, dtype=F64)
    A = matrix_with_singular_values(S_true, 1100, 1000, seed=3).float()
    U, S, Vh = svds(A, 4, method="krylov")
    tol = default_tol(torch.float32)
    A64, U64, V64 = A.double(), U.double(), Vh.double().mT
    residual = (A64.mT @ U64 - V64 * S.double()).norm(dim=0).max() / S[0].double()
    assert float(residual) <= tol
    assert torch.allclose(S.double(), torch.linalg.svdvals(A64)[:4], rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128])
@pytest.mark.parametrize(("m", "n", "nnz"), [(7, 5, 12), (5, 9, 0), (300, 200, 2000), (1, 1, 1)])
def test_transposed_csr_is_a_valid_transpose(m: int, n: int, nnz: int, dtype: torch.dtype) -> None:
    """Both index dtypes; the result passes torch's CSR invariants (sorted, in range)."""
    gen = torch.Generator().manual_seed(0)
    index = torch.stack(
        [torch.randint(0, m, (nnz,), generator=gen), torch.randint(0, n, (nnz,), generator=gen)]
    )
    A = torch.sparse_coo_tensor(index, torch.randn(nnz, generator=gen).to(dtype), (m, n)).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
        for csr in (_csr32(A), A.to_sparse_csr()):
            T = _transposed_csr(csr)
            assert T.shape == (n, m) and T.crow_indices().dtype == csr.crow_indices().dtype
            torch._validate_sparse_csr_tensor_args(
                T.crow_indices(), T.col_indices(), T.values(), T.shape
            )
            assert torch.equal(T.to_dense(), A.to_dense().mT)


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


# --- gradients to the tensors the products capture (traced, no params=) ----------------------


def _dense_grads(
    make: Callable[[], tuple[torch.Tensor, tuple[torch.Tensor, ...]]],
    k: int,
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, ...]:
    """Gradients of ``loss`` of the top-k of the materialised matrix, by the full SVD."""
    M, wrt = make()
    U, S, Vh = torchsvd.svd(M)
    return torch.autograd.grad(loss(U[:, :k], S[:k], Vh[:k]), wrt)


_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "S": lambda U, S, Vh: (S * torch.arange(1.0, S.shape[-1] + 1, dtype=F64)).sum(),
    "U": lambda U, S, Vh: (projector(U) * weights((U.shape[-2],) * 2, F64, 5)).sum(),
    "V": lambda U, S, Vh: (projector(Vh.mH) * weights((Vh.shape[-1],) * 2, F64, 6)).sum(),
}


@pytest.mark.parametrize("loss", sorted(_LOSSES))
@pytest.mark.parametrize(("m", "n"), [(50, 40), (40, 50)])
def test_captured_leaf_and_non_leaf_tensors_get_the_dense_gradients(
    loss: str, m: int, n: int
) -> None:
    # The closure captures a leaf d and a non-leaf W = B + θ C computed outside: both get
    # gradients without params=, W as an input of its own (autograd.grad reaches it).
    B = matrix_with_singular_values(spectrum("decaying", min(m, n)), m, n, seed=7)
    C = weights((m, n), F64, 4) / 10
    theta = torch.tensor(1.5, dtype=F64, requires_grad=True)
    d = torch.linspace(0.5, 1.5, n, dtype=F64, requires_grad=True)

    def make() -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        W = B + theta * C
        return W * d, (theta, d, W)

    W = B + theta * C
    op = LinearOperator(
        (m, n), lambda X: W @ (d[:, None] * X), lambda Y: d[:, None] * (W.mT @ Y), dtype=F64
    )
    U, S, Vh = svds(op, 3, tol=1e-13)
    got = torch.autograd.grad(_LOSSES[loss](U, S, Vh), (theta, d, W))
    want = _dense_grads(make, 3, _LOSSES[loss])
    for g, w in zip(got, want, strict=True):
        assert rel(g, w) <= 1e-8


class _Factored(torch.nn.Module):
    """A = diag(scale) P Q, products as bound methods; ``scale`` is a buffer requiring grad."""

    def __init__(self, m: int, n: int, r: int) -> None:
        super().__init__()
        self.P = torch.nn.Parameter(weights((m, r), F64, 8))
        self.Q = torch.nn.Parameter(weights((r, n), F64, 9))
        self.register_buffer("scale", torch.linspace(1.0, 2.0, m, dtype=F64).requires_grad_())

    def dense(self) -> torch.Tensor:
        return self.scale[:, None] * (self.P @ self.Q)

    def matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self.scale[:, None] * (self.P @ (self.Q @ X))

    def rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return self.Q.mT @ (self.P.mT @ (self.scale[:, None] * Y))


def test_bound_module_methods_and_views_reach_the_module() -> None:
    mod = _Factored(60, 45, 10)
    wrt = (mod.P, mod.Q, mod.scale)
    op = LinearOperator((60, 45), mod.matmat, mod.rmatmat, dtype=F64)
    loss = _LOSSES["U"]
    got = torch.autograd.grad(loss(*svds(op, 3, tol=1e-13)), wrt)
    want = _dense_grads(lambda: (mod.dense(), wrt), 3, loss)
    assert all(rel(g, w) <= 1e-8 for g, w in zip(got, want, strict=True))
    # The adjoint view and PCA's centred view trace the same products.
    got = torch.autograd.grad(svds(op.H, 2, tol=1e-13)[1].sum(), wrt)
    want = torch.autograd.grad(torch.linalg.svdvals(mod.dense())[:2].sum(), wrt)
    assert all(rel(g, w) <= 1e-8 for g, w in zip(got, want, strict=True))
    got = torch.autograd.grad(torchsvd.pca(op, 2, tol=1e-13)[1].sum(), wrt)
    dense = mod.dense()
    want = torch.autograd.grad(torch.linalg.svdvals(dense - dense.mean(0))[:2].sum(), wrt)
    assert all(rel(g, w) <= 1e-8 for g, w in zip(got, want, strict=True))


class _Product(torch.autograd.Function):
    """W @ X with a hand-written backward: autograd sees W only as the Function's input."""

    @staticmethod
    def forward(ctx: Any, W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(W, X)
        return W @ X

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        W, X = ctx.saved_tensors
        return g @ X.mT, W.mT @ g


def test_a_custom_autograd_function_in_the_product() -> None:
    A = matrix_with_singular_values(spectrum("decaying", 20), 30, 20, seed=8)
    W = A.clone().requires_grad_()
    op = LinearOperator(A.shape, lambda X: _Product.apply(W, X), lambda Y: W.mT @ Y, dtype=F64)
    (got,) = torch.autograd.grad(_LOSSES["U"](*svds(op, 2, tol=1e-13)), W)
    want = _dense_grads(lambda: (W, (W,)), 2, _LOSSES["U"])[0]
    assert rel(got, want) <= 1e-8


def test_params_override_the_tracing() -> None:
    A = matrix_with_singular_values(spectrum("decaying", 30), 40, 30, seed=3)
    c = torch.tensor(2.0, dtype=F64, requires_grad=True)
    e = torch.tensor(3.0, dtype=F64, requires_grad=True)
    op = LinearOperator(
        A.shape, lambda X: c * e * (A @ X), lambda Y: c * e * (A.mT @ Y), params=(c,)
    )
    S = svds(op, 2, tol=1e-13)[1]
    (gc,) = torch.autograd.grad(S.sum(), c)
    torch.testing.assert_close(gc, e.detach() * torch.linalg.svdvals(A)[:2].sum())
    with pytest.raises(RuntimeError, match=r"does not require grad|not have been used"):
        torch.autograd.grad(svds(op, 2, tol=1e-13)[1].sum(), e)
    none = LinearOperator(A.shape, op.matmat, op.rmatmat, params=(), dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not svds(none, 2)[1].requires_grad
    # Without grad mode nothing is traced and nothing is differentiable.
    traced = LinearOperator(A.shape, op.matmat, op.rmatmat, dtype=F64)
    with torch.no_grad():
        assert not svds(traced, 2)[1].requires_grad
    # The traced probe leaves the result as it was, bit for bit.
    S_traced = svds(traced, 2)[1]
    assert S_traced.requires_grad and torch.equal(S_traced, S)


def test_a_parameter_and_one_computed_from_it_get_partial_derivatives() -> None:
    # W = θ A and θ both enter the product (explicitly listed or traced): each gets its partial
    # derivative and autograd adds the path through W once. The inner differentiation used to
    # return θ's total derivative (counted twice), and fired W's retain_grad and hooks.
    A = matrix_with_singular_values(spectrum("decaying", 30), 40, 30, seed=4)
    want = 2 * 1.5 * torch.linalg.svdvals(A)[:2].sum()  # d/dθ Σ σ_i(θ² A) = 2θ Σ σ_i(A)
    for params in (None, "both"):
        theta = torch.tensor(1.5, dtype=F64, requires_grad=True)
        W = theta * A
        W.retain_grad()
        calls: list[torch.Tensor] = []
        W.register_hook(calls.append)
        op = LinearOperator(
            A.shape,
            lambda X, W=W, theta=theta: theta * (W @ X),
            lambda Y, W=W, theta=theta: theta * (W.mT @ Y),
            dtype=F64,
            params=(W, theta) if params else None,
        )
        S = svds(op, 2, tol=1e-13)[1]
        S.sum().backward()
        assert theta.grad is not None and W.grad is not None
        torch.testing.assert_close(theta.grad, want, rtol=1e-10, atol=0)
        torch.testing.assert_close(
            W.grad, 1.5 * (svds(A, 2)[0] @ svds(A, 2)[2]), rtol=1e-9, atol=1e-12
        )
        assert len(calls) == 1


@pytest.mark.parametrize(
    "product",
    [
        lambda c, A, X: c.detach() * (A @ X),
        lambda c, A, X: c.item() * (A @ X),
        lambda c, A, X: _no_grad(c) * (A @ X),
    ],
    ids=["detach", "item", "no_grad"],
)
def test_an_untraceable_capture_warns(
    product: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    A = matrix_with_singular_values(spectrum("decaying", 20), 30, 20, seed=5)
    c = torch.tensor(2.0, dtype=F64, requires_grad=True)
    op = LinearOperator(
        A.shape, lambda X: product(c, A, X), lambda Y: c.detach() * (A.mT @ Y), dtype=F64
    )
    with pytest.warns(DegenerateGradientWarning, match=r"shape \(\).*params="):
        svds(op, 2)
    # Metadata of a tensor requiring grad is no use of its values: no warning.
    meta = LinearOperator(
        A.shape, lambda X: (A @ X).reshape((*c.new_zeros(()).shape, 30, -1)), abs, dtype=F64
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meta._resolved()


def _no_grad(c: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return c * 1


def test_traced_operators_under_torch_func() -> None:
    A = matrix_with_singular_values(spectrum("decaying", 30), 40, 30, seed=6)

    def sigma(c: torch.Tensor) -> torch.Tensor:
        op = LinearOperator(A.shape, lambda X: c * (A @ X), lambda Y: c * (A.mT @ Y), dtype=F64)
        return svds(op, 2, tol=1e-13)[1].sum()

    one = torch.ones((), dtype=F64)
    torch.testing.assert_close(torch.func.grad(sigma)(one), torch.linalg.svdvals(A)[:2].sum())
    with pytest.raises(NotImplementedError, match="dense tensors only"):
        torch.func.jvp(sigma, (one,), (one,))
    with pytest.raises(NotImplementedError, match="dense tensors only"):
        torch.func.vmap(sigma)(torch.ones(2, dtype=F64))
    with forward_ad.dual_level():
        c = forward_ad.make_dual(one, one)
        op = LinearOperator(A.shape, lambda X: c * (A @ X), lambda Y: c * (A.mT @ Y), dtype=F64)
        with pytest.raises(NotImplementedError, match="dense tensors only"):
            svds(op, 2)


# --- LinearOperator.from_function ----------------------------------------------------------


def _columns(f: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear map of batches, built column by column: column j is f(e_j)."""
    n = math.prod(in_shape)
    cols = [f(torch.eye(n, dtype=F64)[j].reshape(1, *in_shape)).flatten() for j in range(n)]
    return torch.stack(cols, dim=-1)


_CONVS = {
    "conv1d": (lambda: torch.nn.Conv1d(3, 4, 5, padding=2, bias=False), (3, 16)),
    "conv2d": (lambda: torch.nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False), (2, 7, 6)),
    "conv2d_groups_dilation_reflect": (
        lambda: torch.nn.Conv2d(
            4, 2, 3, dilation=2, groups=2, padding=2, padding_mode="reflect", bias=False
        ),
        (4, 5, 5),
    ),
}


@pytest.mark.parametrize("name", sorted(_CONVS))
def test_from_function_convolutions_equal_their_dense_matrix(name: str) -> None:
    make, in_shape = _CONVS[name]
    torch.manual_seed(0)
    conv = make().double()
    op = LinearOperator.from_function(conv, in_shape)
    with torch.no_grad():
        D = _columns(conv, in_shape)
    assert op.shape == D.shape and op.dtype == F64
    X = weights((D.shape[1], 3), F64, 1)
    Y = weights((D.shape[0], 3), F64, 2)
    with torch.no_grad():
        torch.testing.assert_close(op.matmat(X), D @ X, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(op.rmatmat(Y), D.mT @ Y, rtol=1e-12, atol=1e-12)
        # ⟨A x, y⟩ = ⟨x, Aᴴ y⟩
        torch.testing.assert_close(inner(op.matmat(X), Y), inner(X, op.rmatmat(Y)))
    for loss in ("S", "U"):
        got = torch.autograd.grad(_LOSSES[loss](*svds(op, 3, tol=1e-13)), conv.weight)[0]
        want = _dense_grads(lambda: (_columns(conv, in_shape), (conv.weight,)), 3, _LOSSES[loss])
        assert rel(got, want[0]) <= 1e-8


def test_from_function_complex_and_out_shape() -> None:
    M = weights((6, 2, 5), C128, 3)
    op = LinearOperator.from_function(
        lambda x: torch.einsum("oij,pij->po", M, x), (2, 5), out_shape=6, dtype=C128
    )
    D = M.reshape(6, 10)
    Y = weights((6, 2), C128, 4)
    torch.testing.assert_close(op.rmatmat(Y), D.mH @ Y)
    torch.testing.assert_close(svds(op, 2)[1], torch.linalg.svdvals(D)[:2])
    with pytest.raises(ValueError, match="complex-linear"):
        LinearOperator.from_function(lambda x: x.conj() @ D.mT, 10, dtype=C128)
    with pytest.raises(ValueError, match=r"not to out_shape \(7,\)"):
        LinearOperator.from_function(lambda x: x @ D.mT, 10, out_shape=(7,), dtype=C128)


def test_from_function_refuses_what_is_not_linear() -> None:
    with pytest.raises(ValueError, match=r"not linear: ‖f\(a x"):
        LinearOperator.from_function(torch.nn.Tanh(), (3, 4), dtype=F64)
    layer = torch.nn.Conv1d(2, 3, 3, dtype=F64)  # a bias: affine
    with pytest.raises(
        ValueError, match=r"f\(0\) ≠ 0 .*functional_call\(layer, \{\"bias\": None\}"
    ):
        LinearOperator.from_function(layer, (2, 8))
    # The documented fix: the layer without its bias; gradients reach the weight only.
    op = LinearOperator.from_function(
        lambda x: torch.func.functional_call(layer, {"bias": None}, (x,)), (2, 8), dtype=F64
    )
    spectral = torchsvd.spectral_norm(op, tol=1e-13)
    spectral.backward()
    dense = _columns(lambda x: torch.nn.functional.conv1d(x, layer.weight), (2, 8))
    (want,) = torch.autograd.grad(torch.linalg.matrix_norm(dense, 2), layer.weight)
    assert layer.weight.grad is not None and layer.bias.grad is None
    assert rel(layer.weight.grad, want) <= 1e-8
    with pytest.raises(ValueError, match="not its adjoint"):
        LinearOperator.from_function(lambda x: x.detach() * 2, 4, dtype=F64)
    with pytest.raises(ValueError, match=r"returned \(3, 4\)"):
        LinearOperator.from_function(lambda x: x[:3], 4, dtype=F64)
    with pytest.raises(ValueError, match="dtype"):
        LinearOperator.from_function(lambda x: x.float(), 4, dtype=F64)
    with pytest.raises(ValueError, match="in_shape"):
        LinearOperator.from_function(abs, (0, 3))
    with pytest.raises(TypeError, match="callable"):
        LinearOperator.from_function("f", 3)  # type: ignore[arg-type]


def test_from_function_under_inference_mode_and_torch_func() -> None:
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False, dtype=F64)
    op = LinearOperator.from_function(conv, (2, 6, 6))
    sigma = torchsvd.spectral_norm(op, tol=1e-13)
    sigma.backward()
    with torch.inference_mode():  # the adjoint by torch.func.vjp needs no autograd graph
        torch.testing.assert_close(torchsvd.spectral_norm(op, tol=1e-13), sigma.detach())

    def norm_of(weight: torch.Tensor) -> torch.Tensor:
        def f(x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(conv, {"weight": weight}, (x,))

        return torchsvd.spectral_norm(LinearOperator.from_function(f, (2, 6, 6), dtype=F64))

    assert conv.weight.grad is not None
    got = torch.func.grad(norm_of)(conv.weight.detach())
    torch.testing.assert_close(got, conv.weight.grad, rtol=1e-8, atol=1e-12)
    meta = LinearOperator((5, 4), lambda X: X[:1].expand(5, -1), abs, device="meta")
    assert svds(meta, 2)[1].shape == (2,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.complex128])
def test_dense_magnitude_is_about_the_largest_entry(dtype: torch.dtype) -> None:
    # Only its order of magnitude scales extreme matrices; the ∞-norm it replaces was 10× slower.
    A = torch.randn(3, 40, 30, generator=torch.Generator().manual_seed(2)).to(dtype) * 1e30
    for M in (A, A.mT, A.mH):
        size = _DenseOperator(M)._magnitude()
        largest = M.abs().amax(dim=(-2, -1))
        assert size.shape == (3,) and size.dtype == dtype.to_real()
        assert bool((size <= largest).all()) and bool((size >= largest / 2**0.5).all())
    B = A.clone()
    B[1, 4, 5] = float("nan")
    assert _DenseOperator(B)._magnitude()[1].isnan()
    B[1, 4, 5] = float("-inf")
    assert _DenseOperator(B)._magnitude()[1] == float("inf")
