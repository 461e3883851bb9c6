"""torchsvd.nn.spectral_norm against PyTorch's parametrization and the exact derivative."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

import torchsvd
from _helpers import C128, F64
from test_conv import CASES as CONV_CASES
from test_conv import dense_matrix
from test_conv import make as make_conv
from torchsvd._conv import conv_geometry
from torchsvd.nn import _conv_op_args
from torchsvd.testing import matrix_with_singular_values, spectrum


def _linear(m: int, n: int, seed: int = 0) -> nn.Linear:
    layer = nn.Linear(n, m).double()
    with torch.no_grad():
        s = 3.0 * spectrum("decaying", min(m, n))
        layer.weight.copy_(matrix_with_singular_values(s, m, n, seed=seed))
    return layer


def test_matches_converged_pytorch_layer() -> None:
    ours = torchsvd.nn.spectral_norm(_linear(30, 20))
    ref = torch_spectral_norm(_linear(30, 20), n_power_iterations=300)
    ref(torch.zeros(1, 20, dtype=F64))  # one training-mode pass: 300 more power iterations
    torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(
        torch.linalg.matrix_norm(ours.weight, 2), torch.tensor(1.0, dtype=F64)
    )


def test_gradient_is_exact() -> None:
    layer = torchsvd.nn.spectral_norm(_linear(12, 9, seed=1))
    W0 = layer.parametrizations.weight.original.detach().clone()
    G = torch.randn(12, 9, dtype=F64, generator=torch.Generator().manual_seed(2))
    (layer.weight * G).sum().backward()
    W = W0.clone().requires_grad_()
    ((W / torch.linalg.matrix_norm(W, 2)) * G).sum().backward()
    original = layer.parametrizations.weight.original
    assert original.grad is not None and W.grad is not None
    torch.testing.assert_close(original.grad, W.grad, rtol=1e-8, atol=1e-10)


def test_sigma_tracks_the_weights_where_one_power_iteration_lags() -> None:
    """After a large change of the weights, our σ is exact; PyTorch's one iteration is not."""
    ours = torchsvd.nn.spectral_norm(_linear(40, 30))
    ref = torch_spectral_norm(_linear(40, 30))
    new = matrix_with_singular_values(spectrum("geometric", 30) * 5, 40, 30, seed=9)
    with torch.no_grad():
        ours.parametrizations.weight.original.copy_(new)
        ref.parametrizations.weight.original.copy_(new)
    ours_norm = torch.linalg.matrix_norm(ours.weight.detach(), 2)
    ref_norm = torch.linalg.matrix_norm(ref.weight.detach(), 2)
    assert abs(float(ours_norm) - 1.0) < 1e-8
    assert abs(float(ref_norm) - 1.0) > 1e-3


def test_max_norm_rescales_only_above_the_bound() -> None:
    layer = torchsvd.nn.spectral_norm(_linear(10, 8), max_norm=2.0)
    W = layer.parametrizations.weight.original
    torch.testing.assert_close(
        torch.linalg.matrix_norm(layer.weight, 2), torch.tensor(2.0, dtype=F64)
    )
    small = torchsvd.nn.spectral_norm(_linear(10, 8), max_norm=5.0)
    torch.testing.assert_close(small.weight, small.parametrizations.weight.original)
    assert W.shape == (10, 8)


@pytest.mark.parametrize(
    "module",
    [
        nn.Conv2d(3, 6, 3),
        nn.ConvTranspose2d(4, 5, 3),
        nn.Conv1d(2, 7, 5),
        nn.Embedding(10, 4),
    ],
    ids=["conv2d", "convtranspose2d", "conv1d", "embedding"],
)
def test_conv_weights_match_pytorch_layout(module: nn.Module) -> None:
    module = module.double()
    ref = torch_spectral_norm(_clone(module), n_power_iterations=500)
    ours = torchsvd.nn.spectral_norm(_clone(module))
    ref.train()
    _ = ref.weight  # training-mode access runs the 500 iterations
    torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-6, atol=1e-8)


def _clone(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


def test_state_dict_round_trip_and_pytorch_compatibility() -> None:
    ours = torchsvd.nn.spectral_norm(_linear(8, 6, seed=3))
    ref = torch_spectral_norm(_linear(8, 6, seed=3))
    assert set(ours.state_dict()) == set(ref.state_dict())
    fresh = torchsvd.nn.spectral_norm(_linear(8, 6, seed=4))
    fresh.load_state_dict(ours.state_dict())
    fresh.eval()
    ours.eval()
    torch.testing.assert_close(fresh.weight, ours.weight)
    fresh.load_state_dict(ref.state_dict())  # a checkpoint of PyTorch's layer loads too


def test_eval_mode_uses_stored_vectors() -> None:
    layer = torchsvd.nn.spectral_norm(_linear(8, 6))
    layer.eval()
    before = layer.weight.detach().clone()
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(2.0)
    # Stored u, v are reused: σ doubles along with W, so the normalised weight is unchanged.
    torch.testing.assert_close(layer.weight, before)


def test_zero_weight_stays_finite() -> None:
    layer = nn.Linear(4, 3).double()
    with torch.no_grad():
        layer.weight.zero_()
    torchsvd.nn.spectral_norm(layer)
    assert torch.equal(layer.weight, torch.zeros(3, 4, dtype=F64))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        torchsvd.nn.spectral_norm(torch.zeros(3, 3))  # type: ignore[type-var]
    with pytest.raises(ValueError, match="no tensor parameter"):
        torchsvd.nn.spectral_norm(nn.Linear(3, 3), name="kernel")
    with pytest.raises(ValueError, match="n_power_iterations"):
        torchsvd.nn.spectral_norm(nn.Linear(3, 3), n_power_iterations=0)
    with pytest.raises(ValueError, match="max_norm"):
        torchsvd.nn.spectral_norm(nn.Linear(3, 3), max_norm=-1.0)
    with pytest.raises(IndexError, match="dim"):
        torchsvd.nn.spectral_norm(nn.Linear(3, 3), dim=2)


def _forbid_lanczos(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lanczos(*args: object, **kwargs: object) -> None:
        raise AssertionError("a small update should not need the Lanczos fallback")

    monkeypatch.setattr(torchsvd.nn, "svds", no_lanczos)
    monkeypatch.setattr(torchsvd.nn, "_lanczos_top_pair", no_lanczos)


def test_small_update_is_refined_by_power_steps_without_lanczos(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = torchsvd.nn.spectral_norm(_linear(30, 20, seed=5), tol=1e-6)
    original = layer.parametrizations.weight.original
    with torch.no_grad():
        original.add_(1e-6 * torch.randn(30, 20, dtype=F64, generator=torch.Generator()))

    _forbid_lanczos(monkeypatch)
    W = layer.weight
    u, v = layer.parametrizations.weight[0]._u, layer.parametrizations.weight[0]._v
    sigma = torch.linalg.matrix_norm(original.detach(), 2)
    residual = torch.linalg.vector_norm(original.detach().mT @ u - (u @ original.detach() @ v) * v)
    assert float(residual) <= 1e-6 * float(sigma)
    torch.testing.assert_close(
        torch.linalg.matrix_norm(W.detach(), 2), torch.tensor(1.0, dtype=F64)
    )


def test_complex_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    # A complex layer, as PyTorch's parametrization allows. The stored v must be v itself (not
    # the row vᴴ of Vh), and the power steps must use Wᴴ, not Wᵀ.
    layer = nn.Linear(9, 12, dtype=C128)
    with torch.no_grad():
        s = 3.0 * spectrum("decaying", 9)
        layer.weight.copy_(matrix_with_singular_values(s, 12, 9, seed=3, dtype=C128))
    layer = torchsvd.nn.spectral_norm(layer, tol=1e-8)
    one = torch.tensor(1.0, dtype=F64)
    layer.eval()  # the vectors stored at registration, no refinement
    torch.testing.assert_close(torch.linalg.matrix_norm(layer.weight.detach(), 2), one)
    layer.train()
    original = layer.parametrizations.weight.original
    with torch.no_grad():
        original.add_(1e-7 * torch.randn(12, 9, dtype=C128, generator=torch.Generator()))

    _forbid_lanczos(monkeypatch)
    W0 = original.detach().clone()
    G = torch.randn(12, 9, dtype=C128, generator=torch.Generator().manual_seed(2))
    out = layer.weight
    torch.testing.assert_close(torch.linalg.matrix_norm(out.detach(), 2), one)
    (out * G.conj()).real.sum().backward()
    W = W0.clone().requires_grad_()
    ((W / torch.linalg.matrix_norm(W, 2)) * G.conj()).real.sum().backward()
    assert original.grad is not None and W.grad is not None
    torch.testing.assert_close(original.grad, W.grad, rtol=1e-7, atol=1e-9)


# Convolutions normalised by their operator norm (input_shape).


def _sn(layer: nn.Module) -> torch.nn.Module:
    return layer.parametrizations.weight[0]  # type: ignore[index,union-attr]


def _operator_norm(module: nn.Module, input_shape: tuple[int, ...], weight: torch.Tensor) -> float:
    """‖A‖₂ of the layer with kernel ``weight``, from its dense matrix."""
    geometry = conv_geometry(module, input_shape)
    n = geometry.shape[1]
    basis = torch.eye(n, dtype=weight.dtype).reshape(n, *input_shape)
    A = geometry.apply(weight, basis).reshape(n, -1).mT
    return float(torch.linalg.matrix_norm(A, 2))


@pytest.mark.filterwarnings("ignore:(Using padding|Complex modules):UserWarning")
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_is_normalised_by_its_operator_norm(case: str) -> None:
    module, shape = make_conv(case)
    sigma = float(torch.linalg.matrix_norm(dense_matrix(module, shape, F64), 2))
    layer = torchsvd.nn.spectral_norm(module, input_shape=shape, tol=1e-10)
    sn = _sn(layer)
    assert sn._u.shape == conv_geometry(module, shape).out_shape
    assert sn._v.shape == shape
    # The dense matrix of the normalised layer (bias excluded) has norm 1.
    torch.testing.assert_close(
        torch.linalg.matrix_norm(dense_matrix(layer, shape, F64), 2), torch.tensor(1.0, dtype=F64)
    )
    torch.testing.assert_close(
        layer.parametrizations.weight.original / sigma, layer.weight, rtol=1e-9, atol=1e-12
    )


def _sedghi_norm(kernel: torch.Tensor, size: tuple[int, int]) -> float:
    """Largest singular value of the circular 2-D convolution by ``kernel`` on ``size`` inputs:
    the largest over the frequencies of the 2-norm of the c_out × c_in matrix of the DFT of the
    zero-padded kernel (Sedghi, Gupta & Long, 2019)."""
    padded = kernel.new_zeros((*kernel.shape[:2], *size))
    padded[..., : kernel.shape[2], : kernel.shape[3]] = kernel
    per_frequency = torch.fft.fft2(padded).permute(2, 3, 0, 1)
    return float(torch.linalg.matrix_norm(per_frequency, 2).max())


def test_circular_conv_matches_the_fft_formula() -> None:
    torch.manual_seed(3)
    module = nn.Conv2d(4, 5, 3, padding=1, padding_mode="circular").double()
    kernel = module.weight.detach().clone()
    layer = torchsvd.nn.spectral_norm(module, input_shape=(4, 8, 6), tol=1e-10)
    ratio = (layer.parametrizations.weight.original / layer.weight).detach()
    sigma = float(ratio.flatten()[0])
    assert abs(sigma - _sedghi_norm(kernel, (8, 6))) <= 1e-9 * sigma
    # The reshaped-kernel bound differs: the test distinguishes the two normalisations.
    reshaped = float(torch.linalg.matrix_norm(kernel.flatten(1), 2))
    assert reshaped < 0.9 * sigma


@pytest.mark.parametrize(
    "case", ["conv2d-mixed", "conv1d-reflect", "conv1d-circular-stride", "convT2d"]
)
def test_conv_gradient_matches_central_differences(case: str) -> None:
    module, shape = make_conv(case)
    with torch.no_grad():  # a simple top σ, well separated: the first-order rule is exact
        module.weight.mul_(1 + 0.3 * torch.rand(module.weight.shape, generator=torch.Generator()))
    layer = torchsvd.nn.spectral_norm(module, input_shape=shape, tol=1e-12)
    original = layer.parametrizations.weight.original
    W0 = original.detach().clone()
    gen = torch.Generator().manual_seed(4)
    G = torch.randn(W0.shape, dtype=F64, generator=gen)
    (layer.weight * G).sum().backward()
    assert original.grad is not None

    def loss(W: torch.Tensor) -> float:
        return float((W / _operator_norm(module, shape, W) * G).sum())

    h = 1e-6
    for _ in range(3):
        D = torch.randn(W0.shape, dtype=F64, generator=gen)
        numeric = (loss(W0 + h * D) - loss(W0 - h * D)) / (2 * h)
        analytic = float((original.grad * D).sum())
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric))


def test_conv_state_dict_round_trip_and_max_norm() -> None:
    def layer(seed: int, **kwargs: float) -> nn.Module:
        torch.manual_seed(seed)
        conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="reflect").double()
        return torchsvd.nn.spectral_norm(conv, input_shape=(2, 7, 6), **kwargs)

    trained, fresh = layer(0), layer(1)
    fresh.load_state_dict(trained.state_dict())
    fresh.eval()
    trained.eval()
    torch.testing.assert_close(fresh.weight, trained.weight)
    torch.testing.assert_close(_sn(fresh)._v, _sn(trained)._v)

    one = torch.tensor(1.0, dtype=F64)
    norm = torch.linalg.matrix_norm
    capped = layer(2, max_norm=0.5)
    original = capped.parametrizations.weight.original
    sigma = _operator_norm(capped, (2, 7, 6), original.detach())
    assert sigma > 0.5
    torch.testing.assert_close(norm(dense_matrix(capped, (2, 7, 6), F64), 2), 0.5 * one)
    loose = layer(2, max_norm=2 * sigma)
    torch.testing.assert_close(loose.weight, loose.parametrizations.weight.original)


def test_conv_small_update_is_refined_by_power_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(5)
    conv = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1).double()
    layer = torchsvd.nn.spectral_norm(conv, input_shape=(3, 4, 5), tol=1e-6)
    original = layer.parametrizations.weight.original
    with torch.no_grad():
        original.add_(1e-6 * torch.randn(original.shape, dtype=F64, generator=torch.Generator()))
    _forbid_lanczos(monkeypatch)
    torch.testing.assert_close(
        torch.linalg.matrix_norm(dense_matrix(layer, (3, 4, 5), F64), 2),
        torch.tensor(1.0, dtype=F64),
        rtol=1e-10,
        atol=1e-11,  # σ errs by about tol²
    )


def test_conv_after_a_large_update_falls_back_to_lanczos() -> None:
    torch.manual_seed(6)
    layer = torchsvd.nn.spectral_norm(nn.Conv1d(2, 3, 3, padding=1).double(), input_shape=(2, 9))
    with torch.no_grad():
        layer.parametrizations.weight.original.copy_(torch.randn(3, 2, 3, dtype=F64))
    torch.testing.assert_close(
        torch.linalg.matrix_norm(dense_matrix(layer, (2, 9), F64), 2),
        torch.tensor(1.0, dtype=F64),
    )


def test_conv_lanczos_fallback_raises_beyond_maxiter() -> None:
    torch.manual_seed(6)
    layer = torchsvd.nn.spectral_norm(nn.Conv1d(2, 3, 3, padding=1).double(), input_shape=(2, 9))
    _sn(layer).maxiter = 2
    with torch.no_grad():
        layer.parametrizations.weight.original.copy_(torch.randn(3, 2, 3, dtype=F64))
    with pytest.raises(torchsvd.ConvergenceError, match="in 2 products"):
        _ = layer.weight


def test_conv_bad_input_shape() -> None:
    with pytest.raises(ValueError, match=r"input_shape must be 3 positive ints"):
        torchsvd.nn.spectral_norm(nn.Conv2d(3, 4, 3), input_shape=(3, 8))
    with pytest.raises(ValueError, match="has 4 channels but Conv2d takes 3"):
        torchsvd.nn.spectral_norm(nn.Conv2d(3, 4, 3), input_shape=(4, 8, 8))
    with pytest.raises(TypeError, match="got Linear"):
        torchsvd.nn.spectral_norm(nn.Linear(3, 4), input_shape=(3,))
    with pytest.raises(ValueError, match="leave name and dim"):
        torchsvd.nn.spectral_norm(nn.Conv1d(3, 4, 3), dim=1, input_shape=(3, 8))
    with pytest.raises(ValueError, match="cannot be applied"):
        torchsvd.nn.spectral_norm(nn.Conv1d(3, 4, 5), input_shape=(3, 2))


# torch.compile: the refinement is an opaque custom operator, σ and the scaling are traced.


def _small_net(sn: bool) -> nn.Module:
    torch.manual_seed(7)
    conv = nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular")
    linear = nn.Linear(4 * 6 * 6, 3)
    if sn:
        conv = torchsvd.nn.spectral_norm(conv, input_shape=(2, 6, 6))
        linear = torchsvd.nn.spectral_norm(linear, max_norm=2.0)
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), linear)


def test_no_graph_break_under_torch_compile() -> None:
    net = _small_net(sn=True)
    x = torch.randn(5, 2, 6, 6)
    explanation = torch._dynamo.explain(net)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_training_steps_match_eager() -> None:
    eager, compiled_net = _small_net(sn=True), _small_net(sn=True)
    compiled = torch.compile(compiled_net, backend="aot_eager", fullgraph=True)
    x = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(8))
    for net, run in ((eager, eager), (compiled_net, compiled)):
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        for _ in range(3):  # large steps: the refinement needs more than the power steps
            opt.zero_grad()
            run(x).square().sum().backward()
            opt.step()
    for a, b in zip(eager.state_dict().values(), compiled_net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    conv = compiled_net[0]
    dense = dense_matrix(conv, (2, 6, 6), torch.float32)
    assert abs(float(torch.linalg.matrix_norm(dense, 2)) - 1.0) < 1e-4


def _compile_cases() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    torch.manual_seed(11)
    linear = nn.Linear(6, 5, dtype=C128)
    transposed = nn.ConvTranspose2d(3, 2, 3, dtype=F64)  # dim=1, the reshaped kernel
    conv = nn.Conv1d(2, 3, 3, stride=2, padding=1, padding_mode="reflect", dtype=F64)
    return [
        ("complex Linear", torchsvd.nn.spectral_norm(linear), (4, 6)),
        ("ConvTranspose2d", torchsvd.nn.spectral_norm(transposed, max_norm=0.5), (2, 3, 5, 5)),
        ("Conv1d operator", torchsvd.nn.spectral_norm(conv, input_shape=(2, 9)), (2, 2, 9)),
    ]


@pytest.mark.parametrize("case", range(3), ids=[c[0] for c in _compile_cases()])
def test_compiled_layer_matches_eager(case: int) -> None:
    """The custom operators of the compiled layer (refinement writing the stored vectors in
    place, ∂σ/∂W) give eager's output, gradient and buffers, in training and evaluation mode."""
    torch._dynamo.reset()  # each layer is a new module: a recompile of the same code otherwise
    _, eager, shape = _compile_cases()[case]
    _, layer, _ = _compile_cases()[case]
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    dtype = layer.parametrizations.weight.original.dtype
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
    step = torch.randn(
        layer.parametrizations.weight.original.shape, generator=torch.Generator().manual_seed(4)
    )
    with torch.no_grad():  # a large step: the refinement has to iterate past the power steps
        for net in (eager, layer):
            net.parametrizations.weight.original.add_(step.to(dtype))
    for mode in ("train", "eval"):
        for net in (eager, layer):
            net.train(mode == "train")
            net.zero_grad()
        out_eager, out = eager(x), compiled(x)
        torch.testing.assert_close(out, out_eager)
        out_eager.abs().square().sum().backward()
        out.abs().square().sum().backward()
        torch.testing.assert_close(
            layer.parametrizations.weight.original.grad,
            eager.parametrizations.weight.original.grad,
        )
        for a, b in zip(layer.state_dict().values(), eager.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_compiled_gradient_against_finite_differences(mode: str) -> None:
    """The gradient of the compiled layer (σ = Re⟨G, W⟩ from the operators) is the derivative
    of W/σ_1(W), checked by central differences of the exact σ_1 (torch.linalg.matrix_norm)."""
    torch._dynamo.reset()
    torch.manual_seed(12)
    layer = torchsvd.nn.spectral_norm(nn.Linear(5, 7, dtype=F64), max_norm=0.3, tol=1e-13)
    layer.train(mode == "train")
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 5, dtype=F64, generator=torch.Generator().manual_seed(4))
    weight = layer.parametrizations.weight.original
    compiled(x).sin().sum().backward()
    assert weight.grad is not None

    def loss(W: torch.Tensor) -> torch.Tensor:
        scale = torch.clamp(torch.linalg.matrix_norm(W, 2) / 0.3, min=1.0)
        return nn.functional.linear(x, W / scale, layer.bias).sin().sum()

    W0 = weight.detach()
    direction = torch.randn(W0.shape, dtype=F64, generator=torch.Generator().manual_seed(5))
    h = 1e-6
    numeric = (loss(W0 + h * direction) - loss(W0 - h * direction)) / (2 * h)
    torch.testing.assert_close((weight.grad * direction).sum(), numeric, rtol=1e-6, atol=1e-9)


def test_refine_operators_update_the_stored_vectors_in_place() -> None:
    """The refinement operators write the top singular pair into the buffers they are given
    (no copy back after the compiled graph), and pass torch.library.opcheck."""
    gen = torch.Generator().manual_seed(6)
    mat = torch.randn(7, 5, dtype=F64, generator=gen)
    u, v = torch.zeros(7, dtype=F64), torch.randn(5, dtype=F64, generator=gen)
    v /= v.norm()
    torch.ops.torchsvd.spectral_norm_refine(mat, u, v, 1e-12, None)
    U, _, Vh = torch.linalg.svd(mat)
    sign = torch.sign(u @ U[:, 0])
    torch.testing.assert_close(u, sign * U[:, 0])
    torch.testing.assert_close(v, sign * Vh[0])
    u0, v0 = torch.zeros(7, dtype=F64), torch.randn(5, dtype=F64, generator=gen)
    torch.library.opcheck(
        torch.ops.torchsvd.spectral_norm_refine, (mat, u0, v0 / v0.norm(), None, None)
    )
    conv = nn.Conv1d(2, 3, 3, padding=1, dtype=F64)
    geometry = conv_geometry(conv, (2, 6))
    uc = torch.zeros(geometry.out_shape, dtype=F64)
    vc = torch.randn(geometry.in_shape, dtype=F64, generator=gen)
    args = (conv.weight.detach(), uc, vc / vc.norm(), None, None, *_conv_op_args(geometry))
    torch.library.opcheck(torch.ops.torchsvd.spectral_norm_refine_conv, args)
