"""Linear operators: a matrix known only through its products with blocks of vectors.

`svds` needs two things from a matrix ``A`` of shape ``(..., m, n)``: the products ``A @ X`` and
``Aᴴ @ Y`` with blocks of vectors, and — for gradients — a way to turn a low-rank cotangent
``Ā = L Rᴴ`` (rank ≤ 2k) into gradients of whatever ``A`` is made of. `LinearOperator` is that
interface; dense and sparse tensors are wrapped by `aslinearoperator`.

Gradients of an operator with parameters. The reverse rule of `svds` produces the cotangent of the
matrix as ``Ā = L Rᴴ``. The gradient of the loss with respect to a parameter θ of ``A(θ)`` is the
derivative of the scalar ``⟨Ā, A(θ)⟩ = Re tr(Āᴴ A(θ)) = Re Σ_j L[:, j]ᴴ A(θ) R[:, j]``, with
``Ā`` held fixed. That is one more call ``matmat(R)``, differentiated by autograd: no dense
``m × n`` matrix is ever formed.

Which tensors θ are: unless the operator declares them (``params=``), one product with a single
probe vector is traced when `svds` is called (`LinearOperator._resolved`). A torch function mode
records every tensor requiring grad that enters a torch call from outside the product (captured
by a closure, held by a module, global), and a walk of the autograd graph of the probe's output
from its ``grad_fn`` confirms which of them the output depends on; leaves reached by the walk
but hidden from the mode (a C++ extension) are added. Inspecting closures (``__closure__``,
``__self__``) instead would see neither the tensors held in objects and containers nor whether
they are used at all; the graph walk alone sees leaves only, never a non-leaf ``W = f(θ)``
computed outside, which must be an input of the autograd node for ``W.grad`` and
``torch.autograd.grad(loss, W)`` to work. A recorded tensor the output does not depend on was
dropped by the product (``detach``, ``no_grad``, ``.item()``, numpy): it is reported, never
ignored in silence.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._C import _functorch
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map_only

from torchsvd._errors import DegenerateGradientWarning
from torchsvd._space import Space
from torchsvd._validate import all_finite, check_int, check_matrix, compute_dtype

__all__ = ["LinearOperator", "aslinearoperator"]

_REAL = (torch.float32, torch.float64)
_SUPPORTED = (*_REAL, torch.complex64, torch.complex128)
_HIGHER = {torch.float32: torch.float64, torch.complex64: torch.complex128}


class LinearOperator:
    r"""A (batch of) matrices ``(..., m, n)`` given by their products with blocks of vectors.

    Parameters
    ----------
    shape : sequence of int
        ``(..., m, n)``: optional batch dimensions, then the matrix shape.
    matmat : callable
        ``matmat(X)`` with ``X`` of shape ``(..., n, p)`` returns ``A @ X``, shape ``(..., m, p)``.
        ``X`` may be a non-contiguous view.
    rmatmat : callable
        ``rmatmat(Y)`` with ``Y`` of shape ``(..., m, p)`` returns ``Aᴴ @ Y``, shape
        ``(..., n, p)``.
        It must be the adjoint of ``matmat`` (`svds` checks this on its first products).
    dtype : torch.dtype, optional
        float32, float64, complex64 or complex128: the dtype of the blocks ``matmat`` and
        ``rmatmat`` take and return. Default: the dtype of the first of ``params``, else the
        default dtype.
    device : torch.device or str, optional
        Default: the device of the first of ``params``, else the CPU.
    params : sequence of Tensor, optional
        The tensors the gradients of a loss of ``svds(op, k)`` reach. By default they are found
        by tracing one product with a probe vector when `svds` is called: every tensor
        requiring grad that ``matmat`` depends on — captured by a closure, the parameters and
        buffers of a module whose method or ``forward`` is the product, leaves or non-leaves
        (``W = f(θ)`` computed outside gets the gradient, and θ through it). A tensor requiring
        grad that ``matmat`` uses without autograd seeing it (``detach``, ``torch.no_grad``,
        ``.item()``, numpy) warns. Given, ``params`` overrides the tracing: exactly these
        tensors get gradients (``()``: none).
        ``matmat`` must be a differentiable torch function of them: gradients reach them
        through one extra differentiated call ``matmat(R)`` with ``2k`` columns (``rmatmat``
        is never differentiated).
    block_size : int, optional
        How many vectors the solver should multiply at once, when the operator knows better
        than the solver's default (which suits dense matrices): a sparse matrix, whose products
        are cheap next to orthogonalizing long vectors, prefers 2. 1 is accepted but costs
        more: a single vector cannot see a repeated singular value, so for k ≥ 2 `svds`
        checks the solve by a second one with a wider block (on a sparse 100000² matrix with
        10⁶ non-zeros, k = 10: 6.9 s against 1.1 s with 2).
    cheap_products : bool, default False
        The products cost little next to orthogonalizing vectors of the operator's length (a
        sparse matrix, a stencil): `svds` then runs block Lanczos on ``Aᴴ A`` with one basis
        of the short side, half the Gram–Schmidt of its default two-basis solver (real,
        unbatched operators; where ``σ_1/σ_k`` is too large for squaring, the default solver
        takes over, warm-started). Sparse and dense tensors set it: on dense matrices, whose
        products are not cheap, the one basis was measured faster too.

    Examples
    --------
    A diagonal-plus-low-rank matrix ``diag(d) + a bᵀ`` that is never formed; gradients flow to
    the tensors the products capture, ``d``, ``a`` and ``b``:

    >>> import torch
    >>> from torchsvd import LinearOperator, spectral_norm
    >>> d = torch.linspace(1.0, 2.0, 500, dtype=torch.float64, requires_grad=True)
    >>> a = torch.full((500,), 0.01, dtype=torch.float64, requires_grad=True)
    >>> b = torch.ones(500, dtype=torch.float64, requires_grad=True)
    >>> op = LinearOperator(
    ...     (500, 500),
    ...     lambda X: d[:, None] * X + a[:, None] * (b @ X),
    ...     lambda Y: d[:, None] * Y + b[:, None] * (a @ Y),
    ...     dtype=torch.float64,
    ... )
    >>> sigma = spectral_norm(op)
    >>> sigma.backward()
    >>> dense = torch.diag(d.detach()) + torch.outer(a.detach(), b.detach())
    >>> bool(torch.isclose(sigma, torch.linalg.matrix_norm(dense, 2)))
    True
    >>> d.grad.shape, a.grad.shape
    (torch.Size([500]), torch.Size([500]))

    One product and autograd for its adjoint: `from_function`.
    """

    def __init__(
        self,
        shape: Sequence[int],
        matmat: Callable[[torch.Tensor], torch.Tensor],
        rmatmat: Callable[[torch.Tensor], torch.Tensor],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        params: Sequence[torch.Tensor] | None = None,
        block_size: int | None = None,
        cheap_products: bool = False,
    ) -> None:
        shape = tuple(shape)
        if len(shape) < 2 or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(
                f"shape must be a sequence (..., m, n) of at least 2 non-negative ints, got {shape}"
            )
        if not callable(matmat) or not callable(rmatmat):
            raise TypeError(
                "matmat and rmatmat must be callables X -> A @ X and Y -> Aᴴ @ Y, got "
                f"{type(matmat).__name__} and {type(rmatmat).__name__}"
            )
        # None: the gradient inputs are traced when svds is called (`_resolved`).
        self._traced = params is None
        params = () if params is None else tuple(params)
        for p in params:
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params must be tensors, got {type(p).__name__}")
        if dtype is None:
            dtype = params[0].dtype if params else torch.get_default_dtype()
        if dtype not in _SUPPORTED:
            raise TypeError(
                "LinearOperator dtype must be float32, float64, complex64 or complex128, "
                f"got {dtype}"
            )
        if device is None:
            device = params[0].device if params else torch.device("cpu")
        self.shape = torch.Size(shape)
        self.matmat = matmat
        self.rmatmat = rmatmat
        self.dtype = dtype
        self.device = torch.device(device)
        self.params = params
        if block_size is not None:
            check_int(block_size, "block_size", minimum=1)
        self.block_size = block_size
        if not isinstance(cheap_products, bool):
            raise TypeError(f"cheap_products must be a bool, got {type(cheap_products).__name__}")
        self.cheap_products = cheap_products
        # The precision the products are rounded to: lower than `dtype` for a promoted view.
        self.product_dtype = dtype
        # The m-space and the n-space: where the solvers' vectors live (`torchsvd._space`).
        self.spaces = (Space(self.shape[-2]), Space(self.shape[-1]))

    @classmethod
    def from_function(
        cls,
        f: Callable[[torch.Tensor], torch.Tensor],
        in_shape: int | Sequence[int],
        *,
        out_shape: int | Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> LinearOperator:
        r"""The operator of a linear map ``f`` of batches, its adjoint by autograd.

        ``f`` maps a batch ``x`` of shape ``(p, *in_shape)`` to ``f(x)`` of shape
        ``(p, *out_shape)``, each sample independently and linearly: a convolution without
        bias, a Fourier transform, a linear layer, any composition of them. The matrix is
        ``(prod(out_shape), prod(in_shape))``, row-major flattenings of the samples. Its
        adjoint is the vector-Jacobian product of ``f`` (for a linear map, ``Aᴴ y`` is the
        gradient of ``⟨y, f(x)⟩`` with respect to ``x``, at any ``x``), so one map is all
        that is written; gradients of a loss of `svds` reach the tensors ``f`` uses (a module's
        parameters) as for any operator.

        Parameters
        ----------
        f : callable
            A torch function or ``nn.Module``, linear, differentiable with respect to its
            input, complex-linear for complex dtypes.
        in_shape : int or sequence of int
            The shape of one input sample.
        out_shape : int or sequence of int, optional
            The shape of one output sample; found by a call of ``f`` when omitted.
        dtype : torch.dtype, optional
            Default: the dtype of the first parameter of a module ``f``, else the default
            dtype.
        device : torch.device or str, optional
            Default: the device of the first parameter of a module ``f``, else the CPU.

        Returns
        -------
        LinearOperator
            Of shape ``(prod(out_shape), prod(in_shape))``. A product with ``p`` vectors is
            one call of ``f`` on a batch of ``p``; an adjoint product is one call and one
            backward of ``f`` (about twice the cost).

        Raises
        ------
        ValueError
            ``f`` is not linear, within a relative tolerance of ``√eps`` of the dtype, on a
            randomised check (``f(a x + b y) = a f(x) + b f(y)`` and ``f(0) = 0``), or it
            returns the wrong shape or dtype, or its output does not depend on its input
            through autograd. An affine ``f`` (a layer with a bias) is refused with the fix:
            the linear part of a module with a ``bias`` is
            ``lambda x: torch.func.functional_call(layer, {"bias": None}, (x,))``.

        Examples
        --------
        The exact operator norm of a convolution on 8×8 images, stride and padding included,
        and its gradient with respect to the kernel:

        >>> import torch, torchsvd
        >>> _ = torch.manual_seed(0)
        >>> conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False, dtype=torch.float64)
        >>> op = torchsvd.LinearOperator.from_function(conv, (3, 8, 8))
        >>> op.shape
        torch.Size([64, 192])
        >>> sigma = torchsvd.spectral_norm(op)
        >>> sigma.backward()
        >>> conv.weight.grad.shape
        torch.Size([4, 3, 3, 3])
        >>> columns = torch.eye(192, dtype=torch.float64).reshape(192, 3, 8, 8)
        >>> dense = conv(columns).detach().reshape(192, 64).mT  # column j is conv(e_j)
        >>> bool(torch.isclose(sigma, torch.linalg.matrix_norm(dense, 2)))
        True
        """
        if not callable(f):
            raise TypeError(f"f must be a callable (a function or module), got {type(f).__name__}")
        n_shape = _sample_shape(in_shape, "in_shape")
        first = next(iter(f.parameters()), None) if isinstance(f, torch.nn.Module) else None
        if dtype is None:
            dtype = first.dtype if first is not None else torch.get_default_dtype()
        if device is None:
            device = first.device if first is not None else torch.device("cpu")
        if dtype not in _SUPPORTED:
            raise TypeError(
                "from_function dtype must be float32, float64, complex64 or complex128, "
                f"got {dtype}"
            )
        m_shape = _linear_map_output(f, n_shape, dtype, torch.device(device))
        if out_shape is not None and _sample_shape(out_shape, "out_shape") != m_shape:
            raise ValueError(
                f"f maps samples of shape {n_shape} to {m_shape}, not to out_shape "
                f"{_sample_shape(out_shape, 'out_shape')}"
            )
        m, n = math.prod(m_shape), math.prod(n_shape)

        def matmat(X: torch.Tensor) -> torch.Tensor:
            p = X.shape[-1]
            return f(X.mT.reshape(p, *n_shape)).reshape(p, m).mT

        def rmatmat(Y: torch.Tensor) -> torch.Tensor:
            # torch.func.vjp, not autograd.grad: it works under no_grad, inference mode and
            # function transforms alike.
            p = Y.shape[-1]
            x = torch.zeros((p, *n_shape), dtype=Y.dtype, device=Y.device)
            (grad,) = torch.func.vjp(f, x)[1](Y.mT.reshape(p, *m_shape))
            return grad.reshape(p, n).mT

        return cls((m, n), matmat, rmatmat, dtype=dtype, device=device)

    @property
    def batch_shape(self) -> torch.Size:
        """The leading (batch) dimensions of `shape`."""
        return self.shape[:-2]

    @property
    def H(self) -> LinearOperator:
        """The adjoint ``Aᴴ``, shape ``(..., n, m)``: a view whose products are ours, swapped.

        Its `param_grads` turn a cotangent ``L Rᴴ`` of ``Aᴴ`` into that of ``A``, ``R Lᴴ``.
        """
        return _Adjoint(self)

    def matmat_rows(self, X: torch.Tensor) -> torch.Tensor:
        """``(A Xᵀ)ᵀ`` for a block of row vectors ``X`` ``(..., p, n)``: row i is ``A x_i``.

        The output of `matmat` is checked: shape, dtype, and finiteness.

        Raises
        ------
        ValueError
            `matmat` returned a block of the wrong shape or dtype, or non-finite values.
        """
        out = self.matmat(X.mT)
        self._check(out, "matmat", self.spaces[0].local, X.shape[-2])
        # Row-major rows: MKL's GEMMs of the solvers ran up to 2× slower on transposed ones.
        return row_major(out.mT)

    def rmatmat_rows(self, Y: torch.Tensor) -> torch.Tensor:
        """``(Aᴴ Yᵀ)ᵀ`` for row vectors ``Y`` ``(..., p, m)``, checked as `matmat_rows`."""
        out = self.rmatmat(Y.mT)
        self._check(out, "rmatmat", self.spaces[1].local, Y.shape[-2])
        return row_major(out.mT)

    def _check(self, out: object, name: str, rows: int, cols: int) -> None:
        want = (*self.batch_shape, rows, cols)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"{name} of an operator of shape {tuple(self.shape)} returned {got} for a block "
                f"of {cols} vectors; expected shape {want}"
            )
        if out.dtype != self.product_dtype:
            raise ValueError(
                f"{name} returned dtype {out.dtype}; the operator declares {self.product_dtype}"
            )
        self._check_finite(out, name)

    def _check_finite(self, out: torch.Tensor, name: str) -> None:
        """Raise where the product ``name`` returned NaN or infinity.

        An operator whose products are split over processes decides collectively instead
        (``torchsvd._distributed``): a process that raised alone would leave the others
        waiting in a collective.
        """
        if not all_finite(out):
            raise ValueError(f"{name} returned non-finite values (NaN or infinity)")

    def promoted(self) -> LinearOperator:
        """A float32 (complex64) operator seen in float64 (complex128): bases and inner products.

        Each block is rounded to float32 for the product (which stays a float32 product: the
        cost of the operator is unchanged) and the result is returned in float64. Why: in
        float32 the inner products behind orthogonalization and projection err by about eps·√N
        on vectors of length N; at N = 10⁵ (a sparse 100000² matrix) that is 3e-5, the Ritz
        vectors lost orthogonality by as much, and the residual stalled there, above the
        default tolerance 6.5e-6. With float64 bases only the rounding of the products
        themselves remains. (The sparse solver, `torchsvd._gram_lanczos`, unwraps this view: its
        one basis stays float32, with inner products summed in float64.) float64 and
        complex128 operators are returned unchanged.
        """
        if self.dtype not in _HIGHER:
            return self
        return _Promoted(self)

    def scaled(self, scale: torch.Tensor) -> LinearOperator:
        """The operator times ``scale`` ``(...,)`` (one factor per batch element): a view.

        Its products are ours times the factor; its `param_grads` take the cotangent of the
        scaled operator and return the gradients of our parameters.
        """
        return _Scaled(self, scale)

    def _with_params(self, params: Sequence[torch.Tensor]) -> LinearOperator:
        """The same operator built on ``params`` (the unwrapped tensors under torch.func)."""
        return self

    def _resolved(self) -> LinearOperator:
        """This operator with `params` the tensors its gradients reach: declared, or traced.

        Traced (module docstring) on one product with a single probe vector, once per call of
        `svds`: a closure may capture a variable that is rebound between calls, so the result
        is not cached. Without grad mode there is nothing to trace.

        Warns
        -----
        DegenerateGradientWarning
            A tensor requiring grad enters the product, but its output does not depend on it.
        """
        if not self._traced:
            return self
        resolved = copy.copy(self)
        resolved.params = _gradient_inputs(self) if torch.is_grad_enabled() else ()
        resolved._traced = False
        return resolved

    def _magnitude(self) -> torch.Tensor:
        """The size of the operator, per batch element ``(...,)``: ``‖A x‖`` for a random unit x.

        Only its order of magnitude is used (to scale extreme operators into a safe range).
        """
        gen = torch.Generator(device=self.device).manual_seed(1)
        x = torch.randn(
            (*self.batch_shape, 1, self.shape[-1]),
            generator=gen,
            dtype=self.dtype,
            device=self.device,
        )
        x = x / x.norm(dim=-1, keepdim=True)
        # The largest entry, not the norm: a norm squares, and 1e-170² underflows to zero.
        return torch.linalg.vector_norm(self.matmat_rows(x), float("inf"), dim=(-2, -1))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype}, "
            f"device={self.device}, params={len(self.params)})"
        )

    def param_grads(
        self, left: torch.Tensor, right: torch.Tensor, needs: Sequence[bool]
    ) -> tuple[torch.Tensor | None, ...]:
        """Gradients of `params` for the cotangent ``Ā = left @ rightᴴ`` of the matrix.

        ``left`` is ``(..., m, r)``, ``right`` is ``(..., n, r)``; ``needs[i]`` says whether
        ``params[i]`` needs a gradient. Differentiates ``Re Σ conj(left) * matmat(right)``, which
        equals ``⟨Ā, A⟩`` (module docstring).
        """
        if not any(needs):
            return tuple(None for _ in self.params)
        params = [p for p, need in zip(self.params, needs, strict=True) if need]
        with torch.enable_grad():
            # Each parameter enters the product as a fresh leaf of the same value: the partial
            # derivatives come out (W = f(θ) and θ both listed: the caller's backward adds the
            # path through W), and no hook or retained grad of a parameter fires twice.
            # Under torch.func the parameters are differentiated as they are (a transform
            # allows no new leaves).
            wrapped = any(_functorch.is_functorch_wrapped_tensor(p) for p in params)
            standins = params if wrapped else [p.detach().requires_grad_() for p in params]
            with _Substituted(params, standins):
                inner = (left.conj() * self.matmat(right)).real.sum()
            # A parameter that reaches the product out of sight of the substitution (through
            # a custom autograd Function, a C++ extension) is differentiated as it is too.
            fresh = _reached(inner.grad_fn, standins, through=True)[0] if not wrapped else set()
            kept = _reached(inner.grad_fn, params, through=False)[0] - fresh
            wanted = [standins[i] for i in sorted(fresh)] + [params[i] for i in sorted(kept)]
            # Retained: what lies behind a parameter differentiated as it is, the caller's
            # backward still goes through.
            found = torch.autograd.grad(inner, wanted, retain_graph=True) if wanted else ()
        grads: list[torch.Tensor | None] = [None] * len(params)
        for i, g in zip([*sorted(fresh), *sorted(kept)], found, strict=True):
            previous = grads[i]  # a parameter seen both ways: the sum of the two paths
            grads[i] = g if previous is None else previous + g
        each = iter(grads)
        return tuple(next(each) if need else None for need in needs)


class _DenseOperator(LinearOperator):
    """A dense tensor ``(..., m, n)``; its cotangent is the product ``L Rᴴ`` itself."""

    def __init__(self, A: torch.Tensor) -> None:
        self.matrix = A
        matmat, rmatmat = _dense_products(A.detach())
        # Products dominate a dense solve, yet one basis of the short side (`_gram_lanczos`)
        # still saves Gram–Schmidt: 0.60–1.05× the two-basis solver's time on 3000–10000-long
        # real matrices, k = 1–30, flat and decaying spectra (docs/performance.md).
        super().__init__(
            A.shape,
            matmat,
            rmatmat,
            dtype=A.dtype,
            device=A.device,
            params=(A,),
            cheap_products=True,
        )

    def param_grads(
        self, left: torch.Tensor, right: torch.Tensor, needs: Sequence[bool]
    ) -> tuple[torch.Tensor | None, ...]:
        return (left @ right.mH if needs[0] else None,)

    def _with_params(self, params: Sequence[torch.Tensor]) -> LinearOperator:
        return self if params[0] is self.matrix else _DenseOperator(params[0])

    def scaled(self, scale: torch.Tensor) -> LinearOperator:
        # Scale the matrix once, so that the products themselves never under- or overflow.
        factor = scale.to(device=self.device, dtype=self.dtype.to_real())[..., None, None]
        return _Scaled(self, scale, _dense_products(self.matrix.detach() * factor))

    def _magnitude(self) -> torch.Tensor:
        # The largest |entry| (of a real or imaginary part: within √2 of it, as good an order
        # of magnitude) by amax and amin: 3.5 ms on 4000² float32 where the ∞-norm took 44 ms,
        # a tenth of a Krylov solve. NaN and ±∞ propagate, as they did.
        M = self.matrix.detach()
        dims: tuple[int, ...] = (-2, -1)
        if M.is_complex():
            M, dims = torch.view_as_real(M.conj() if M.is_conj() else M), (-3, -2, -1)
        return torch.maximum(M.amax(dim=dims), -M.amin(dim=dims))


Product = Callable[[torch.Tensor], torch.Tensor]


def _dense_products(A: torch.Tensor) -> tuple[Product, Product]:
    """``X ↦ A X`` and ``Y ↦ Aᴴ Y`` for blocks of a few vectors, fast on CPU.

    Blocks arrive as transposed views of row-major ``(p, n)`` tensors: ``Xᵀ Aᵀ`` is then a
    product of two row-major operands, the fastest layout for a skinny GEMM with MKL, and
    ``Aᴴ Y = (Yᴴ A)ᴴ`` conjugates the small block, never ``A`` (a conjugate view of ``A``
    would be copied).

    On a CPU with several threads, MKL runs a GEMM with so few columns on one thread, which
    streams ``A`` at a fraction of the memory bandwidth, whatever the thread count. So a large
    2-D ``A`` is cut into as many blocks as there are threads — rows for ``A X``, columns for
    ``Aᴴ Y``, both views, no copy and no reduction — and multiplied by one batched product,
    which ATen spreads over the threads, one single-threaded GEMM each, about twice as fast
    (measured in docs/topk.md). The rows or columns left over by the division take one small
    product more. A large real float32 ``A`` goes to oneDNN instead (`_onednn_products`),
    about twice as fast again.
    """
    plain = (lambda X: (X.mT @ A.mT).mT, lambda Y: (Y.mH @ A).mH)
    fast = _onednn_products(A, *plain)
    if fast is not None:
        return fast
    parts = torch.get_num_threads()
    if A.device.type != "cpu" or A.ndim != 2 or parts < 2 or not A.is_contiguous():
        return plain
    m, n = A.shape
    # Below about 400² the threads cost more than they bring (docs/topk.md).
    if m * n < 2**17 or min(m, n) < 64 * parts:
        return plain
    r, c = m // parts, n // parts
    row_blocks = A[: parts * r].view(parts, r, n)
    col_blocks = A[:, : parts * c].unflatten(1, (parts, c)).permute(1, 0, 2)  # (parts, m, c)

    def matmat(X: torch.Tensor) -> torch.Tensor:
        Xt = X.mT
        out = (Xt @ row_blocks.mT).permute(1, 0, 2).reshape(Xt.shape[0], parts * r)
        if parts * r < m:
            out = torch.cat([out, Xt @ A[parts * r :].mT], dim=-1)
        return out.mT

    def rmatmat(Y: torch.Tensor) -> torch.Tensor:
        Yh = Y.mH
        out = (Yh @ col_blocks).permute(1, 0, 2).reshape(Yh.shape[0], parts * c)
        if parts * c < n:
            out = torch.cat([out, Yh @ A[:, parts * c :]], dim=-1)
        return out.mH

    return matmat, rmatmat


def _onednn_products(
    A: torch.Tensor, matmat: Product, rmatmat: Product
) -> tuple[Product, Product] | None:
    """``X ↦ A X`` and ``Y ↦ Aᵀ Y`` by oneDNN for a large real float32 ``A`` on CPU, else None.

    torch's CPU wheels multiply a block of a few vectors with MKL, which on the 2-core AMD
    machine of docs/performance.md streamed ``A`` at half the memory bandwidth: a block of 2
    with a 4000² ``A`` took 4.9–6.0 ms (one thread), against 2.0–2.8 ms for oneDNN's
    inner-product kernel (`torch.ops.mkldnn._linear_pointwise`, the one torch's compiler calls
    for ``linear``), and 2.3–2.8 against 1.7–2.2 ms for one vector; on two threads it also beat
    the row blocks of `_dense_products`. The kernel takes ``A`` and ``Aᵀ`` as views, so nothing
    is copied. It is private to torch: `_onednn_works` checks it once against a float64
    product. Blocks that autograd or `torch.func` follow take ``matmat`` and ``rmatmat``: the
    kernel has no derivative, and autograd passes through it with only a warning, leaving no
    gradient (a silent wrong answer). Below 2²⁰ entries its fixed cost (about 10 µs) is more
    than it saves.
    """
    if not (
        A.device.type == "cpu"
        and A.dtype == torch.float32
        and A.ndim == 2
        and A.numel() >= 2**20
        and (A.is_contiguous() or A.mT.is_contiguous())
        and _onednn_works()
    ):
        return None
    linear = torch.ops.mkldnn._linear_pointwise
    At = A.mT

    def fast_matmat(X: torch.Tensor) -> torch.Tensor:
        if _tracked(X):
            return matmat(X)
        out: torch.Tensor = linear(X.mT, A, None, "none", [], "")
        return out.mT

    def fast_rmatmat(Y: torch.Tensor) -> torch.Tensor:
        if _tracked(Y):
            return rmatmat(Y)
        out: torch.Tensor = linear(Y.mT, At, None, "none", [], "")
        return out.mT

    return fast_matmat, fast_rmatmat


def _tracked(X: torch.Tensor) -> bool:
    """Whether autograd or a `torch.func` transform follows ``X``."""
    return X.requires_grad or _functorch.is_functorch_wrapped_tensor(X)


@functools.cache
def _onednn_works() -> bool:
    """Whether oneDNN's inner product exists here and agrees with a float64 product on both
    layouts of ``A`` (probed once per process)."""
    if not (
        torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    ):
        return False
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(67, 45, generator=gen)
    X = torch.randn(3, 45, generator=gen)
    Y = torch.randn(3, 67, generator=gen)
    try:
        got = [
            torch.ops.mkldnn._linear_pointwise(Z, W, None, "none", [], "")
            for Z, W in ((X, A), (Y, A.mT))
        ]
    except (RuntimeError, TypeError):  # a torch whose private kernel differs
        return False
    want = [X.double() @ A.double().mT, Y.double() @ A.double()]
    return all(
        g.shape == w.shape
        and g.dtype == torch.float32
        and bool(((g.double() - w).abs() <= 1e-4 * (1 + w.abs())).all())
        for g, w in zip(got, want, strict=True)
    )


def row_major(X: torch.Tensor) -> torch.Tensor:
    """``X`` ``(..., a, b)`` made contiguous, fast where it is a transposed view of a few rows.

    torch's copy of such a view (the blocks the solvers and the products hand each other) ran at
    3–7 ns per element: on a block of 2 × 10⁵, 0.4–0.7 ms, a quarter of a sparse product with
    it (one thread). Where one side has at most 8 entries, the copy goes slice by slice along
    it, each slice a contiguous read and a strided write or the reverse: 0.06 ms for 2 × 10⁵,
    0.12–0.28 ms for 4 × 10⁵. Tensors that autograd or `torch.func` track (not the solvers'
    blocks, which run without them) keep the plain copy: writing into a fresh tensor is not
    a transform they can follow.
    """
    a, b = X.shape[-2:]
    if X.is_contiguous() or not X.mT.is_contiguous() or min(a, b) > 8 or _tracked(X):
        return X.contiguous()
    out = torch.empty(X.shape, dtype=X.dtype, device=X.device)
    if b <= a:
        for j in range(b):
            out[..., j] = X[..., j]
    else:
        for i in range(a):
            out[..., i, :] = X[..., i, :]
    return out


def _csr32(A: torch.Tensor) -> torch.Tensor:
    """``A`` (sparse COO, CSR or CSC) as CSR, with int32 indices where they fit.

    With int32 indices and a contiguous block, torch's CSR product was a fifth to a third
    faster than with int64 indices or a transposed block (100000², 10⁶ non-zeros, one thread).
    """
    with warnings.catch_warnings():  # torch's note that CSR support is in beta
        warnings.simplefilter("ignore", UserWarning)
        csr = A.to_sparse_csr()
    if max(csr.shape) >= 2**31 or csr.values().numel() >= 2**31:
        return csr
    return torch.sparse_csr_tensor(
        csr.crow_indices().to(torch.int32),
        csr.col_indices().to(torch.int32),
        csr.values(),
        csr.shape,
        check_invariants=False,  # the indices are torch's own
    )


def _transposed_csr(A: torch.Tensor) -> torch.Tensor:
    """The CSR matrix ``Aᵀ`` of a CSR matrix ``A``, with ``A``'s index dtype.

    A counting sort of the entries by column: a stable argsort of the column indices orders
    each new row by the old row index, so the result is a valid CSR matrix. torch's own
    conversion of the transpose (a CSC view) to CSR took 70–100 ms on 10⁶ non-zeros (one thread),
    a tenth of a whole `svds` solve; this takes 30 ms.
    """
    crow, col, values = A.crow_indices(), A.col_indices(), A.values()
    m, n = A.shape
    rows = torch.repeat_interleave(torch.arange(m, dtype=col.dtype, device=col.device), crow.diff())
    order = torch.argsort(col, stable=True)
    new_crow = torch.zeros(n + 1, dtype=crow.dtype, device=crow.device)
    new_crow[1:] = torch.bincount(col, minlength=n).cumsum(0)
    with warnings.catch_warnings():  # torch's note that CSR support is in beta
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            new_crow, rows[order], values[order], (n, m), check_invariants=False
        )


class _SparseOperator(LinearOperator):
    """A 2-D sparse COO or CSR tensor; its gradient has the sparsity pattern of the tensor.

    The gradient of a loss with respect to the stored values only is ``Ā`` restricted to the
    pattern: value ``(i, j)`` gets ``Σ_r L[i, r] R[j, r]``, O(nnz·r) work (a sampled product,
    `torch.sparse.sampled_addmm`: on 10⁶ non-zeros and r = 20, 0.03 s where gathering the rows of
    ``L`` and ``R`` took 0.8 s).
    """

    def __init__(self, A: torch.Tensor) -> None:
        if A.layout == torch.sparse_coo:
            A = A.coalesce()
        self.matrix = A
        # CSR copies of A and Aᵀ for the products; that of A also samples the gradient at the
        # pattern.
        product = _csr32(A.detach())
        rproduct = _transposed_csr(product)
        self._product = product
        super().__init__(
            A.shape,
            lambda X: product @ row_major(X),
            lambda Y: rproduct @ row_major(Y),
            dtype=A.dtype,
            device=A.device,
            params=(A,),
            # A sparse product costs little next to orthogonalizing against a basis of long
            # vectors, so a narrower block than the dense default pays (docs/topk.md): two
            # vectors, the fewest that see a repeated singular value, were faster than four
            # on a 100000² matrix with 10⁶ non-zeros (fewer vectors to converge, and each
            # orthogonalized against less), with two bases and again with one (3 and 4 slower).
            block_size=2,
            cheap_products=True,
        )
        self._values = A.detach().values()

    def _magnitude(self) -> torch.Tensor:
        values = self._values
        if values.numel() == 0:
            return torch.zeros((), dtype=values.dtype, device=values.device)
        return values.abs().amax()

    def param_grads(
        self, left: torch.Tensor, right: torch.Tensor, needs: Sequence[bool]
    ) -> tuple[torch.Tensor | None, ...]:
        if not needs[0]:
            return (None,)
        # (L Rᴴ) at the pattern, in the order of A's values (row-major, as the CSR copy and a
        # coalesced COO tensor keep them): a sampled product, no nnz × r gathers.
        values = torch.sparse.sampled_addmm(
            self._product, left.contiguous(), right.conj().mT, beta=0.0
        ).values()
        A = self.matrix
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
            if A.layout == torch.sparse_coo:
                grad = torch.sparse_coo_tensor(
                    A.indices(), values, A.shape, is_coalesced=True, check_invariants=False
                )
            else:
                grad = torch.sparse_csr_tensor(
                    A.crow_indices(), A.col_indices(), values, A.shape, check_invariants=False
                )
        return (grad,)


class _Adjoint(LinearOperator):
    """``Aᴴ`` of a base operator ``A``; its products are the base's, checked as the base's."""

    def __init__(self, base: LinearOperator) -> None:
        shape = (*base.batch_shape, base.shape[-1], base.shape[-2])
        super().__init__(
            shape,
            base.rmatmat,
            base.matmat,
            dtype=base.dtype,
            device=base.device,
            params=base.params,
            block_size=base.block_size,
            cheap_products=base.cheap_products,
        )
        self.product_dtype = base.product_dtype
        self.spaces = (base.spaces[1], base.spaces[0])
        self.base = base

    def _resolved(self) -> LinearOperator:
        return _rebased(self, self.base._resolved())

    @property
    def H(self) -> LinearOperator:
        return self.base

    def matmat_rows(self, X: torch.Tensor) -> torch.Tensor:
        return self.base.rmatmat_rows(X)

    def rmatmat_rows(self, Y: torch.Tensor) -> torch.Tensor:
        return self.base.matmat_rows(Y)

    def param_grads(
        self, left: torch.Tensor, right: torch.Tensor, needs: Sequence[bool]
    ) -> tuple[torch.Tensor | None, ...]:
        # (L Rᴴ)ᴴ = R Lᴴ: the cotangent of A is the adjoint of that of Aᴴ.
        return self.base.param_grads(right, left, needs)


class _Promoted(LinearOperator):
    """A float32 (complex64) base seen in float64 (complex128), see `LinearOperator.promoted`."""

    def __init__(self, base: LinearOperator) -> None:
        low, high = base.dtype, _HIGHER[base.dtype]
        super().__init__(
            base.shape,
            lambda X: base.matmat(X.to(low)).to(high),
            lambda Y: base.rmatmat(Y.to(low)).to(high),
            dtype=high,
            device=base.device,
            params=base.params,
            block_size=base.block_size,
            cheap_products=base.cheap_products,
        )
        self.product_dtype = base.product_dtype
        self.spaces = base.spaces
        self.base = base

    def _resolved(self) -> LinearOperator:
        return _rebased(self, self.base._resolved())

    def matmat_rows(self, X: torch.Tensor) -> torch.Tensor:
        return self.base.matmat_rows(X.to(self.base.dtype)).to(self.dtype)

    def rmatmat_rows(self, Y: torch.Tensor) -> torch.Tensor:
        return self.base.rmatmat_rows(Y.to(self.base.dtype)).to(self.dtype)

    def param_grads(
        self, left: torch.Tensor, right: torch.Tensor, needs: Sequence[bool]
    ) -> tuple[torch.Tensor | None, ...]:
        low = self.base.dtype
        return self.base.param_grads(left.to(low), right.to(low), needs)


class _Scaled(LinearOperator):
    """``c A`` for a base ``A`` and one factor ``c`` per batch element (`LinearOperator.scaled`).

    ``products``: the products of ``c A`` when the base can form them directly (a dense matrix
    scaled once); otherwise the base's products are scaled.
    """

    def __init__(
        self,
        base: LinearOperator,
        scale: torch.Tensor,
        products: tuple[Product, Product] | None = None,
    ) -> None:
        factor = scale.to(device=base.device, dtype=base.dtype.to_real())[..., None, None]
        self._factor = factor
        self._own = products is not None
        if products is None:
            products = (lambda X: base.matmat(X) * factor, lambda Y: base.rmatmat(Y) * factor)
        super().__init__(
            base.shape,
            *products,
            dtype=base.dtype,
            device=base.device,
            params=base.params,
            block_size=base.block_size,
            cheap_products=base.cheap_products,
        )
        self.product_dtype = base.product_dtype
        self.spaces = base.spaces
        self.base = base

    def _resolved(self) -> LinearOperator:
        return _rebased(self, self.base._resolved())

    def matmat_rows(self, X: torch.Tensor) -> torch.Tensor:
        if self._own:
            return super().matmat_rows(X)
        return self.base.matmat_rows(X) * self._factor

    def rmatmat_rows(self, Y: torch.Tensor) -> torch.Tensor:
        if self._own:
            return super().rmatmat_rows(Y)
        return self.base.rmatmat_rows(Y) * self._factor

    def param_grads(
        self, left: torch.Tensor, right: torch.Tensor, needs: Sequence[bool]
    ) -> tuple[torch.Tensor | None, ...]:
        # ⟨Ā, c A(θ)⟩ = ⟨c Ā, A(θ)⟩ for a real factor c.
        return self.base.param_grads(left * self._factor.to(left.dtype.to_real()), right, needs)


def aslinearoperator(A: object) -> LinearOperator:
    """Wrap a dense tensor ``(..., m, n)``, a 2-D sparse COO/CSR tensor, or return an operator.

    Dense float16/bfloat16 tensors are converted to float32 (compute dtype); the caller casts
    results back.

    Raises
    ------
    TypeError
        ``A`` is none of the above, or has an unsupported dtype (integer, bool; complex for a
        sparse tensor).
    ValueError
        ``A`` is a batched sparse tensor, or contains NaN or infinity.
    """
    if isinstance(A, LinearOperator):
        return A
    if not isinstance(A, torch.Tensor):
        raise TypeError(
            "A must be a torch.Tensor (dense, sparse COO or CSR) or a torchsvd.LinearOperator, "
            f"got {type(A).__name__}"
        )
    if A.layout in (torch.sparse_coo, torch.sparse_csr):
        if A.ndim != 2:
            raise ValueError(f"sparse A must be 2-D (m, n), got shape {tuple(A.shape)}")
        if A.dtype not in _REAL:
            raise TypeError(f"sparse A must be float32 or float64 (real), got {A.dtype}")
        values = A.coalesce().values() if A.layout == torch.sparse_coo else A.values()
        if not all_finite(values):
            raise ValueError("A contains NaN or infinite entries; its SVD is undefined")
        return _SparseOperator(A)
    if A.layout != torch.strided:
        raise TypeError(f"A has unsupported layout {A.layout}; expected strided, sparse_coo, csr")
    check_matrix(A, check_finite=A.device.type != "meta")  # meta tensors have no values
    dtype = compute_dtype(A.dtype)
    return _DenseOperator(A.to(dtype))


def _sample_shape(shape: object, name: str) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, int) else shape
    if (
        not isinstance(dims, Sequence)
        or not dims
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims)
    ):
        raise ValueError(f"{name} must be a positive int or a sequence of them, got {shape!r}")
    return tuple(dims)


def _linear_map_output(
    f: Callable[[torch.Tensor], torch.Tensor],
    in_shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[int, ...]:
    """The output shape of one sample of ``f``, after a randomised check that it is linear.

    One call on the batch ``(x, y, a x + b y, 0)`` with random ``x``, ``y`` and scalars ``a``,
    ``b`` (complex for a complex dtype: that checks complex linearity, which the adjoint by
    autograd needs). The tolerance √eps relative to ``|a| ‖f(x)‖ + |b| ‖f(y)‖`` is far above
    the rounding of a linear map and far below the error of a bias or a nonlinearity on
    Gaussian inputs.
    """
    gen = torch.Generator(device=device).manual_seed(3)
    x, y = torch.randn((2, *in_shape), generator=gen, dtype=dtype, device=device)
    a, b = torch.randn(2, generator=gen, dtype=dtype, device=device)
    batch = torch.stack([x, y, a * x + b * y, torch.zeros_like(x)])
    out, vjp = torch.func.vjp(f, batch)[:2]  # the typing admits has_aux's third item
    if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != 4:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"f must map a batch (p, *in_shape) to a batch (p, *out_shape); for p = 4 samples of "
            f"shape {in_shape} it returned {got}"
        )
    if out.dtype != dtype:
        raise ValueError(f"f returned dtype {out.dtype} for inputs of dtype {dtype}")
    out = out.detach()
    fx, fy, fxy, f0 = out
    tol = float(torch.finfo(dtype.to_real()).eps) ** 0.5
    size = float(a.abs() * fx.norm() + b.abs() * fy.norm())
    offset, defect = float(f0.norm()), float((fxy - a * fx - b * fy).norm())
    if offset > tol * size:
        raise ValueError(
            f"f is not linear: f(0) ≠ 0 (‖f(0)‖ = {offset:.3g}, against ‖f(x)‖ ≈ "
            f"{size / float(a.abs() + b.abs()):.3g}); an affine map, such as a layer with a "
            "bias? Pass its linear part: for a module with a bias, "
            'lambda x: torch.func.functional_call(layer, {"bias": None}, (x,)); for any f, '
            "lambda x: f(x) - f(torch.zeros_like(x[:1]))"
        )
    if defect > tol * size:
        raise ValueError(
            f"f is not linear: ‖f(a x + b y) − a f(x) − b f(y)‖ = {defect:.3g} against "
            f"|a| ‖f(x)‖ + |b| ‖f(y)‖ = {size:.3g} for random x, y, a, b"
            + (" (complex a, b: f must be complex-linear)" if dtype.is_complex else "")
        )
    # The adjoint the products will use: ⟨f(x), w⟩ = ⟨x, vjp(w)⟩, which fails when f hides
    # its dependence on x from autograd (detach, numpy).
    w = torch.randn(out.shape, generator=gen, dtype=dtype, device=device)
    (back,) = vjp(w)
    lhs, rhs = (out.conj() * w).sum(), (batch.conj() * back.detach()).sum()
    if float((lhs - rhs).abs()) > tol * float(out.norm() * w.norm()):
        raise ValueError(
            "the vector-Jacobian product of f is not its adjoint (⟨f(x), w⟩ ≠ ⟨x, vjp(w)⟩): "
            "f hides how its output depends on its input from autograd (detach, "
            "torch.no_grad, numpy), so the adjoint cannot be derived; write both products "
            "as a LinearOperator(shape, matmat, rmatmat) instead"
        )
    return tuple(out.shape[1:])


def _rebased(view: Any, base: LinearOperator) -> Any:
    """``view`` (a view with a ``base`` operator) on ``base``, whose gradient inputs it shares.

    The products of the view call the old base's products, which are the new base's too (a
    resolved operator is a copy that differs in its `params` only).
    """
    if base is view.base:
        return view
    rebased = copy.copy(view)
    rebased.base, rebased.params, rebased._traced = base, base.params, False
    return rebased


# Calls whose outputs do not depend on the values of their tensor arguments.
_VALUE_FREE = (
    torch.zeros_like,
    torch.ones_like,
    torch.empty_like,
    torch.full_like,
    torch.rand_like,
    torch.randn_like,
    torch.randint_like,
    torch.Tensor.new_zeros,
    torch.Tensor.new_ones,
    torch.Tensor.new_empty,
    torch.Tensor.new_full,
)


def _carries_values(out: object) -> bool:
    """Whether a call returned values (tensors, floats), not metadata (shapes, dtypes, flags)."""
    return any(
        isinstance(x, (torch.Tensor, float, complex)) and not isinstance(x, bool)
        for x in tree_flatten(out)[0]
    )


class _Recorder(TorchFunctionMode):
    """Records the tensors requiring grad that enter torch calls from outside the traced code."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[int, torch.Tensor] = {}
        # Every tensor made inside, kept alive so that no outside tensor can reuse its id.
        self.made: dict[int, torch.Tensor] = {}

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if _carries_values(out) and not any(func is f for f in _VALUE_FREE):
            for t in tree_flatten((args, kwargs))[0]:
                if isinstance(t, torch.Tensor) and t.requires_grad and id(t) not in self.made:
                    self.inputs.setdefault(id(t), t)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.made.setdefault(id(t), t)
        return out


class _Substituted(TorchFunctionMode):
    """Replaces given tensors by others in the arguments of every torch call."""

    def __init__(self, old: Sequence[torch.Tensor], new: Sequence[torch.Tensor]) -> None:
        super().__init__()
        # By id: the old tensors are alive, so no other tensor can have their ids.
        self.pairs = {id(a): b for a, b in zip(old, new, strict=True)}

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        args, kwargs = tree_map_only(
            torch.Tensor, lambda t: self.pairs.get(id(t), t), (tuple(args), kwargs or {})
        )
        return func(*args, **kwargs)


def _reached(
    root: Any, tensors: Sequence[torch.Tensor], *, through: bool
) -> tuple[set[int], list[torch.Tensor]]:
    """Which ``tensors`` the autograd graph from node ``root`` reaches, and the other leaves.

    A non-leaf is reached at its ``grad_fn``, a leaf at its ``AccumulateGrad`` node. With
    ``through=False`` the walk stops at a reached tensor (what lies behind it reaches the
    output through it); leaves reached otherwise are returned.
    """
    nodes: dict[Any, list[int]] = {}
    leaves: dict[int, int] = {}
    for i, t in enumerate(tensors):
        if t.grad_fn is None:
            leaves[id(t)] = i
        else:  # a node with several outputs (split, unbind) stands for all of them
            nodes.setdefault(t.grad_fn, []).append(i)
    hit: set[int] = set()
    others: list[torch.Tensor] = []
    seen: set[Any] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in nodes:
            hit.update(nodes[node])
            if not through:
                continue
        variable = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf
        if isinstance(variable, torch.Tensor):
            if id(variable) in leaves:
                hit.add(leaves[id(variable)])
            elif not any(variable is t for t in others):
                others.append(variable)
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return hit, others


def _gradient_inputs(op: LinearOperator) -> tuple[torch.Tensor, ...]:
    """The tensors requiring grad that ``op.matmat`` depends on (module docstring)."""
    _check_transforms()
    shape = (*op.batch_shape, 1, op.shape[-1])
    if op.device.type == "meta":  # no values, and no generator
        probe = torch.empty(shape, dtype=op.dtype, device=op.device)
    else:
        gen = torch.Generator(device=op.device).manual_seed(2)
        probe = torch.randn(shape, generator=gen, dtype=op.dtype, device=op.device)
    recorder = _Recorder()
    with torch.enable_grad(), recorder:
        out = op.matmat(probe.mT)
    if (
        isinstance(out, torch.Tensor)
        and torch.autograd.forward_ad.unpack_dual(out).tangent is not None
    ):
        raise NotImplementedError(_TRANSFORMS)
    candidates = list(recorder.inputs.values())
    if not isinstance(out, torch.Tensor) or (not candidates and out.grad_fn is None):
        return ()  # nothing requires grad (or a malformed product, which svds reports)
    used, _ = _reached(out.grad_fn, candidates, through=True)
    dropped = [t for i, t in enumerate(candidates) if i not in used]
    if dropped:
        shapes = ", ".join(str(tuple(t.shape)) for t in dropped)
        warnings.warn(
            f"LinearOperator: matmat uses {len(dropped)} tensor(s) requiring grad, of shape "
            f"{shapes}, that its output does not depend on through autograd (detached, used "
            "under torch.no_grad, or converted by .item() or numpy), so they get no gradient "
            "from svds. Make the product a differentiable torch function of them, or pass "
            "params= to name the tensors to differentiate (params=() for none), which also "
            "silences this warning.",
            DegenerateGradientWarning,
            stacklevel=4,
        )
    inputs = [t for i, t in enumerate(candidates) if i in used]
    return (*inputs, *_reached(out.grad_fn, inputs, through=False)[1])


_TRANSFORMS = (
    "svds supports torch.func.vmap and forward-mode AD (torch.func.jvp, torch.autograd."
    "forward_ad) for dense tensors only, not for a LinearOperator whose products capture "
    "transformed tensors; see docs/topk.md (torch.func)."
)


def _check_transforms() -> None:
    """Forward mode and vmap see a matrix-free operator only through its products: refuse."""
    if {i.key() for i in retrieve_all_functorch_interpreters()} & {
        TransformType.Jvp,
        TransformType.Vmap,
    }:
        raise NotImplementedError(_TRANSFORMS)
