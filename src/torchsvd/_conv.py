"""A convolution layer as the linear map it is: products with the layer and with its adjoint.

A ``Conv{1,2,3}d`` or ``ConvTranspose{1,2,3}d`` without its bias, applied to inputs of one shape
``(C_in, *spatial)``, is a linear map ``x -> A x`` from ``C_in·∏spatial`` numbers to
``C_out·∏spatial_out``. Its matrix is never formed: `ConvGeometry.apply` is the layer's own
product and `ConvGeometry.adjoint` is ``Aᴴ``:

- a convolution ``conv(pad(x))`` (with ``pad`` the explicit padding of a non-zero
  ``padding_mode``, or of an asymmetric ``padding='same'``) has the adjoint
  ``padᴴ(conv_transpose(y))``, the transposed convolution with the same stride, dilation and
  groups and the ``output_padding`` that restores the input size; ``padᴴ`` crops for zero
  padding and adds every padded entry back onto the entry it copies for reflect, replicate and
  circular padding;
- a transposed convolution has the convolution with the same parameters as its adjoint;
- complex weights: the adjoint uses the conjugate kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CONV_TYPES", "ConvGeometry", "conv_geometry"]

CONV_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_PAD_MODE = {"zeros": "constant"}


@dataclass(frozen=True)
class ConvGeometry:
    """Everything but the kernel that defines the linear map of a convolution layer.

    ``pad`` is the explicit padding applied before the convolution, in `torch.nn.functional.pad`
    order (last dimension first, ``(left, right)`` pairs), empty when the convolution pads
    itself (``padding``).
    """

    transposed: bool
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    output_padding: tuple[int, ...]
    pad: tuple[int, ...]
    padding_mode: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def spatial(self) -> int:
        """Number of spatial dimensions (1, 2 or 3)."""
        return len(self.in_shape) - 1

    @property
    def shape(self) -> tuple[int, int]:
        """The shape ``(m, n)`` of the matrix of the map."""
        return math.prod(self.out_shape), math.prod(self.in_shape)

    def apply(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The layer without bias on a batch ``x`` ``(p, *in_shape)``: ``(p, *out_shape)``."""
        d = self.spatial
        if self.transposed:
            return _CONV_T[d](
                x,
                weight,
                None,
                self.stride,
                self.padding,
                self.output_padding,
                self.groups,
                self.dilation,
            )
        if self.pad:
            x = F.pad(x, self.pad, mode=_PAD_MODE.get(self.padding_mode, self.padding_mode))
        return _CONV[d](x, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def adjoint(self, weight: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``Aᴴ`` on a batch ``y`` ``(p, *out_shape)``: ``(p, *in_shape)``."""
        d = self.spatial
        weight = weight.conj()
        if self.transposed:
            return _CONV[d](y, weight, None, self.stride, self.padding, self.dilation, self.groups)
        # The input the convolution saw: the padded one when the padding is explicit.
        seen = list(self.in_shape[1:])
        for i in range(d):
            seen[d - 1 - i] += self.pad[2 * i] + self.pad[2 * i + 1] if self.pad else 0
        # conv_transpose returns (out − 1)·s − 2p + dilation·(k − 1) + 1 + output_padding
        # entries; the convolution dropped the last output_padding (< stride) of them.
        kernel = weight.shape[2:]
        output_padding = tuple(
            seen[i]
            - (
                (self.out_shape[1 + i] - 1) * self.stride[i]
                - 2 * self.padding[i]
                + self.dilation[i] * (kernel[i] - 1)
                + 1
            )
            for i in range(d)
        )
        x = _CONV_T[d](
            y, weight, None, self.stride, self.padding, output_padding, self.groups, self.dilation
        )
        return self._pad_adjoint(x) if self.pad else x

    def kernel_gradient(
        self, weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """``∂/∂W Re⟨y, A_W x⟩`` for batches ``x`` ``(p, *in_shape)``, ``y`` ``(p, *out_shape)``.

        ``Re⟨y, A_W x⟩`` is linear in the kernel, so it equals ``Re⟨G, W⟩`` with G this gradient:
        the weight gradient of the layer's backward, without building a graph.
        """
        if not self.transposed and self.pad:
            x = F.pad(x, self.pad, mode=_PAD_MODE.get(self.padding_mode, self.padding_mode))
        output_padding = self.output_padding if self.transposed else (0,) * self.spatial
        _, grad, _ = torch.ops.aten.convolution_backward(
            y, x, weight, None, list(self.stride), list(self.padding), list(self.dilation),
            self.transposed, list(output_padding), self.groups, [False, True, False],
        )  # fmt: skip
        return grad

    def _pad_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        """``padᴴ``: crop (zero padding), or add each padded copy back onto its source entry."""
        d = self.spatial
        sizes = self.in_shape[1:]
        if self.padding_mode == "zeros":
            for i in range(d):
                left = self.pad[2 * (d - 1 - i)]
                x = x.narrow(2 + i, left, sizes[i])
            return x
        # The padded image of the indices 0..N−1 of one channel: entry j of the padded signal
        # is a copy of entry index[j], so padᴴ sums the entries of x over each index.
        n = math.prod(sizes)
        source = torch.arange(n, dtype=torch.float64, device=x.device).reshape(1, 1, *sizes)
        index = F.pad(source, self.pad, mode=self.padding_mode).flatten().long()
        flat = x.flatten(2)
        out = flat.new_zeros((*flat.shape[:2], n))
        out.index_add_(2, index, flat)
        return out.reshape(*x.shape[:2], *sizes)


def _expand(value: int | tuple[int, ...], d: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple) else (value,) * d


def conv_geometry(module: nn.Module, input_shape: tuple[int, ...]) -> ConvGeometry:
    """The linear map of a convolution layer on inputs of shape ``input_shape`` ``(C, *spatial)``.

    Raises
    ------
    TypeError
        ``module`` is not a Conv{1,2,3}d or ConvTranspose{1,2,3}d.
    ValueError
        ``input_shape`` does not have ``1 + spatial`` positive ints, its channels differ from the
        layer's ``in_channels``, or the input is too small for the kernel.
    """
    if not isinstance(module, CONV_TYPES):
        names = ", ".join(t.__name__ for t in CONV_TYPES)
        raise TypeError(
            f"input_shape is supported for {names} (the true operator norm of the convolution), "
            f"got {type(module).__name__}; drop input_shape to normalise its reshaped weight"
        )
    assert isinstance(module, nn.modules.conv._ConvNd)
    d = len(module.kernel_size)
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
    if (
        shape is None
        or len(shape) != 1 + d
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        raise ValueError(
            f"input_shape must be {1 + d} positive ints (channels, then {d} spatial sizes; no "
            f"batch dimension) for {type(module).__name__}, got {input_shape!r}"
        )
    if shape[0] != module.in_channels:
        raise ValueError(
            f"input_shape has {shape[0]} channels but {type(module).__name__} takes "
            f"{module.in_channels} (input_shape is (channels, *spatial), without the batch)"
        )
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    kernel = module.kernel_size
    dilation = _expand(module.dilation, d)
    padding: tuple[int, ...]
    pad: tuple[int, ...] = ()
    if isinstance(module.padding, str):
        # 'valid' is no padding; 'same' pads dilation·(k − 1) in all, the odd one at the end
        # (as the layer does).
        totals = (
            (0,) * d
            if module.padding == "valid"
            else tuple(dilation[i] * (kernel[i] - 1) for i in range(d))
        )
        lefts = tuple(t // 2 for t in totals)
        rights = tuple(t - t // 2 for t in totals)
    else:
        lefts = rights = _expand(module.padding, d)
    if module.padding_mode == "zeros" and lefts == rights:
        padding = lefts
    else:
        padding = (0,) * d
        pad = tuple(p for i in reversed(range(d)) for p in (lefts[i], rights[i]))
        if not any(pad):
            pad = ()
    geometry = ConvGeometry(
        transposed=transposed,
        stride=_expand(module.stride, d),
        padding=padding,
        dilation=dilation,
        groups=module.groups,
        output_padding=_expand(module.output_padding, d),
        pad=pad,
        padding_mode=module.padding_mode,
        in_shape=shape,
        out_shape=shape,
    )
    probe = torch.empty((1, *shape), device="meta", dtype=module.weight.dtype)
    try:
        out = geometry.apply(module.weight.detach().to("meta"), probe)
    except RuntimeError as err:
        raise ValueError(
            f"{type(module).__name__} cannot be applied to inputs of shape {shape}: {err}"
        ) from None
    return ConvGeometry(**{**geometry.__dict__, "out_shape": tuple(out.shape[1:])})
