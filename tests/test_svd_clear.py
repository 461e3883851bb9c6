"""Tests of the backward for clear spectra (no near tie, no small value): the gradient of the
general rule, bit for bit, to second order, and the general rule where one matrix is not clear;
where only plain reverse mode can ask for it, torch's own graph, which gives the same gradient
to rounding, and the library's rule with one SVD where the spectrum is not clear."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

import torchsvd
from _helpers import F64, rel, weights
from torchsvd import _svd
from torchsvd.testing import matrix_with_singular_values

F32 = torch.float32
SHAPES = [(40, 8, 8), (6, 7, 4), (6, 4, 7), (3, 1, 5), (3, 5, 1), (5, 1, 1)]

_CLEAR_SPECTRUM = _svd._clear_spectrum
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _losses(m: int, n: int, dtype: torch.dtype) -> dict[str, Loss]:
    k = min(m, n)
    Wp, Wu, Wv = weights((m, n), dtype, 1), weights((m, k), dtype, 2), weights((k, n), dtype, 3)
    return {
        "polar+S": lambda U, S, Vh: ((U @ Vh) * Wp).sum() + S.sum(),
        "U": lambda U, S, Vh: (U * Wu).pow(2).sum(),
        "Vh": lambda U, S, Vh: (Vh * Wv).pow(2).sum(),
        "U,Vh": lambda U, S, Vh: ((U * Wu).sum(-2) * (Vh * Wv).sum(-1)).pow(2).sum(),
    }


class _Spy:
    """Counts the backward calls that take the clear path; ``general`` forces the general rule."""

    def __init__(self, general: bool) -> None:
        self.general, self.clear_calls = general, 0

    def __call__(self, *args: object, **kwargs: object) -> bool:
        if self.general:
            return False
        clear = _CLEAR_SPECTRUM(*args, **kwargs)  # type: ignore[arg-type]
        self.clear_calls += clear
        return clear


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], _Spy]]:
    def install(general: bool) -> _Spy:
        s = _Spy(general)
        monkeypatch.setattr(_svd, "_clear_spectrum", s)
        # These tests are of the library's own backward: keep torch's graph out of them.
        monkeypatch.setattr(_svd, "_native_candidate", lambda *args: False)
        return s

    yield install


def _grad(A: torch.Tensor, loss: Loss, create_graph: bool = False) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss(*torchsvd.svd(A)), A, create_graph=create_graph)
    return g


def _random(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=F64).to(dtype).requires_grad_()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_clear_batch_gives_the_general_gradient_bit_for_bit(
    spy: Callable[[bool], _Spy], shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    A = _random(shape, dtype)
    for name, loss in _losses(shape[-2], shape[-1], dtype).items():
        fast = spy(False)
        ours = _grad(A, loss)
        assert fast.clear_calls == 1, name
        spy(True)
        assert torch.equal(ours, _grad(A, loss)), name


@pytest.mark.parametrize("shape", [(4, 5, 5), (3, 6, 4), (3, 4, 6)])
def test_clear_path_second_derivatives(spy: Callable[[bool], _Spy], shape: tuple[int, ...]) -> None:
    A = _random(shape, F64, seed=1)
    Z = weights(shape, F64, 7)
    loss = _losses(shape[-2], shape[-1], F64)["polar+S"]

    def f(X: torch.Tensor) -> torch.Tensor:
        return loss(*torchsvd.svd(X))

    fast = spy(False)
    assert torch.autograd.gradgradcheck(f, A)
    (hz,) = torch.autograd.grad((_grad(A, loss, create_graph=True) * Z).sum(), A)
    assert fast.clear_calls > 0
    spy(True)
    (ref,) = torch.autograd.grad((_grad(A, loss, create_graph=True) * Z).sum(), A)
    assert rel(hz, ref) < 1e-12


def _one_not_clear(s: list[float], m: int, n: int) -> torch.Tensor:
    """A batch of clear matrices with singular values ``s`` in the middle one."""
    clear = matrix_with_singular_values(
        torch.linspace(2.0, 1.0, len(s), dtype=F64), m, n, batch=(3,), dtype=F64, seed=3
    )
    odd = matrix_with_singular_values(torch.tensor(s, dtype=F64), m, n, dtype=F64, seed=4)
    return torch.stack([clear[0], odd, clear[2]]).requires_grad_()


# Each spectrum breaks exactly one condition of the clear path (float64: tie_rtol = 1.5e-8).
NOT_CLEAR = {
    "tie": ([1.0, 0.7, 0.7 + 1e-9, 0.2], (5, 4)),
    "zero": ([1.0, 0.7, 0.4, 0.0], (4, 4)),
    "two small values": ([1.0, 0.7, 5e-9, 2e-9], (4, 4)),
    "small value, rectangular": ([1.0, 0.7, 0.4, 5e-9], (6, 4)),
}


@pytest.mark.parametrize("case", sorted(NOT_CLEAR))
def test_batch_with_one_matrix_not_clear_takes_the_general_rule(
    spy: Callable[[bool], _Spy], case: str
) -> None:
    s, (m, n) = NOT_CLEAR[case]
    A = _one_not_clear(s, m, n)
    U, S, Vh = torch.linalg.svd(A.detach(), full_matrices=False)
    args = (U, S, U, Vh.mH, _svd.default_rtol(F64), _svd.rank_rtol(m, n, F64), m != n)
    assert not _svd._clear_spectrum(*args)
    assert _svd._clear_spectrum(U[::2], S[::2], U[::2], None, *args[4:])
    # The projector onto the leading two singular vectors: invariant inside the small pair,
    # whose numerator the general rule quiets; dividing its rounding by a small sum would not.
    P = weights((m, m), F64, 5)
    loss: Loss = lambda U, S, Vh: ((U[..., :2] @ U[..., :2].mT) * P).sum()  # noqa: E731
    fast = spy(False)
    ours = _grad(A, loss)
    assert fast.clear_calls == 0
    spy(True)
    assert torch.equal(ours, _grad(A, loss))


def test_small_value_of_a_square_matrix_stays_clear() -> None:
    """A single σ_min ≤ tie_rtol·σ_max of a real square matrix settles no mask differently
    (only E_ii, which multiplies an exact zero), so the clear path applies and is exact."""
    A = matrix_with_singular_values(
        torch.tensor([1.0, 0.7, 0.4, 5e-9], dtype=F64), 4, 4, batch=(2,), dtype=F64, seed=6
    )
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    assert _svd._clear_spectrum(
        U, S, U, Vh.mH, _svd.default_rtol(F64), _svd.rank_rtol(4, 4, F64), False
    )


def test_torch_func_grad_and_vmap_agree_with_the_clear_path() -> None:
    A = _random((4, 5, 5), F64, seed=2)
    loss = _losses(5, 5, F64)["polar+S"]
    ours = _grad(A, loss)
    ref = torch.func.grad(lambda X: loss(*torchsvd.svd(X)))(A.detach())
    assert rel(ours, ref) < 1e-13
    per = torch.func.vmap(torch.func.grad(lambda X: loss(*torchsvd.svd(X))))(A.detach())
    single = torch.stack([_grad(a.detach().requires_grad_(), loss) for a in A])
    assert rel(per, single) < 1e-13


def test_complex_input_takes_the_general_rule() -> None:
    A = torch.randn(3, 4, 4, dtype=torch.complex128)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    args = (U, S, U, Vh.mH, _svd.default_rtol(F64), _svd.rank_rtol(4, 4, F64), False)
    assert not _svd._clear_spectrum(*args)


def _general_grad(
    monkeypatch: pytest.MonkeyPatch, A: torch.Tensor, loss: Loss, **options: object
) -> torch.Tensor:
    """The gradient of the library's general rule (no clear path, no torch graph)."""
    with monkeypatch.context() as m:
        m.setattr(_svd, "_clear_values", lambda *args, **kwargs: False)
        (g,) = torch.autograd.grad(loss(*torchsvd.svd(A, **options)), A)  # type: ignore[arg-type]
        return g


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to rounding, relative to ``b`` or, for a zero gradient, absolutely."""
    return float((a - b).norm()) <= 1e-12 * max(float(b.norm()), 1.0)


def _is_native(S: torch.Tensor) -> bool:
    return type(S.grad_fn).__name__ == "LinalgSvdBackward0"


@pytest.mark.parametrize("shape", SHAPES)
def test_clear_reverse_mode_uses_torch_graph_with_the_general_gradient(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...]
) -> None:
    A = _random(shape, F64, seed=5)
    for name, loss in _losses(shape[-2], shape[-1], F64).items():
        U, S, Vh = torchsvd.svd(A)
        assert _is_native(S), name
        (ours,) = torch.autograd.grad(loss(U, S, Vh), A)
        assert _close(ours, _general_grad(monkeypatch, A, loss)), name


def test_torch_graph_full_matrices_square_and_second_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    A = _random((3, 5, 5), F64, seed=6)
    loss = _losses(5, 5, F64)["U,Vh"]
    U, S, Vh = torchsvd.svd(A, full_matrices=True)
    assert _is_native(S)
    (ours,) = torch.autograd.grad(loss(U, S, Vh), A)
    assert _close(ours, _general_grad(monkeypatch, A, loss, full_matrices=True))
    assert torch.autograd.gradcheck(lambda X: loss(*torchsvd.svd(X)), A)
    assert torch.autograd.gradgradcheck(lambda X: loss(*torchsvd.svd(X)), A)


CASES_NOT_NATIVE = {
    "complex": lambda A: torchsvd.svd(A.detach().to(torch.complex128).requires_grad_()),
    "extra columns": lambda A: torchsvd.svd(A[:, :, :3], full_matrices=True),
    "broadening": lambda A: torchsvd.svd(A, broadening=1e-3),
    "no gradient": lambda A: torchsvd.svd(A.detach()),
}


@pytest.mark.parametrize("case", sorted(CASES_NOT_NATIVE))
def test_torch_graph_only_for_real_unbroadened_reduced_reverse_mode(case: str) -> None:
    _, S, _ = CASES_NOT_NATIVE[case](_random((2, 4, 4), F64, seed=7))
    assert not _is_native(S)


def test_forward_mode_and_transforms_keep_the_library_rule() -> None:
    import torch.autograd.forward_ad as fwAD

    A = _random((2, 4, 3), F64, seed=8)
    dA = weights((2, 4, 3), F64, 9)
    loss = _losses(4, 3, F64)["polar+S"]
    with fwAD.dual_level():
        U, S, Vh = torchsvd.svd(fwAD.make_dual(A.detach(), dA))
        assert not _is_native(S)
        tangent = fwAD.unpack_dual(loss(U, S, Vh)).tangent
    (g,) = torch.autograd.grad(loss(*torchsvd.svd(A)), A)
    assert abs(float(tangent) - float((g * dA).sum())) < 1e-12 * float(g.norm() * dA.norm())
    assert rel(torch.func.grad(lambda X: loss(*torchsvd.svd(X)))(A.detach()), g) < 1e-12


def test_spectrum_not_clear_takes_the_library_rule_with_one_svd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a tie (orthogonal matrices: every σ equal) torch's graph would give NaN; the factors
    already computed go to the library's rule, without a second SVD."""
    Q = torchsvd.testing.random_unitary(4, seed=0, dtype=F64).requires_grad_()
    calls = []
    decompose = _svd._decompose

    def counted(*args: object) -> tuple[torch.Tensor, ...]:
        calls.append(1)
        return decompose(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_svd, "_decompose", counted)
    U, S, Vh = torchsvd.svd(Q)
    assert len(calls) == 1 and not _is_native(S)
    (g,) = torch.autograd.grad((U @ Vh * weights((4, 4), F64, 10)).sum(), Q)
    assert torch.isfinite(g).all()
    monkeypatch.setattr(_svd, "_decompose", decompose)
    ref = _general_grad(monkeypatch, Q, lambda U, S, Vh: (U @ Vh * weights((4, 4), F64, 10)).sum())
    assert torch.equal(g, ref)


@pytest.mark.parametrize(
    ("dtype", "scale"), [(F64, 1e-197), (F64, 1e234), (F32, 1e-25), (F32, 1e21)]
)
def test_extreme_scales_keep_the_library_rule(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, scale: float
) -> None:
    """torch's formula divides by σ_j² − σ_i², which underflows or overflows where the exact
    rule's 1/(σ_j − σ_i) does not: such batches must not keep torch's graph (it gave NaN)."""
    s = torch.tensor([1.0, 0.89], dtype=F64) * scale
    A = matrix_with_singular_values(s, 2, 2, dtype=F64, seed=11).to(dtype).requires_grad_()
    loss: Loss = lambda U, S, Vh: (U[..., :1] @ U[..., :1].mT * weights((2, 2), dtype, 12)).sum()  # noqa: E731
    U, S, Vh = torchsvd.svd(A)
    assert not _is_native(S)
    (g,) = torch.autograd.grad(loss(U, S, Vh), A)
    assert bool(torch.isfinite(g).all())
    assert torch.equal(g, _general_grad(monkeypatch, A, loss))


def test_zero_tie_tolerance_keeps_the_library_rule() -> None:
    # tie_rtol = 0 bounds no gap from below, so nothing bounds σ_j² − σ_i² either.
    A = _random((2, 4, 4), F64, seed=13)
    _, S, _ = torchsvd.svd(A, tie_rtol=0.0)
    assert not _is_native(S)
