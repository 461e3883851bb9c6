"""Neural-network layers: spectral normalisation with a tolerance-controlled σ_1.

`spectral_norm` is a drop-in for :func:`torch.nn.utils.parametrizations.spectral_norm` (same call,
same buffers ``_u``/``_v`` and state-dict keys, conv and transposed-conv weights), with two
differences that matter for Lipschitz-constrained training:

- σ_1 is iterated until the residual of the singular triplet is below ``tol``, instead of one
  power iteration per step: a few power steps from the previous vectors when the weights moved
  little (then it costs about as much as PyTorch's single iteration), and the Lanczos solver of
  :func:`torchsvd.svds`, warm-started, when they did not. PyTorch's σ is a lower bound that lags
  behind the weights (after a large step it can be far off); this one is accurate at every step.
- Its gradient is the exact derivative of W/σ_1(W) (∂σ_1/∂W = u_1 v_1ᴴ at the converged triplet).
- ``max_norm=c`` rescales only when σ_1 > c: W / max(1, σ_1/c), the usual Lipschitz layer.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchsvd._topk import default_tol, svds

__all__ = ["spectral_norm"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)

# Power steps (two GEMVs each) tried before handing over to Lanczos: enough for the usual small
# change between training steps; beyond that Lanczos wins (it converges with √(σ_1−σ_2)).
_POWER_STEPS = 8


class _SpectralNorm(nn.Module):
    """Parametrization W -> W / σ_1(W) (or W / max(1, σ_1/max_norm)), σ_1 by warm-started svds."""

    _u: torch.Tensor
    _v: torch.Tensor

    def __init__(
        self,
        weight: torch.Tensor,
        dim: int,
        eps: float,
        tol: float | None,
        maxiter: int | None,
        max_norm: float | None,
    ) -> None:
        super().__init__()
        ndim = weight.ndim
        if not -ndim <= dim < max(ndim, 1):
            raise IndexError(
                f"dim must be in [{-ndim}, {ndim - 1}] for a weight of shape "
                f"{tuple(weight.shape)}, got {dim}"
            )
        self.dim = dim % ndim if ndim else 0
        self.eps = eps
        self.tol = tol
        self.maxiter = maxiter
        self.max_norm = max_norm
        if ndim > 1:
            mat = self._as_matrix(weight.detach())
            # Converge once at registration (PyTorch runs 15 power iterations here).
            U, _, Vh = svds(mat, 1, tol=tol, maxiter=maxiter)
            # v itself, not the row vᴴ of Vh (they differ for complex weights), as PyTorch.
            self.register_buffer("_u", U[:, 0].to(weight.dtype).contiguous())
            self.register_buffer("_v", Vh[0].conj().to(weight.dtype).contiguous())

    def _as_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        # Same layout as PyTorch: the normalised dimension first, the rest flattened.
        if self.dim != 0:
            weight = weight.movedim(self.dim, 0)
        return weight.flatten(1)

    def _scale(self, weight: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.clamp_min(self.eps)  # a zero weight stays zero instead of 0/0
        if self.max_norm is None:
            return weight / sigma
        return weight / torch.clamp(sigma / self.max_norm, min=1.0)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            # A vector's only singular value is its norm: no iteration needed.
            return self._scale(weight, torch.linalg.vector_norm(weight))
        mat = self._as_matrix(weight)
        if self.training:
            with torch.no_grad():
                u, v = self._refine(mat.detach())
                # In place, so that replicas sharing the buffers (DataParallel) see the update.
                self._u.copy_(u)
                self._v.copy_(v)
        # σ = Re uᴴ W v with u, v constant has gradient u vᴴ: the exact ∂σ_1/∂W at a converged
        # triplet (what svds' implicit backward gives for a loss of S alone), as cheap as PyTorch.
        # (uᴴ W v is real there up to rounding; Re keeps σ real for complex weights.)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        sigma = torch.vdot(u, torch.mv(mat, v)).real
        return self._scale(weight, sigma)

    def _refine(self, mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The top singular pair of ``mat`` to relative residual ``tol``, from the stored one.

        Between two training steps the weights move little, so a few power steps from the
        previous v usually suffice: with u = W v / ‖W v‖ and σ = ‖W v‖, ``W v − σ u`` is zero
        and ``‖Wᴴu − σ v‖`` is the residual ``svds`` bounds, for two GEMVs a step. Power
        iteration converges only with the ratio σ_2/σ_1, though (slow for the clustered top
        spectrum of a freshly initialised layer, hopeless after a large update), so after
        ``_POWER_STEPS`` it hands over to the Lanczos solver of `svds`, warm-started here.
        """
        tol = default_tol(mat.dtype) if self.tol is None else self.tol
        v = self._v
        for _ in range(_POWER_STEPS):
            Wv = torch.mv(mat, v)
            sigma = torch.linalg.vector_norm(Wv)
            if not bool(sigma > 0):
                break
            u = Wv / sigma
            z = torch.mv(mat.mH, u)
            if bool(torch.linalg.vector_norm(z - sigma * v) <= tol * sigma):
                return u, v
            v = z / torch.linalg.vector_norm(z)
        U, _, Vh = svds(mat, 1, tol=self.tol, maxiter=self.maxiter, v0=v.conj())
        return U[:, 0], Vh[0].conj()

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        # Assigning to the parametrized weight stores the value itself (as PyTorch does).
        return value


def spectral_norm(
    module: ModuleT,
    name: str = "weight",
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    dim: int | None = None,
    *,
    tol: float | None = None,
    maxiter: int | None = None,
    max_norm: float | None = None,
) -> ModuleT:
    r"""Spectral normalisation of ``module.<name>``: a drop-in for PyTorch's parametrization.

    Registers a parametrization so that ``module.<name>`` is ``W / σ_1(W)`` (or, with
    ``max_norm=c``, ``W / max(1, σ_1(W)/c)``), where ``W`` is the stored weight reshaped to a
    matrix with dimension ``dim`` first. In training mode σ_1 is iterated from the stored singular
    vectors (power steps, then :func:`torchsvd.svds` with ``k=1`` if they do not suffice) until
    ``‖W v − σ u‖, ‖Wᴴu − σ v‖ <= tol·σ``; the gradient is exact. In evaluation mode the
    stored vectors are used, as in PyTorch. Real and complex weights (float32/float64,
    complex64/complex128) are supported.

    Parameters
    ----------
    module : torch.nn.Module
        The module holding the weight (Linear, Conv*d, ConvTranspose*d, Embedding, ...).
    name : str
        Name of the weight parameter.
    n_power_iterations : int
        Accepted for compatibility with PyTorch's signature and validated the same way; the number
        of iterations is set by ``tol`` instead.
    eps : float
        Lower bound on σ_1 in the division (a zero weight stays zero).
    dim : int, optional
        Dimension corresponding to the number of outputs: 0, except 1 for ConvTranspose*d
        (PyTorch's default rule).
    tol : float, optional
        Relative residual of the singular triplet; default that of :func:`torchsvd.svds`.
    maxiter : int, optional
        Iteration cap of :func:`torchsvd.svds` (raises `torchsvd.ConvergenceError` beyond it).
    max_norm : float, optional
        Rescale only when σ_1 exceeds it (Lipschitz bound ``max_norm``) instead of always
        normalising to σ_1 = 1.

    Returns
    -------
    The same module, with the parametrization registered.

    Examples
    --------
    >>> import torch, torchsvd
    >>> layer = torchsvd.nn.spectral_norm(torch.nn.Linear(20, 40).double())
    >>> bool(torch.isclose(torch.linalg.matrix_norm(layer.weight, 2),
    ...                    torch.tensor(1.0, dtype=torch.float64)))
    True
    >>> capped = torchsvd.nn.spectral_norm(torch.nn.Linear(20, 40).double(), max_norm=10.0)
    >>> bool(torch.allclose(capped.weight, capped.parametrizations.weight.original))
    True

    References
    ----------
    .. [1] T. Miyato et al., "Spectral Normalization for Generative Adversarial Networks",
           ICLR 2018.
    .. [2] PyTorch issue #12760 (spectral norm as a function).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"module {type(module).__name__} has no tensor parameter {name!r}")
    if n_power_iterations <= 0:
        raise ValueError(f"n_power_iterations must be positive, got {n_power_iterations}")
    if max_norm is not None and not max_norm > 0:
        raise ValueError(f"max_norm must be a positive number, got {max_norm!r}")
    if dim is None:
        transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
        dim = 1 if isinstance(module, transposed) else 0
    parametrize.register_parametrization(
        module, name, _SpectralNorm(weight, dim, eps, tol, maxiter, max_norm)
    )
    return module
