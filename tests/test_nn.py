"""torchsvd.nn.spectral_norm against PyTorch's parametrization and the exact derivative."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

import torchsvd
from _helpers import C128, F64
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
