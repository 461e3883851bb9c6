"""The linear map of a convolution layer (torchsvd._conv) against its dense matrix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _helpers import C128, F64
from torchsvd._conv import conv_geometry

pytestmark = pytest.mark.filterwarnings("ignore:(Using padding|Complex modules):UserWarning")

# (module, input_shape): every layer type and every option that changes the map, small.
CASES = {
    "conv1d": (lambda: nn.Conv1d(2, 3, 3), (2, 7)),
    "conv1d-pad-stride": (lambda: nn.Conv1d(2, 3, 3, stride=2, padding=1), (2, 8)),
    "conv1d-dilation": (lambda: nn.Conv1d(2, 3, 3, dilation=2, padding=1), (2, 9)),
    "conv1d-groups": (lambda: nn.Conv1d(4, 6, 3, groups=2, padding=1), (4, 5)),
    "conv1d-valid": (lambda: nn.Conv1d(2, 3, 3, padding="valid"), (2, 6)),
    "conv1d-same-even": (lambda: nn.Conv1d(2, 3, 4, padding="same"), (2, 7)),
    "conv1d-same-even-dilated": (lambda: nn.Conv1d(2, 2, 2, padding="same", dilation=3), (2, 8)),
    "conv1d-reflect": (lambda: nn.Conv1d(2, 3, 5, padding=2, padding_mode="reflect"), (2, 6)),
    "conv1d-replicate": (lambda: nn.Conv1d(2, 3, 3, padding=2, padding_mode="replicate"), (2, 5)),
    "conv1d-circular-stride": (
        lambda: nn.Conv1d(2, 3, 3, padding=1, stride=2, padding_mode="circular"),
        (2, 7),
    ),
    "conv1d-reflect-same-even": (
        lambda: nn.Conv1d(2, 3, 4, padding="same", padding_mode="reflect"),
        (2, 6),
    ),
    "conv2d": (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 5, 4)),
    "conv2d-mixed": (
        lambda: nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
        (2, 6, 5),
    ),
    "conv2d-reflect": (
        lambda: nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode="reflect"),
        (2, 4, 5),
    ),
    "conv2d-replicate-stride": (
        lambda: nn.Conv2d(2, 2, 3, padding=1, stride=2, padding_mode="replicate"),
        (2, 5, 4),
    ),
    "conv2d-circular": (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), (2, 4, 4)),
    "conv2d-same-dilated": (lambda: nn.Conv2d(1, 2, (2, 3), padding="same", dilation=2), (1, 5, 6)),
    "conv3d": (lambda: nn.Conv3d(2, 2, 2, stride=2, padding=1), (2, 3, 4, 3)),
    "conv3d-circular": (
        lambda: nn.Conv3d(1, 2, 3, padding=1, padding_mode="circular"),
        (1, 3, 3, 4),
    ),
    "conv3d-reflect": (lambda: nn.Conv3d(1, 2, 3, padding=1, padding_mode="reflect"), (1, 3, 4, 3)),
    "convT1d": (lambda: nn.ConvTranspose1d(2, 3, 3), (2, 5)),
    "convT1d-all": (
        lambda: nn.ConvTranspose1d(
            4, 2, 3, stride=3, padding=1, output_padding=2, dilation=2, groups=2
        ),
        (4, 4),
    ),
    "convT2d": (
        lambda: nn.ConvTranspose2d(
            2, 3, (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0)
        ),
        (2, 3, 4),
    ),
    "convT3d": (
        lambda: nn.ConvTranspose3d(2, 2, 2, stride=2, padding=1, output_padding=1),
        (2, 2, 3, 2),
    ),
}


def dense_matrix(
    module: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    """The matrix of the layer without bias, column j the layer applied to the j-th basis vector."""
    n = torch.Size(input_shape).numel()
    basis = torch.eye(n, dtype=dtype).reshape(n, *input_shape)
    with torch.no_grad():
        out = module(basis) - module(torch.zeros_like(basis[:1]))
    return out.reshape(n, -1).mT


def make(case: str, dtype: torch.dtype = F64) -> tuple[nn.Module, tuple[int, ...]]:
    factory, shape = CASES[case]
    torch.manual_seed(0)
    module = factory().to(dtype)
    if dtype.is_complex:
        with torch.no_grad():
            module.weight.copy_(torch.randn_like(module.weight))
    return module, shape


@pytest.mark.parametrize("case", CASES)
def test_products_equal_the_dense_matrix_and_its_adjoint(case: str) -> None:
    module, shape = make(case)
    geometry = conv_geometry(module, shape)
    A = dense_matrix(module, shape, F64)
    assert A.shape == geometry.shape
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(3, *geometry.in_shape, dtype=F64, generator=gen)
    Y = torch.randn(3, *geometry.out_shape, dtype=F64, generator=gen)
    AX = geometry.apply(module.weight.detach(), X)
    AhY = geometry.adjoint(module.weight.detach(), Y)
    assert AX.shape == Y.shape and AhY.shape == X.shape
    torch.testing.assert_close(AX.flatten(1), X.flatten(1) @ A.mT)
    torch.testing.assert_close(AhY.flatten(1), Y.flatten(1) @ A)
    # ⟨A x, y⟩ = ⟨x, Aᴴ y⟩
    torch.testing.assert_close((AX * Y).sum(), (X * AhY).sum())


@pytest.mark.parametrize("case", ["conv1d-reflect", "conv2d-mixed", "conv2d-circular", "convT2d"])
def test_complex_adjoint(case: str) -> None:
    module, shape = make(case, C128)
    geometry = conv_geometry(module, shape)
    A = dense_matrix(module, shape, C128)
    gen = torch.Generator().manual_seed(2)
    Y = torch.randn(2, *geometry.out_shape, dtype=C128, generator=gen)
    AhY = geometry.adjoint(module.weight.detach(), Y)
    torch.testing.assert_close(AhY.flatten(1), Y.flatten(1) @ A.conj())


def test_bad_input_shapes_and_modules() -> None:
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"3 positive ints .* no batch"):
        conv_geometry(conv, (1, 3, 8, 8))
    with pytest.raises(ValueError, match="3 positive ints"):
        conv_geometry(conv, (3, 0, 8))
    with pytest.raises(ValueError, match="has 2 channels but Conv2d takes 3"):
        conv_geometry(conv, (2, 8, 8))
    with pytest.raises(ValueError, match="cannot be applied to inputs of shape"):
        conv_geometry(conv, (3, 2, 8))
    with pytest.raises(TypeError, match="got Linear"):
        conv_geometry(nn.Linear(3, 3), (3,))


@pytest.mark.parametrize("case", CASES)
def test_kernel_gradient_is_the_weight_gradient(case: str) -> None:
    module, shape = make(case)
    geometry = conv_geometry(module, shape)
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(2, *geometry.in_shape, dtype=F64, generator=gen)
    Y = torch.randn(2, *geometry.out_shape, dtype=F64, generator=gen)
    W = module.weight.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad((geometry.apply(W, X) * Y).sum(), W)
    G = geometry.kernel_gradient(W.detach(), X, Y)
    torch.testing.assert_close(G, grad)
    # Re⟨y, A_W x⟩ = ⟨G, W⟩: the product is linear in the kernel.
    torch.testing.assert_close((G * W.detach()).sum(), (geometry.apply(W, X) * Y).sum().detach())
