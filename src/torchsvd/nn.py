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
- With ``input_shape``, a convolution is normalised by its true operator norm on inputs of that
  shape (stride, padding, dilation, groups, padding mode), not by the norm of its reshaped
  kernel: the power steps and a restarted Lanczos bidiagonalization multiply by the layer and
  its adjoint (on one input at a time).

Under ``torch.compile`` the refinement (its loop stops on a residual test, a data-dependent
branch) is one opaque custom operator: the same exact algorithm, run eagerly, with no graph
break; σ and its gradient are traced as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchsvd._conv import ConvGeometry, conv_geometry
from torchsvd._errors import ConvergenceError
from torchsvd._topk import default_maxiter, default_tol, svds

__all__ = ["spectral_norm"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)

# Power steps (two products each) tried before handing over to Lanczos: enough for the usual
# small change between training steps; beyond that Lanczos wins (it converges with √(σ_1−σ_2)).
_POWER_STEPS = 8

# Bidiagonalization steps between restarts of the Lanczos fallback of a convolution.
_KRYLOV_STEPS = 24


def _power_steps(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rmatvec: Callable[[torch.Tensor], torch.Tensor],
    v: torch.Tensor,
    rtol: float,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Up to ``_POWER_STEPS`` power steps from ``v``: ``(u, v, converged)``.

    With u = W v / ‖W v‖ and σ = ‖W v‖, ``W v − σ u`` is zero and ``‖Wᴴu − σ v‖`` is the
    residual ``svds`` bounds, for two products a step. Between two training steps the weights
    move little, so a few steps from the previous v usually suffice; power iteration converges
    only with the ratio σ_2/σ_1, though (slow for a clustered top spectrum, hopeless after a
    large update), hence the Lanczos fallbacks.
    """
    u = v.new_zeros(())
    for _ in range(_POWER_STEPS):
        Wv = matvec(v)
        sigma = torch.linalg.vector_norm(Wv)
        if not bool(sigma > 0):
            return Wv, v, False
        u = Wv / sigma
        z = rmatvec(u)
        if bool(torch.linalg.vector_norm(z - sigma * v) <= rtol * sigma):
            return u, v, True
        v = z / torch.linalg.vector_norm(z)
    return u, v, False


def _refine_matrix(
    mat: torch.Tensor, v: torch.Tensor, tol: float | None, maxiter: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top singular pair of ``mat`` to relative residual ``tol``, from the stored ``v``:
    power steps, then the Lanczos solver of `svds`, warm-started."""
    rtol = default_tol(mat.dtype) if tol is None else tol
    matH = mat.mH
    u, v, converged = _power_steps(lambda x: torch.mv(mat, x), lambda y: torch.mv(matH, y), v, rtol)
    if converged:
        return u, v
    U, _, Vh = svds(mat, 1, tol=tol, maxiter=maxiter, v0=v.conj())
    return U[:, 0], Vh[0].conj()


def conv_default_tol(dtype: torch.dtype) -> float:
    """Default residual tolerance of the top pair of a convolution: √eps, at least 1e-5.

    The top of a convolution's spectrum is clustered (near-degenerate pairs of Fourier-like
    modes, relative gaps of 1e-7 to 1e-3 on 32×32 inputs), so the singular vectors move a lot
    between training steps and power iteration needs hundreds of steps to reach a residual of
    eps^(3/4). σ, the number the layer divides by, is the Rayleigh quotient ‖W v‖ of the stored
    vector: a lower bound of σ_1 whose error is second order in the residual, at rounding level
    at this tolerance.
    """
    # Not below 1e-5 (float64): the top of the spectrum is dense, so a tighter residual can take
    # thousands of products from a random start while σ is already accurate to about 1e-10.
    return max(float(torch.finfo(dtype.to_real()).eps) ** 0.5, 1e-5)


def _lanczos_top_pair(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rmatvec: Callable[[torch.Tensor], torch.Tensor],
    v: torch.Tensor,
    rtol: float,
    maxiter: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top singular pair of a matrix-free operator on flat vectors, from the unit vector ``v``.

    Golub–Kahan–Lanczos bidiagonalization with full reorthogonalization, restarted from the
    top Ritz vector every ``_KRYLOV_STEPS`` steps: ``A V = U B`` with ``B`` upper bidiagonal,
    and for the top singular pair ``(x, σ, y)`` of ``B`` the residual of ``(U x, V y)`` is
    ``|β_k x_k|``. The returned pair is checked with two more products. ``maxiter`` bounds the
    number of products with ``A`` (each with one by ``Aᴴ``).

    Raises
    ------
    ConvergenceError
        The residual is still above ``rtol·σ`` after ``maxiter`` products.
    """
    products, residual = 0, float("inf")
    while products < maxiter:
        V, alphas, betas = [v], [], []
        U: list[torch.Tensor] = []
        p = matvec(v)
        for j in range(_KRYLOV_STEPS):
            if U:
                Um = torch.stack(U)
                p = p - (Um.conj() @ p) @ Um
            alpha = torch.linalg.vector_norm(p)
            U.append(p / alpha)
            alphas.append(alpha)
            w = rmatvec(U[-1]) - alpha * V[-1]
            Vm = torch.stack(V)
            w = w - (Vm.conj() @ w) @ Vm
            w = w - (Vm.conj() @ w) @ Vm  # twice is enough (Kahan, Parlett)
            beta = torch.linalg.vector_norm(w)
            betas.append(beta)
            products += 1
            if j == _KRYLOV_STEPS - 1 or products >= maxiter or not bool(beta > rtol * alpha):
                break
            V.append(w / beta)
            p = matvec(V[-1]) - beta * U[-1]
        k = len(alphas)
        B = torch.diag(torch.stack(alphas))
        if k > 1:
            B = B + torch.diag(torch.stack(betas[: k - 1]), 1)
        _, _, Yh = torch.linalg.svd(B.double())
        y = Yh[0].to(v.dtype)
        v = y @ torch.stack(V[:k])
        v = v / torch.linalg.vector_norm(v)
        Wv = matvec(v)
        sigma = torch.linalg.vector_norm(Wv)
        u = Wv / sigma
        residual = float(torch.linalg.vector_norm(rmatvec(u) - sigma * v) / sigma)
        if residual <= rtol:
            return u, v
    raise ConvergenceError(
        f"the top singular pair of the convolution did not reach the relative residual {rtol:.1e} "
        f"in {maxiter} products (reached {residual:.1e}); raise maxiter or tol",
        residuals=torch.tensor([residual]),
    )


def _refine_conv(
    weight: torch.Tensor,
    v: torch.Tensor,
    tol: float | None,
    maxiter: int | None,
    geometry: ConvGeometry,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top singular pair of the convolution to relative residual ``tol``, from ``v``
    ``(C_in, *spatial)``: power steps, then restarted Lanczos bidiagonalization."""
    rtol = conv_default_tol(weight.dtype) if tol is None else tol
    u, v, converged = _power_steps(
        lambda x: geometry.apply(weight, x[None])[0],
        lambda y: geometry.adjoint(weight, y[None])[0],
        v,
        rtol,
    )
    if converged:
        return u, v
    u, v = _lanczos_top_pair(
        lambda x: geometry.apply(weight, x.reshape(1, *geometry.in_shape)).flatten(),
        lambda y: geometry.adjoint(weight, y.reshape(1, *geometry.out_shape)).flatten(),
        v.flatten() / torch.linalg.vector_norm(v),
        rtol,
        default_maxiter(*geometry.shape) if maxiter is None else maxiter,
    )
    return u.reshape(geometry.out_shape), v.reshape(geometry.in_shape)


# Under torch.compile the refinement and G = ∂σ/∂W are custom operators, opaque to the
# compiler (their shapes come from the fake implementations): the data-dependent loop runs
# eagerly inside the compiled graph instead of breaking it at every residual test. Inductor
# compiles each run of traced operations between two opaque calls as a separate C++ kernel, so
# the refinement writes the stored vectors in place (a functional one makes the compiler copy
# them back after the graph: one more kernel) and only σ = Re⟨G, W⟩ and W/σ are traced.
@torch.library.custom_op(
    "torchsvd::spectral_norm_refine",
    mutates_args=("u", "v"),
    schema="(Tensor mat, Tensor(a!) u, Tensor(b!) v, float? tol, int? maxiter) -> ()",
)
def _refine_matrix_op(
    mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, tol: float | None, maxiter: int | None
) -> None:
    u_new, v_new = _refine_matrix(mat, v, tol, maxiter)
    u.copy_(u_new)
    v.copy_(v_new)


@_refine_matrix_op.register_fake
def _(
    mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, tol: float | None, maxiter: int | None
) -> None:
    return None


def _conv_op_args(geometry: ConvGeometry) -> list[object]:
    """The fields of ``geometry`` as the custom operator takes them (lists for tuples)."""
    fields = (getattr(geometry, f) for f in ConvGeometry.__dataclass_fields__)
    return [list(g) if isinstance(g, tuple) else g for g in fields]


def _geometry_from_op_args(*fields: object) -> ConvGeometry:
    """The inverse of `_conv_op_args`: a custom operator's flat arguments (its schema has no
    structured types) back as a `ConvGeometry`."""
    return ConvGeometry(*(tuple(f) if isinstance(f, list) else f for f in fields))  # type: ignore[arg-type]


_GEOMETRY_SCHEMA = (
    "bool transposed, int[] stride, int[] padding, int[] dilation, int groups, "
    "int[] output_padding, int[] pad, str padding_mode, int[] in_shape, int[] out_shape"
)


@torch.library.custom_op(
    "torchsvd::spectral_norm_refine_conv",
    mutates_args=("u", "v"),
    schema="(Tensor weight, Tensor(a!) u, Tensor(b!) v, float? tol, int? maxiter, "
    f"{_GEOMETRY_SCHEMA}) -> ()",
)
def _refine_conv_op(
    weight: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    tol: float | None,
    maxiter: int | None,
    *fields: object,
) -> None:
    u_new, v_new = _refine_conv(weight, v, tol, maxiter, _geometry_from_op_args(*fields))
    u.copy_(u_new)
    v.copy_(v_new)


@_refine_conv_op.register_fake
def _(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, *args: object) -> None:
    return None


@torch.library.custom_op(
    "torchsvd::spectral_norm_conv_gradient",
    mutates_args=(),
    schema=f"(Tensor weight, Tensor u, Tensor v, {_GEOMETRY_SCHEMA}) -> Tensor",
)
def _conv_gradient_op(
    weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, *fields: object
) -> torch.Tensor:
    geometry = _geometry_from_op_args(*fields)
    return geometry.kernel_gradient(weight, v[None], u[None])


@_conv_gradient_op.register_fake
def _(weight: torch.Tensor, *args: object) -> torch.Tensor:
    return torch.empty_like(weight)


@torch.library.custom_op(
    "torchsvd::spectral_norm_matrix_gradient",
    mutates_args=(),
    schema="(Tensor u, Tensor v, int dim, int[] shape) -> Tensor",
)
def _matrix_gradient_op(
    u: torch.Tensor, v: torch.Tensor, dim: int, shape: list[int]
) -> torch.Tensor:
    return _matrix_gradient(u, v, dim, shape)


@_matrix_gradient_op.register_fake
def _(u: torch.Tensor, v: torch.Tensor, dim: int, shape: list[int]) -> torch.Tensor:
    return u.new_empty(shape)


def _matrix_gradient(u: torch.Tensor, v: torch.Tensor, dim: int, shape: list[int]) -> torch.Tensor:
    """``∂/∂W Re uᴴ W_mat v = u vᴴ`` in the layout of the weight ``shape``, whose matrix
    ``W_mat`` has dimension ``dim`` first and the others flattened."""
    moved = [shape[dim], *shape[:dim], *shape[dim + 1 :]]
    # conj_physical, not a lazy conj view: inside a compiled graph the operator runs with the
    # dispatch key that resolves such views excluded, and the product would read v unconjugated.
    return torch.outer(u, v.conj_physical()).reshape(moved).movedim(0, dim).contiguous()


def _divisor(sigma: torch.Tensor, eps: float, max_norm: float | None) -> torch.Tensor:
    """What the weight is divided by: max(σ, eps), or max(1, max(σ, eps)/max_norm)."""
    sigma = sigma.clamp_min(eps)  # a zero weight stays zero instead of 0/0
    return sigma if max_norm is None else torch.clamp(sigma / max_norm, min=1.0)


class _SpectralNorm(nn.Module):
    """Parametrization W -> W / σ_1(W) (or W / max(1, σ_1/max_norm)), σ_1 by warm-started svds.

    σ_1 is that of the weight reshaped to a matrix, or, with a `ConvGeometry`, the operator norm
    of the convolution it defines.
    """

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
        geometry: ConvGeometry | None = None,
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
        self.geometry = geometry
        if geometry is not None:
            # Converge once at registration; u and v have the shapes of the layer's output and
            # input.
            # Converge once at registration, from a random start (as PyTorch's), drawn from the
            # global generator.
            start = torch.randn(geometry.in_shape, dtype=weight.dtype, device=weight.device)
            u, v = _refine_conv(weight.detach(), start / start.norm(), tol, maxiter, geometry)
            self.register_buffer("_u", u.contiguous())
            self.register_buffer("_v", v.contiguous())
        elif ndim > 1:
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

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            # A vector's only singular value is its norm: no iteration needed.
            sigma = torch.linalg.vector_norm(weight)
            return weight / _divisor(sigma, self.eps, self.max_norm)
        if torch.compiler.is_compiling():
            return self._compiled_forward(weight)
        geometry = self.geometry
        mat = weight if geometry is not None else self._as_matrix(weight)
        if self.training:
            with torch.no_grad():
                if geometry is None:
                    u, v = _refine_matrix(mat.detach(), self._v, self.tol, self.maxiter)
                else:
                    u, v = _refine_conv(mat.detach(), self._v, self.tol, self.maxiter, geometry)
                # In place, so that replicas sharing the buffers (DataParallel) see the update.
                self._u.copy_(u)
                self._v.copy_(v)
        # σ = Re uᴴ W v with u, v constant has gradient u vᴴ: the exact ∂σ_1/∂W at a converged
        # triplet (what svds' implicit backward gives for a loss of S alone), as cheap as PyTorch.
        # (uᴴ W v is real there up to rounding; Re keeps σ real for complex weights.)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        if geometry is None:
            sigma = torch.vdot(u, torch.mv(mat, v)).real
        else:
            # Re⟨u, A_W v⟩ is linear in W: it is Re⟨G, W⟩ with G its (constant) gradient, one
            # weight-gradient convolution of a single input.
            G = geometry.kernel_gradient(weight.detach(), v[None], u[None])
            sigma = (G.conj() * weight).sum().real
        return weight / _divisor(sigma, self.eps, self.max_norm)

    def _compiled_forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The forward as the custom operators: the same σ, W/σ and gradient, in place of the
        eager code that the compiler would trace."""
        geometry = self.geometry
        detached = weight.detach()
        if geometry is None:
            if self.training:
                mat = self._as_matrix(detached)
                _refine_matrix_op(mat, self._u, self._v, self.tol, self.maxiter)
            G = _matrix_gradient_op(self._u, self._v, self.dim, list(weight.shape))
        else:
            args = _conv_op_args(geometry)
            if self.training:
                _refine_conv_op(detached, self._u, self._v, self.tol, self.maxiter, *args)
            G = _conv_gradient_op(detached, self._u, self._v, *args)
        sigma = (G.conj() * weight).sum().real
        return weight / _divisor(sigma, self.eps, self.max_norm)

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
    input_shape: Sequence[int] | None = None,
) -> ModuleT:
    r"""Spectral normalisation of ``module.<name>``: a drop-in for PyTorch's parametrization.

    Registers a parametrization so that ``module.<name>`` is ``W / σ_1(W)`` (or, with
    ``max_norm=c``, ``W / max(1, σ_1(W)/c)``), where ``W`` is the stored weight reshaped to a
    matrix with dimension ``dim`` first. In training mode σ_1 is iterated from the stored singular
    vectors (power steps, then :func:`torchsvd.svds` with ``k=1`` if they do not suffice) until
    ``‖W v − σ u‖, ‖Wᴴu − σ v‖ <= tol·σ``; the gradient is exact. In evaluation mode the
    stored vectors are used, as in PyTorch. Real and complex weights (float32/float64,
    complex64/complex128) are supported.

    For a convolution (``Conv{1,2,3}d``, ``ConvTranspose{1,2,3}d``) with ``input_shape`` given,
    σ_1 is the true operator norm of the layer (without bias) as a linear map on inputs of that
    shape: its stride, padding (``'same'``/``'valid'`` too), dilation, groups, padding mode and
    ``output_padding`` included; the stored ``_u`` and ``_v`` then have the shapes of one
    output and one input. The normalised layer is 1-Lipschitz (``max_norm``-Lipschitz) on those
    inputs. Without ``input_shape`` a convolution is normalised, as by PyTorch, by the norm of
    its kernel reshaped to ``(C_out, C_in/groups·∏kernel_size)``: cheaper, but not the layer's
    norm. For ``groups=1`` and an output whose window lies inside the input it is a lower bound
    (that output's row block of the layer's matrix is the reshaped kernel), and the layer's norm
    can be up to √∏kernel_size times larger [3]_: the "normalised" layer is not 1-Lipschitz.

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
        Relative residual of the singular triplet; default that of :func:`torchsvd.svds`, and
        max(√eps, 1e-5) for a convolution with ``input_shape`` (its top spectrum is clustered;
        σ, second order in the residual, is then accurate to about rounding).
    maxiter : int, optional
        Iteration cap of :func:`torchsvd.svds`, or number of products of the Lanczos fallback of
        a convolution with ``input_shape`` (raises `torchsvd.ConvergenceError` beyond it).
    max_norm : float, optional
        Rescale only when σ_1 exceeds it (Lipschitz bound ``max_norm``) instead of always
        normalising to σ_1 = 1.
    input_shape : sequence of int, optional
        Convolutions only: the shape ``(C_in, *spatial)`` of one input, without the batch
        dimension (the operator norm does not depend on the batch). ``dim`` and ``name`` must
        then be left at their defaults.

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

    The true operator norm of a convolution on 3×16×16 inputs: the normalised layer maps the
    stored input direction to an output of norm 1.

    >>> conv = torchsvd.nn.spectral_norm(
    ...     torch.nn.Conv2d(3, 8, 3, padding=1).double(), input_shape=(3, 16, 16)
    ... )
    >>> sn = conv.parametrizations.weight[0]
    >>> v = sn._v[None]  # (1, 3, 16, 16): a unit input direction attaining the norm
    >>> out = torch.nn.functional.conv2d(v, conv.weight, padding=1)
    >>> bool(torch.isclose(out.norm(), torch.tensor(1.0, dtype=torch.float64)))
    True

    References
    ----------
    .. [1] T. Miyato et al., "Spectral Normalization for Generative Adversarial Networks",
           ICLR 2018.
    .. [2] PyTorch issue #12760 (spectral norm as a function).
    .. [3] Y. Tsuzuku, I. Sato, M. Sugiyama, "Lipschitz-Margin Training: Scalable
           Certification of Perturbation Invariance for Deep Neural Networks", NeurIPS 2018.
    .. [4] H. Sedghi, V. Gupta, P. M. Long, "The Singular Values of Convolutional Layers",
           ICLR 2019 (the exact spectrum of circular convolutions, by FFT).
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
    geometry = None
    if input_shape is not None:
        geometry = conv_geometry(module, tuple(input_shape))
        if name != "weight" or dim is not None:
            raise ValueError(
                "with input_shape the layer's own weight is normalised as a whole: leave name "
                f"and dim at their defaults, got name={name!r}, dim={dim!r}"
            )
    if dim is None:
        transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
        dim = 1 if isinstance(module, transposed) else 0
    parametrize.register_parametrization(
        module, name, _SpectralNorm(weight, dim, eps, tol, maxiter, max_norm, geometry)
    )
    return module
