r"""`svds`, `spectral_norm` and `pca` of a matrix sharded with torch.distributed (a DTensor).

The Krylov solver and the implicit backward touch ``A`` only through the products ``A X`` and
``Aᴴ Y`` with blocks of ``b`` vectors (`LinearOperator`), and their vectors only through local
combinations and contractions over the vectors' length (`torchsvd._space`). On a 1-D device
mesh of ``P`` ranks, rank ``r`` holds

* ``Shard(-2)`` (rows): the block ``A_r`` (m_r × n) and, of every vector of the m-space (the
  U basis, ``A V``, the CG vectors of the backward), its own m_r entries; the n-space vectors
  are replicated. ``A X = A_r X`` is local; ``Aᴴ Y = Σ_r A_rᴴ Y_r`` is local work followed by
  one all-reduce of n × b.
* ``Shard(-1)`` (columns): the mirror image, the n-space split: ``A X = Σ_r A_r X_r`` (one
  all-reduce of m × b), ``Aᴴ Y = A_rᴴ Y`` local.
* ``Replicate``: every rank holds ``A``; everything is local, no communication.

So per block step the only collective whose size grows with a dimension is the all-reduce of
one product, of the side ``A`` does not shard (n·b for rows, m·b for columns); the sharded
side's vectors never travel. Every inner product, norm and Gram matrix of sharded vectors (the
Gram–Schmidt of the new U block against the basis, its Cholesky QR, the residual norms, the
dot products of CG) is a local product followed by an all-reduce of the small result: at most
d × b numbers (d ≤ max(k + 10 b, 60), the basis size), independent of m, n and P [2]_. The
replicated small matrices (the projected B, the Ritz values, the CG coefficients) are then the
same on every rank, so every decision (convergence, restarts, CG steps) is too: this relies on
the all-reduce returning the same result on every rank (gloo's and NCCL's do) and on
deterministic local arithmetic. Random vectors of the split side are drawn whole from the same
seeded generator and each rank keeps its entries, so they are those of one process and the
generators stay in step. ``A`` itself is never sent, only its products with blocks of vectors
(for a small problem, those of the identity: below).

Small problems (min(m, n) at most the basis size), which a single process decomposes densely,
take the products of the short side's identity in blocks of ``b`` vectors
(`torchsvd._lanczos._dense_split`), so their collectives are those of block steps too. Where the
short side is the unsharded one (a tall ``A`` by rows), they are orthonormalized in the sharded
long side's space (reductions of at most s × b numbers, s = min(m, n)) for a Rayleigh–Ritz on the
whole short side, and ``A`` is not formed on any rank. Where it is the sharded one (a tall ``A``
by columns), each block is one all-reduce of (long side) × b; the blocks are ``A``'s columns,
which every rank then holds (as it would a basis of s vectors) and decomposes densely.

Outputs follow ``A``: the side ``A`` shards is returned as this rank's block (``Shard(-2)``:
``U`` is ``Shard(-2)`` with A's row blocks, ``S`` and ``Vh`` replicated; ``Shard(-1)``: ``Vh``
is ``Shard(-1)`` with A's column blocks, ``U`` and ``S`` replicated). Gradients: a sharded
output passes back the gradient of this rank's block, a replicated one the gradient of the one
global loss, the same on every rank (DTensor's convention). The cotangent of ``A`` is
``L Rᴴ``, ``L`` in the m-space and ``R`` in the n-space, each held as its space is, so the
gradient of the local shard ``L_r Rᴴ`` (or ``L R_rᴴ``) is formed locally: ``A.grad`` is a
DTensor with A's placements, and no rank ever holds more of it than its own shard.

References
----------
.. [1] J. Baglama, L. Reichel, "Augmented implicitly restarted Lanczos bidiagonalization
       methods", SIAM J. Sci. Comput. 27(1), 2005.
.. [2] V. Hernández, J. E. Román, A. Tomás, "A parallel variant of the Gram–Schmidt process
       with reorthogonalization", ParCo 2005 (the distributed Lanczos of SLEPc).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeGuard

import torch

from torchsvd._operators import LinearOperator, _dense_products
from torchsvd._space import Space
from torchsvd._validate import compute_dtype

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import DTensor

__all__ = ["CollectiveCount", "count_collectives", "is_dtensor", "pca", "svds"]


def is_dtensor(A: object) -> TypeGuard[DTensor]:
    """Whether ``A`` is a DTensor; False without importing torch.distributed.

    A DTensor can only exist once ``torch.distributed.tensor`` is imported, so the check costs a
    dictionary lookup for every other input, and nothing where torch.distributed is unavailable.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(A, module.DTensor)


@dataclass
class CollectiveCount:
    """Collectives issued by a sharded `svds`: how many, and the elements' bytes, per purpose.

    The purposes (keys of ``calls`` and ``bytes``): ``"product"``, the all-reduce that
    completes a product with ``A`` (``Aᴴ Y`` for ``Shard(-2)``, ``A X`` for ``Shard(-1)``);
    ``"inner"``, the all-reduce of the inner products and norms of vectors of the sharded side
    (coefficient blocks of at most d × b, Gram matrices b × b, norms); ``"gather"``, the
    all-gather of a sharded warm start; ``"setup"``, the column means of `pca` and the size probe.
    ``bytes`` and ``largest`` (one collective) count the size of each collective's result (an
    all-reduce of n × b counts n·b·itemsize, an all-gather its gathered block, padding
    included), not what a particular algorithm of the backend puts on the wire; ``sizes``
    lists every collective's ``(purpose, bytes)`` in order.
    """

    calls: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    largest: int = 0
    sizes: list[tuple[str, int]] = field(default_factory=list)

    def add(self, kind: str, t: torch.Tensor) -> None:
        size = t.numel() * t.element_size()
        self.calls[kind] = self.calls.get(kind, 0) + 1
        self.bytes[kind] = self.bytes.get(kind, 0) + size
        self.largest = max(self.largest, size)
        self.sizes.append((kind, size))


_COUNTERS: list[CollectiveCount] = []


@contextmanager
def count_collectives() -> Iterator[CollectiveCount]:
    """Count the collectives of the sharded products issued inside the ``with`` block."""
    counter = CollectiveCount()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.remove(counter)


@dataclass(frozen=True)
class _Layout:
    """How a matrix is split: the sharded dimension (-2, -1 or None) and every rank's extent.

    ``deferred`` holds the verdict of this rank's local products since the last collective
    (whether one returned NaN or infinity), not yet shared: the next collective carries it.
    """

    mesh: DeviceMesh
    group: ProcessGroup
    dim: int | None
    sizes: tuple[int, ...]
    rank: int
    deferred: list[torch.Tensor] = field(default_factory=list, compare=False, repr=False)

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    def take(self, t: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """This rank's part of a replicated tensor along ``dim``."""
        return t.narrow(dim, self.offset, self.sizes[self.rank])

    def all_reduce(self, t: torch.Tensor, kind: str, largest: bool = False) -> torch.Tensor:
        """The sum (``largest``: the maximum) of ``t`` over the ranks, in place if contiguous.

        ``kind``: its purpose, as `CollectiveCount` counts it.
        """
        import torch.distributed as dist

        t = t.contiguous()
        op = dist.ReduceOp.MAX if largest else dist.ReduceOp.SUM
        if not self.deferred:
            for counter in _COUNTERS:
                counter.add(kind, t)
            dist.all_reduce(_real(t), op=op, group=self.group)
            return t
        # A pending verdict rides on this collective as one more element (no extra latency);
        # its sum (or maximum) over the ranks is the same everywhere, and so is the decision.
        values = _real(t).reshape(-1)
        buffer = torch.cat([values, self.deferred.pop().to(values.dtype).reshape(1)])
        for counter in _COUNTERS:
            counter.add(kind, buffer)
        dist.all_reduce(buffer, op=op, group=self.group)
        values.copy_(buffer[:-1])
        self._verdict(buffer[-1])
        return t

    def defer(self, out: torch.Tensor) -> None:
        """Note whether the local product ``out`` is finite, for the next collective to share."""
        bad = ~torch.isfinite(out).all()  # a tensor: no wait for the device here
        self.deferred.append(bad if not self.deferred else self.deferred.pop() | bad)

    def settle(self) -> None:
        """Share a pending verdict now (one all-reduce of one number), before a gather or a return.

        Every rank runs the same products and collectives, so whether a verdict is pending is
        the same on every rank: they all issue this collective, or none does.
        """
        import torch.distributed as dist

        if not self.deferred:
            return
        flag = self.deferred.pop().to(torch.float32).reshape(1)
        for counter in _COUNTERS:
            counter.add("inner", flag)
        dist.all_reduce(flag, group=self.group)
        self._verdict(flag[0])

    def _verdict(self, flag: torch.Tensor) -> None:
        if bool(flag > 0):
            raise ValueError(
                "a product of the sharded A with a block of vectors returned NaN or infinity on "
                "at least one rank, although A's entries are finite: they are too large for the "
                "products in its dtype; scale A down (svds(c·A) has singular values c·σ)"
            )

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """The blocks ``t`` (..., size_r, p) of all ranks, stacked along dim -2 in rank order.

        Uneven blocks are padded to the largest one: one collective of P·max(size_r)·p.
        """
        import torch.distributed as dist

        self.settle()
        tallest = max(self.sizes)
        rows = t.movedim(-2, 0)  # (size_r, ..., p): the gather stacks along dim 0
        padded = rows.new_zeros((tallest, *rows.shape[1:]))
        padded[: rows.shape[0]] = rows
        out = padded.new_empty((len(self.sizes) * tallest, *rows.shape[1:]))
        for counter in _COUNTERS:
            counter.add("gather", out)
        dist.all_gather_single(_real(out), _real(padded), group=self.group)
        parts = [out[r * tallest : r * tallest + s] for r, s in enumerate(self.sizes)]
        return torch.cat(parts).movedim(0, -2)


_SUPPORTED = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _real(t: torch.Tensor) -> torch.Tensor:
    """A real view of ``t`` for the collectives (the same memory)."""
    return torch.view_as_real(t) if t.is_complex() else t


def _layout(A: DTensor) -> tuple[_Layout, torch.Tensor]:
    """The layout of ``A`` and its local block in the compute dtype; checks on every rank.

    Every rank must reach the same verdict (a rank that raised alone would leave the others
    waiting in the next collective), so the local checks are exchanged first: one all-gather
    of two numbers per rank.
    """
    import torch.distributed as dist
    from torch.distributed.tensor import Replicate, Shard

    mesh = A.device_mesh
    if mesh.ndim != 1:
        raise ValueError(
            f"torchsvd supports DTensors on a 1-D device mesh, got a {mesh.ndim}-D mesh of shape "
            f"{tuple(mesh.shape)}; flatten it or redistribute A onto one dimension"
        )
    if A.ndim < 2:
        raise ValueError(f"A must have shape (..., m, n), got a {A.ndim}-D DTensor")
    placement = A.placements[0]
    dim: int | None
    if isinstance(placement, Replicate):
        dim = None
    elif type(placement) is Shard and placement.dim % A.ndim >= A.ndim - 2:
        dim = placement.dim % A.ndim - A.ndim
    else:
        raise ValueError(
            f"A is a DTensor with placement {placement}; supported: Shard(-2) (rows), "
            "Shard(-1) (columns) or Replicate() of a (..., m, n) matrix (Partial: reduce it "
            "first; a sharded batch dimension: use plain tensors per rank)"
        )
    local = A.to_local()
    if local.dtype not in (torch.float16, torch.bfloat16, *_SUPPORTED):
        raise TypeError(
            f"A must be floating point or complex (float16 to complex128), got {local.dtype}"
        )
    local = local.detach().to(compute_dtype(local.dtype))
    group = mesh.get_group(0)
    rank = mesh.get_local_rank(0)
    size = local.shape[dim] if dim is not None else 0
    # On the device of the shards: NCCL gathers CUDA tensors only.
    nonfinite = int(not bool(torch.isfinite(local).all()))
    mine = torch.tensor([size, nonfinite], device=local.device)
    every = mine.new_empty(mesh.size(0) * 2)
    dist.all_gather_single(every, mine, group=group)
    sizes = tuple(int(s) for s in every[0::2].tolist())
    if bool(every[1::2].any()):
        raise ValueError("A contains NaN or infinite entries; its SVD is undefined")
    if dim is not None and sum(sizes) != A.shape[dim]:
        raise ValueError(
            f"A's local shards along dimension {dim} have sizes {sizes}, which do not add up "
            f"to its global size {A.shape[dim]}"
        )
    return _Layout(mesh, group, dim, sizes, rank), local


class _SplitSpace(Space):
    """Vectors split like ``A``'s sharded dimension: this rank holds its block of entries.

    Contractions are local products followed by one all-reduce of the small result (a
    coefficient block of p×q, p norms), the same on every rank.
    """

    split = True

    def __init__(self, layout: _Layout) -> None:
        super().__init__(sum(layout.sizes))
        self.layout = layout

    @property
    def local(self) -> int:
        return self.layout.sizes[self.layout.rank]

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        return self.layout.all_reduce(t.clone(), "inner") if t.numel() else t

    def norm(self, X: torch.Tensor) -> torch.Tensor:
        # Partial sums of squares: the operators the solvers see are scaled into a range
        # where squares neither under- nor overflow (`torchsvd._topk._safe_scale`).
        return self.reduce(torch.linalg.vector_norm(X, dim=-1) ** 2).sqrt()

    def any(self, t: torch.Tensor) -> bool:
        flag = torch.tensor([float(bool(t.any()))], dtype=torch.float64, device=t.device)
        return bool(self.reduce(flag) > 0)

    def take(self, t: torch.Tensor) -> torch.Tensor:
        return self.layout.take(t, -1)

    def qr_rows(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classical Gram–Schmidt, row by row, repeated until a pass keeps most of the row.

        The fallback of Cholesky QR for ill-conditioned blocks, with ``|R_ii|`` the norm of
        what is left of row i. A pass that keeps at least 1/√2 of the row leaves it orthogonal
        to the previous ones to working precision (Daniel, Gragg, Kaufman and Stewart); one
        that keeps less (a row nearly dependent on the previous ones) is repeated on the
        normalized remainder, at most `_PASSES` times, so that even a remainder of rounding
        comes out orthonormal (Householder QR gives the same guarantee, but needs whole
        vectors). Each pass reduces one inner product of at most p entries and one norm [2]_.
        A row that vanishes altogether (``|R_ii| = 0``) is zero;
        `torchsvd._lanczos._orthonormalize` replaces it.
        """
        rows = torch.zeros_like(W)
        kept = torch.zeros(W.shape[:-1], dtype=W.dtype.to_real(), device=W.device)
        tiny = torch.finfo(kept.dtype).tiny
        for i in range(W.shape[-2]):
            done = rows[..., :i, :]
            size = self.norm(W[..., i : i + 1, :])  # (..., 1)
            row = W[..., i : i + 1, :] / size.clamp_min(tiny).unsqueeze(-1)
            for _ in range(_PASSES if i else 0):
                row = row - self.dot(row, done) @ done
                share = self.norm(row)
                size = size * share
                row = row / share.clamp_min(tiny).unsqueeze(-1)
                if bool((share >= _KEEP).all()):
                    break
            kept[..., i] = size[..., 0]
            rows[..., i : i + 1, :] = torch.where(size.unsqueeze(-1) > 0, row, 0.0)
        return rows, kept


_PASSES = 4  # Gram–Schmidt passes per row at most (rounding is removed in two or three)
_KEEP = 0.5**0.5


class _ShardedOperator(LinearOperator):
    """A DTensor (optionally centred) as a `LinearOperator` on its local block (module doc).

    The products take and return the vectors of the sharded side as this rank's entries (its
    `spaces` say which side is split). ``center``: the operator is ``A − 1μ`` with the column
    means ``μ = 1ᵀA / m`` (`torchsvd.pca`), whose correction joins the collective the product
    has anyway. The parameter is ``A`` itself; `param_grads` forms this rank's block of the
    cotangent ``L Rᴴ`` from this rank's rows of the split factor and returns it as a DTensor
    placed like ``A``.
    """

    def __init__(self, A: DTensor, center: bool = False) -> None:
        layout, local = _layout(A)
        self.layout, self.matrix, self.center = layout, A, center
        m = A.shape[-2]
        matmat, rmatmat = _dense_products(local)
        mean = None
        if center:
            sums = local.sum(dim=-2, keepdim=True)  # (..., 1, n or n_r)
            mean = (layout.all_reduce(sums, "setup") if layout.dim == -2 else sums) / m
        self.mean = mean

        def a_x(X: torch.Tensor) -> torch.Tensor:  # A X, or its rows here (Shard(-2))
            return matmat(X) if mean is None else matmat(X) - mean @ X

        def ah_y(Y: torch.Tensor) -> torch.Tensor:  # Aᴴ Y, or the partial sum of its rows here
            if mean is None:
                return rmatmat(Y)
            return rmatmat(Y) - mean.mH @ Y.sum(dim=-2, keepdim=True)

        if layout.dim == -2:
            products = (a_x, lambda Y: layout.all_reduce(ah_y(Y), "product"))
        elif layout.dim == -1:
            products = (lambda X: layout.all_reduce(a_x(X), "product"), ah_y)
        else:
            products = (a_x, ah_y)
        super().__init__(A.shape, *products, dtype=local.dtype, device=local.device, params=(A,))
        if layout.dim == -2:
            self.spaces = (_SplitSpace(layout), self.spaces[1])
        elif layout.dim == -1:
            self.spaces = (self.spaces[0], _SplitSpace(layout))

    def _check_finite(self, out: torch.Tensor, name: str) -> None:
        # The product completed by an all-reduce is the same on every rank, and so is the check
        # of it; the local one (A X of rows, Aᴴ Y of columns) is decided at the next collective.
        local = {-2: "matmat", -1: "rmatmat", None: None}[self.layout.dim]
        if name == local:
            self.layout.defer(out)
        else:
            super()._check_finite(out, name)

    def _magnitude(self) -> torch.Tensor:
        # ‖A x‖_∞ for a random unit x, as `LinearOperator._magnitude`, the same on every rank.
        gen = torch.Generator(device=self.device).manual_seed(1)
        right = self.spaces[1]
        x = right.randn((*self.batch_shape, 1), gen, self.dtype, self.device)
        x = x / right.norm(x).unsqueeze(-1)
        # The largest entry (0 on a rank whose shard of A x is empty, which has none).
        entries = self.matmat_rows(x).abs().flatten(-2)
        size = torch.cat([entries, entries.new_zeros((*entries.shape[:-1], 1))], dim=-1).amax(-1)
        if self.layout.dim is None:
            return size
        return self.layout.all_reduce(size, "setup", largest=True)

    def param_grads(
        self, left: torch.Tensor, right: torch.Tensor, needs: Sequence[bool]
    ) -> tuple[torch.Tensor | None, ...]:
        from torch.distributed.tensor import DTensor

        self.layout.settle()  # the backward's last local product, if no collective followed it
        if not needs[0]:
            return (None,)
        if self.center:
            # ⟨L Rᴴ, C dA⟩ = ⟨(C L) Rᴴ, dA⟩ with C = I − 11ᵀ/m (`torchsvd._pca`).
            sums = self.spaces[0].reduce(left.sum(dim=-2, keepdim=True))
            left = left - sums / self.shape[-2]
        A = self.matrix
        # The DTensor of A's placements, shape and strides, built here: DTensor's own backward
        # of to_local would infer the global strides as if the shards were of equal size.
        return (
            DTensor.from_local(
                (left @ right.mH).to(A.dtype),
                A.device_mesh,
                A.placements,
                run_check=False,
                shape=A.shape,
                stride=A.stride(),
            ),
        )


def _wrap(t: torch.Tensor, layout: _Layout, dim: int | None) -> DTensor:
    """A result as a DTensor: this rank's block along ``dim`` (sharded like A), or replicated."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    if dim is None:
        return DTensor.from_local(t, layout.mesh, [Replicate()], run_check=False)
    shape = list(t.shape)
    shape[dim] = sum(layout.sizes)
    stride = tuple(math.prod(shape[i + 1 :]) for i in range(t.ndim))
    return DTensor.from_local(
        t,
        layout.mesh,
        [Shard(dim % t.ndim)],
        run_check=False,
        shape=torch.Size(shape),
        stride=stride,
    )


def _start(v0: torch.Tensor | None, layout: _Layout) -> torch.Tensor | None:
    """A DTensor warm start as the replicated tensor `svds` takes (others pass through)."""
    if not is_dtensor(v0):
        return v0
    from torch.distributed.tensor import Replicate, Shard

    placement = v0.placements[0]
    local = v0.to_local().detach()
    if isinstance(placement, Replicate):
        return local
    if type(placement) is Shard and placement.dim % v0.ndim == v0.ndim - 1 and layout.dim == -1:
        return layout.all_gather(local.unsqueeze(-1)).squeeze(-1)  # (..., n_r, 1) stacked
    raise ValueError(
        f"v0 is a DTensor with placement {placement}; expected Replicate(), or Shard(-1) "
        "like the columns of a column-sharded A"
    )


def _outputs(
    result: tuple[torch.Tensor, torch.Tensor, torch.Tensor], A: DTensor, layout: _Layout
) -> tuple[DTensor, DTensor, DTensor]:
    U, S, Vh = result
    if A.dtype != U.dtype and A.dtype in (torch.float16, torch.bfloat16):
        U, S, Vh = U.to(A.dtype), S.to(A.dtype), Vh.to(A.dtype)
    return (
        _wrap(U, layout, -2 if layout.dim == -2 else None),
        _wrap(S, layout, None),
        _wrap(Vh, layout, -1 if layout.dim == -1 else None),
    )


def svds(
    A: DTensor,
    k: int,
    *,
    tol: float | None,
    maxiter: int | None,
    v0: torch.Tensor | None,
    method: str = "auto",
) -> tuple[DTensor, DTensor, DTensor]:
    """`torchsvd.svds` of a DTensor (module docstring): DTensor outputs placed like ``A``.

    The sharded operator takes the Krylov forward (``method="dense"`` raises, as for any
    operator: the Gram-matrix path of a dense tensor needs ``A`` on one rank); small problems
    are solved without forming ``A`` (module docstring).
    """
    from torchsvd._topk import svds as solve  # here, not above: _topk dispatches to us

    op = _ShardedOperator(A)
    result = solve(op, k, tol=tol, maxiter=maxiter, v0=_start(v0, op.layout), method=method)
    op.layout.settle()  # a last local product that no collective followed
    return _outputs(result, A, op.layout)


def pca(
    A: DTensor,
    k: int,
    *,
    center: bool,
    tol: float | None,
    maxiter: int | None,
    v0: torch.Tensor | None,
) -> tuple[DTensor, DTensor, DTensor]:
    """`torchsvd.pca` of a DTensor: the centred operator over the sharded products."""
    from torchsvd._topk import svds as solve  # here, not above: _topk dispatches to us

    op = _ShardedOperator(A, center=center)
    result = solve(op, k, tol=tol, maxiter=maxiter, v0=_start(v0, op.layout))
    op.layout.settle()  # a last local product that no collective followed
    return _outputs(result, A, op.layout)
