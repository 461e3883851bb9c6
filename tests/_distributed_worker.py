"""One rank of the torch.distributed tests (tests/test_distributed.py starts P of these).

Run as ``python _distributed_worker.py`` with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set.
Every rank builds the same full matrices from seeds, shards them, runs every check and compares
its own shards with a single-process `torchsvd.svds` of the full matrix. It prints one line per
failed check and exits with status 1 if there was any; the process group is always destroyed.
"""

from __future__ import annotations

import datetime
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

import torchsvd
from torchsvd import _distributed
from torchsvd.testing import matrix_with_singular_values

F32, F64, C128 = torch.float32, torch.float64, torch.complex128
M, N, K = 157, 97, 3  # min(m, n) above the largest basis (83): the Krylov path, not the dense one
SPECTRUM = [5.0, 4.0, 3.0, 1.0, 0.9, 0.8, 0.5]
COLLECTIVE_TIMEOUT = 40.0  # seconds; tests/test_distributed.py allows a whole group more


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu(), b.detach().cpu()  # the references are computed on the CPU
    return float((a - b).norm() / b.norm())


def _weights(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


class Rank:
    def __init__(self, mesh: DeviceMesh) -> None:
        self.mesh = mesh
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.failures: list[str] = []
        # Shard sizes of the uneven split, when a check chooses them (`check_empty_rank`).
        self.uneven: tuple[int, ...] | None = None

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        if not ok:
            self.failures.append(f"rank {self.rank}: {name} {detail}")

    def bounds(self, extent: int, even: bool) -> tuple[int, ...]:
        """Shard sizes: torch.chunk's (distribute_tensor's) or a deliberately lopsided split."""
        if even:
            return tuple(c.shape[0] for c in torch.arange(extent).chunk(self.size))
        if self.uneven is not None:
            return self.uneven
        base = [extent // (2 * self.size)] * (self.size - 1)
        return (*base, extent - sum(base))

    def shard(self, A: torch.Tensor, placement: object, even: bool) -> DTensor:
        A = A.to(self.mesh.device_type)  # the current device of this rank (NCCL: its GPU)
        if isinstance(placement, Replicate):
            return distribute_tensor(A, self.mesh, [Replicate()])
        assert isinstance(placement, Shard)
        if even:
            return distribute_tensor(A, self.mesh, [placement])
        sizes = self.bounds(A.shape[placement.dim], even)
        local = A.split(sizes, dim=placement.dim)[self.rank].contiguous()
        return DTensor.from_local(
            local, self.mesh, [placement], run_check=False, shape=A.shape, stride=A.stride()
        )

    def full(self, X: DTensor, even: bool) -> torch.Tensor:
        """The global tensor (DTensor's full_tensor assumes torch.chunk sizes: gather here)."""
        placement = X.placements[0]
        if isinstance(placement, Replicate):
            return X.to_local().detach()
        if even:
            return X.full_tensor().detach()
        parts: list[torch.Tensor | None] = [None] * self.size
        dist.all_gather_object(parts, X.to_local().detach())
        assert isinstance(placement, Shard)
        return torch.cat([p for p in parts if p is not None], dim=placement.dim)

    def local_part(
        self, full: torch.Tensor, placement: object, dim: int, even: bool
    ) -> torch.Tensor:
        """The part of a full tensor this rank holds along ``dim`` when sharded like A."""
        if isinstance(placement, Replicate) or placement.dim % 2 != dim % 2:  # type: ignore[attr-defined]
            return full
        sizes = self.bounds(full.shape[dim], even)
        return full.split(sizes, dim=dim)[self.rank]


def _loss(
    U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, w: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Σ W_U |U|² + w_S S + Σ W_V |Vh|²: sign (phase) invariant, so comparable across solvers."""
    return (w["U"] * U.abs() ** 2).sum() + (w["S"] * S).sum() + (w["V"] * Vh.abs() ** 2).sum()


def _both_runs(
    t: Rank, full: torch.Tensor, placement: object, even: bool, w: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], Any, tuple[Any, ...], Any]:
    """`_loss` with weights ``w`` through single-process svds of ``full`` and through svds of its
    shards (collectives counted): (reference A, its triplets, sharded A, its triplets, count)."""
    ref_A = full.clone().requires_grad_()
    ref = torchsvd.svds(ref_A, K)
    _loss(*ref, w).backward()
    assert ref_A.grad is not None
    A = t.shard(full, placement, even).requires_grad_()
    with _distributed.count_collectives() as count:
        U, S, Vh = torchsvd.svds(A, K)
        uses = {
            "U": t.local_part(w["U"], placement, 0, even).to(U.device),
            "S": w["S"].to(U.device),
            "V": t.local_part(w["V"], placement, 1, even).to(U.device),
        }
        _loss(U.to_local(), S.to_local(), Vh.to_local(), uses).backward()
    return ref_A, ref, A, (U, S, Vh), count


def check_svds(t: Rank, placement: object, dtype: torch.dtype, even: bool, parts: str) -> None:
    """Forward and gradients of a loss of ``parts`` (of U, S, V) against single-process svds."""
    name = f"svds {placement} {dtype} even={even} loss={parts}"
    seed = 3 + len(parts)
    full = matrix_with_singular_values(SPECTRUM, M, N, dtype=dtype, seed=seed)
    w = {
        "U": _weights((M, K), 1) * ("U" in parts),
        "S": _weights((K,), 2) * ("S" in parts),
        "V": _weights((K, N), 3) * ("V" in parts),
    }
    w = {k: v.to(dtype.to_real()) for k, v in w.items()}
    ref_A, ref, A, (U, S, Vh), count = _both_runs(t, full, placement, even, w)
    row, col = (
        isinstance(placement, Shard) and placement.dim == 0,
        isinstance(placement, Shard) and placement.dim == 1,
    )
    want = {"U": [Shard(0)] if row else [Replicate()], "V": [Shard(1)] if col else [Replicate()]}
    t.check(
        name + " placements",
        list(U.placements) == want["U"]
        and list(Vh.placements) == want["V"]
        and list(S.placements) == [Replicate()],
        f"{U.placements} {S.placements} {Vh.placements}",
    )
    tol = 1e-12 if dtype.to_real() == F64 else 2e-5
    s_true = torch.tensor(SPECTRUM[:K], dtype=F64)
    t.check(
        name + " S",
        _rel(S.to_local().to(F64), s_true) <= tol,
        f"{_rel(S.to_local().to(F64), s_true):.3g}",
    )
    t.check(name + " S vs single", _rel(S.to_local(), ref[1]) <= tol)
    Uf, Vf = t.full(U, even), t.full(Vh, even)
    for side, got, exp in (("U", Uf, ref[0]), ("V", Vf.mH, ref[2].mH)):
        err = _rel(got @ got.mH, exp @ exp.mH)
        t.check(f"{name} projector {side}", err <= 100 * tol, f"{err:.3g}")
    t.check(name + " U local", torch.equal(U.to_local(), t.local_part(Uf, placement, 0, even)))
    assert A.grad is not None
    grad = A.grad
    t.check(
        name + " grad placements", list(grad.placements) == list(A.placements), f"{grad.placements}"
    )
    local_ref = t.local_part(t.local_part(ref_A.grad, placement, 0, even), placement, 1, even)
    err = _rel(grad.to_local(), local_ref)
    t.check(name + " grad", err <= (1e-9 if dtype.to_real() == F64 else 1e-3), f"{err:.3g}")
    if isinstance(placement, Replicate):
        t.check(name + " comm", count.largest == 0, f"{count.calls}")
    else:
        check_comm(t, name, count, M if col else N, full.element_size())


def check_comm(
    t: Rank, name: str, count: _distributed.CollectiveCount, unsharded: int, itemsize: int
) -> None:
    """Per block step: one all-reduce of (unsharded side) × b, the rest O(d·b) reductions.

    The vectors of the sharded side never travel: no gather, every product's collective is
    a block of vectors of the other side, and every reduction of inner products is at most
    (largest basis) × (block) numbers of the solver's float64 (complex128) bases.
    """
    block = max(torchsvd._lanczos.default_block_size(K), 2 * K)
    basis = max(torchsvd._lanczos.default_max_dim(K, block), K + 2 * block)
    small = basis * block * 16
    vector = unsharded * itemsize
    products = [b for kind, b in count.sizes if kind == "product"]
    inner = [b for kind, b in count.sizes if kind == "inner"]
    t.check(name + " comm: no gather", "gather" not in count.calls, f"{count.calls}")
    # (A product may carry one more element: the verdict of a local product's finiteness.)
    t.check(
        name + " comm: products are blocks of the unsharded side",
        bool(products)
        and all(b % vector in (0, itemsize) and b <= block * vector + itemsize for b in products),
        f"{sorted(set(products))} for vectors of {vector} B",
    )
    t.check(
        name + " comm: inner products O(d·b)",
        all(b <= small for b in inner),
        f"{max(inner, default=0)} > {small}",
    )
    t.check(
        name + " comm: nothing else",
        set(count.calls) <= {"product", "inner", "setup"},
        f"{count.calls}",
    )


def check_small(t: Rank, placement: Shard, even: bool, wide: bool = False) -> None:
    """min(m, n) below the basis size (a rank-7 A): the identity's products in blocks.

    Rank 7 of 40 columns makes the blocks of the identity's products singular: the fallback
    of Cholesky QR (Gram–Schmidt with reduced inner products) runs too. ``wide``: A is 40 × 157,
    so that rows, not columns, shard the short side.
    """
    m, n = (40, M) if wide else (M, 40)
    name = f"small {m}x{n} {placement} even={even}"
    full = matrix_with_singular_values(SPECTRUM, m, n, dtype=F64, seed=17)
    w = {"U": _weights((m, K), 1), "S": _weights((K,), 2), "V": _weights((K, n), 3)}
    ref_A, ref, A, (U, S, Vh), count = _both_runs(t, full, placement, even, w)
    t.check(name + " S", _rel(S.to_local(), ref[1]) <= 1e-12, f"{_rel(S.to_local(), ref[1]):.3g}")
    Uf, Vf = t.full(U, even), t.full(Vh, even)
    for side, got, exp in (("U", Uf, ref[0]), ("V", Vf.mH, ref[2].mH)):
        err = _rel(got @ got.mH, exp @ exp.mH)
        t.check(f"{name} projector {side}", err <= 1e-10, f"{err:.3g}")
    assert A.grad is not None
    local_ref = t.local_part(t.local_part(ref_A.grad, placement, 0, even), placement, 1, even)
    err = _rel(A.grad.to_local(), local_ref)
    t.check(name + " grad", err <= 1e-9, f"{err:.3g}")
    # Whichever side is short and whichever is sharded: the collectives of block steps, never
    # (long side) × (short side) at once, nor an s × s Gram matrix or gather.
    check_comm(t, name, count, n if placement.dim == 0 else m, full.element_size())


def check_empty_rank(t: Rank, placement: Shard, m: int, n: int, sizes: tuple[int, ...]) -> None:
    """Shards of ``sizes`` along the sharded side, one of them empty: svds and its gradient."""
    name = f"empty rank {m}x{n} {placement} sizes={sizes}"
    full = matrix_with_singular_values(SPECTRUM, m, n, dtype=F64, seed=19)
    w = {"U": _weights((m, K), 1), "S": _weights((K,), 2), "V": _weights((K, n), 3)}
    t.uneven = sizes
    try:
        ref_A, ref, A, (U, S, Vh), count = _both_runs(t, full, placement, False, w)
        err = _rel(S.to_local(), ref[1])
        t.check(name + " S", err <= 1e-12, f"{err:.3g}")
        Uf, Vf = t.full(U, False), t.full(Vh, False)
        for side, got, exp in (("U", Uf, ref[0]), ("V", Vf.mH, ref[2].mH)):
            err = _rel(got @ got.mH, exp @ exp.mH)
            t.check(f"{name} projector {side}", err <= 1e-10, f"{err:.3g}")
        assert A.grad is not None and ref_A.grad is not None
        local_ref = t.local_part(t.local_part(ref_A.grad, placement, 0, False), placement, 1, False)
        t.check(name + " grad shape", A.grad.to_local().shape == local_ref.shape)
        err = _rel(A.grad.to_local(), local_ref) if local_ref.numel() else 0.0
        t.check(name + " grad", err <= 1e-9, f"{err:.3g}")
        check_comm(t, name, count, n if placement.dim == 0 else m, full.element_size())
    finally:
        t.uneven = None


def check_never_gathered(t: Rank) -> None:
    """No DTensor gather or redistribution of A in the forward or the backward."""
    calls: list[str] = []
    originals = DTensor.full_tensor, DTensor.redistribute

    def record(which: str, fn: Callable[..., object]) -> Callable[..., object]:
        def wrapper(self: DTensor, *args: object, **kwargs: object) -> object:
            calls.append(f"{which}{tuple(self.shape)}")
            return fn(self, *args, **kwargs)

        return wrapper

    for placement in (Shard(0), Shard(1)):
        A = t.shard(matrix_with_singular_values(SPECTRUM, M, N, dtype=F64, seed=0), placement, True)
        A.requires_grad_()
        DTensor.full_tensor = record("full_tensor", originals[0])  # type: ignore[method-assign]
        DTensor.redistribute = record("redistribute", originals[1])  # type: ignore[method-assign]
        try:
            U, S, Vh = torchsvd.svds(A, K)
            (U.to_local().sum() + S.to_local().sum() + Vh.to_local().sum()).backward()
            warm = torchsvd.svds(A, K, v0=Vh.detach())  # a DTensor warm start, placed like Vh
            sigma = torchsvd.spectral_norm(A)
            sigma.to_local().backward()
            torchsvd.pca(A, 2)
        finally:
            DTensor.full_tensor, DTensor.redistribute = originals  # type: ignore[method-assign]
        t.check(f"never gathered {placement}", not calls, str(calls))
        t.check(f"warm start {placement}", _rel(warm[1].to_local(), S.to_local()) < 1e-12)
        t.check(
            f"spectral_norm {placement}",
            abs(float(sigma.to_local().detach()) - SPECTRUM[0]) < 1e-12,
        )


def check_pca(t: Rank, placement: object, dtype: torch.dtype) -> None:
    """Distributed PCA (rows of samples, sharded) against single-process pca, with gradients."""
    name = f"pca {placement} {dtype}"
    full = matrix_with_singular_values(SPECTRUM, M, N, dtype=dtype, seed=7) + 3.0
    ref_A = full.clone().requires_grad_()
    ref = torchsvd.pca(ref_A, K)
    w = _weights((K, N), 5).to(dtype)
    (ref[1].sum() + (w * ref[2] ** 2).sum()).backward()
    even = placement != Shard(0)
    A = t.shard(full, placement, even).requires_grad_()
    with _distributed.count_collectives() as count:
        _, S, Vh = torchsvd.pca(A, K)
        (
            S.to_local().sum() + (t.local_part(w, placement, 1, even) * Vh.to_local() ** 2).sum()
        ).backward()
    assert isinstance(placement, Shard)
    check_comm(t, name, count, M if placement.dim == 1 else N, full.element_size())
    tol = 1e-12 if dtype == F64 else 2e-5
    t.check(name + " S", _rel(S.to_local(), ref[1]) <= tol, f"{_rel(S.to_local(), ref[1]):.3g}")
    Vf = t.full(Vh, even)
    t.check(name + " axes", _rel(Vf.mT @ Vf, ref[2].mT @ ref[2]) <= 100 * tol)
    assert A.grad is not None and ref_A.grad is not None
    local_ref = t.local_part(t.local_part(ref_A.grad, placement, 0, even), placement, 1, even)
    err = _rel(A.grad.to_local(), local_ref)
    t.check(name + " grad", err <= (1e-9 if dtype == F64 else 1e-3), f"{err:.3g}")


def check_dtensor_loss(t: Rank) -> None:
    """A loss written with DTensor ops (its reductions are DTensor's own collectives)."""
    full = matrix_with_singular_values(SPECTRUM, M, N, dtype=F64, seed=11)
    ref_A = full.clone().requires_grad_()
    U_ref, _, _ = torchsvd.svds(ref_A, K)
    W = _weights((M, K), 9)
    (W * U_ref**2).sum().backward()
    A = t.shard(full, Shard(0), True).requires_grad_()
    U, _, _ = torchsvd.svds(A, K)
    loss = (distribute_tensor(W, t.mesh, [Shard(0)]) * U**2).sum()
    loss.full_tensor().backward()
    assert A.grad is not None and ref_A.grad is not None
    err = _rel(A.grad.full_tensor(), ref_A.grad)
    t.check("DTensor loss grad", err <= 1e-9, f"{err:.3g}")


def check_complex(t: Rank) -> None:
    full = matrix_with_singular_values(SPECTRUM, M, N, dtype=C128, seed=13)
    ref_A = full.clone().requires_grad_()
    ref = torchsvd.svds(ref_A, K)
    W = _weights((M, K), 4)
    ((W * ref[0].abs() ** 2).sum() + ref[1].sum()).backward()
    A = t.shard(full, Shard(0), False).requires_grad_()
    U, S, _ = torchsvd.svds(A, K)
    (
        (t.local_part(W, Shard(0), 0, False) * U.to_local().abs() ** 2).sum() + S.to_local().sum()
    ).backward()
    assert A.grad is not None and ref_A.grad is not None
    t.check("complex S", _rel(S.to_local(), ref[1]) <= 1e-12)
    err = _rel(A.grad.to_local(), t.local_part(ref_A.grad, Shard(0), 0, False))
    t.check("complex grad", err <= 1e-9, f"{err:.3g}")


def check_overflow(t: Rank) -> None:
    """A product that overflows on one rank only: every rank raises the same ValueError."""
    A = matrix_with_singular_values(SPECTRUM, M, N, dtype=F64, seed=0)
    cases: list[tuple[str, Callable[[], object], type[Exception]]] = []
    # Finite entries whose products overflow float64, in one rank's shard only: that rank's
    # local products (A X of rows, Aᴴ Y of columns) are the non-finite ones.
    huge = A.clone()
    huge[-8:, :] = 1.5e308
    tall = t.shard(huge, Shard(0), False)  # the last rows: the last rank's
    cases.append(("overflow in one rank's rows", lambda: torchsvd.svds(tall, K), ValueError))
    huge = A.clone()
    huge[:, -8:] = 1.5e308
    wide = t.shard(huge, Shard(1), True)  # the last columns: the last rank's
    cases.append(("overflow in one rank's columns", lambda: torchsvd.svds(wide, K), ValueError))
    _expect_errors(t, cases)


def _expect_errors(t: Rank, cases: list[tuple[str, Callable[[], object], type[Exception]]]) -> None:
    for what, call, error in cases:
        try:
            call()
        except error:
            continue
        except Exception as err:  # the wrong error is the failure reported
            t.check(f"error {what}", False, repr(err))
            continue
        t.check(f"error {what}", False, "did not raise")


def check_errors(t: Rank) -> None:
    """Unsupported placements raise on every rank (no rank left waiting in a collective)."""
    A = matrix_with_singular_values(SPECTRUM, M, N, dtype=F64, seed=0)
    local = A / t.size
    partial = DTensor.from_local(local, t.mesh, [Partial()], run_check=False)
    cases: list[tuple[str, Callable[[], object], type[Exception]]] = [
        ("Partial", lambda: torchsvd.svds(partial, K), ValueError),
        (
            "batch",
            lambda: torchsvd.svds(
                distribute_tensor(A.expand(t.size, M, N).contiguous(), t.mesh, [Shard(0)]), K
            ),
            ValueError,
        ),
    ]
    grid = init_device_mesh("cpu", (1, t.size))
    on_grid = distribute_tensor(A, grid, [Replicate(), Shard(0)])
    cases.append(("2-D mesh", lambda: torchsvd.svds(on_grid, K), ValueError))
    bad = A.clone()
    if t.rank == t.size - 1:
        bad[-1, -1] = float("nan")
    rows = t.shard(bad, Shard(0), False)  # from_local: each rank's own data
    cases.append(("NaN on one rank", lambda: torchsvd.svds(rows, K), ValueError))
    _expect_errors(t, cases)


def main() -> int:
    torch.set_num_threads(1)
    # A collective that waits longer than this raises: a rank left waiting (a check that
    # raised on another rank only) fails its check instead of hanging the group.
    # "nccl": NCCL on one GPU per rank, a core of the checks (tests/test_distributed.py).
    nccl = sys.argv[1:] == ["nccl"]
    if nccl:
        torch.cuda.set_device(int(os.environ["RANK"]))
    timeout = datetime.timedelta(seconds=COLLECTIVE_TIMEOUT)
    dist.init_process_group("nccl" if nccl else "gloo", timeout=timeout)
    try:
        t = Rank(init_device_mesh("cuda" if nccl else "cpu", (dist.get_world_size(),)))
        if nccl:
            return _report(t, _nccl_checks(t))
        # "short": one loss of U, S and V per placement (for a second world size).
        short = sys.argv[1:] == ["short"]
        checks: list[Callable[[], None]] = [
            lambda: check_never_gathered(t),
            lambda: check_errors(t),
            lambda: check_overflow(t),
        ]
        for placement in (Shard(0), Shard(1), Replicate()):
            for dtype in (F64, F32):
                for parts in ("S", "U", "V", "USV"):
                    if (dtype == F32 or short) and parts != "USV":
                        continue
                    # Shards of any sizes along rows; DTensor's own backward of to_local infers
                    # the strides of column shards from torch.chunk's sizes.
                    even = not (isinstance(placement, Shard) and placement.dim == 0)
                    checks.append(
                        lambda p=placement, d=dtype, q=parts, e=even: check_svds(t, p, d, e, q)
                    )
        checks.append(lambda: check_svds(t, Shard(0), F64, True, "USV"))
        checks += [
            lambda: check_small(t, Shard(0), short),
            lambda: check_small(t, Shard(1), True),
            lambda: check_small(t, Shard(0), short, wide=True),
            lambda: check_small(t, Shard(1), True, wide=True),
        ]
        if t.size == 3:
            # One rank holds nothing: a small problem split along its short side (9 rows or
            # columns as 5 + 4 + 0) and a Krylov-sized one split along its long side.
            checks += [
                lambda: check_empty_rank(t, Shard(0), 9, 40, (5, 4, 0)),
                lambda: check_empty_rank(t, Shard(1), 40, 9, (5, 4, 0)),
                lambda: check_empty_rank(t, Shard(0), M, N, (100, 57, 0)),
                lambda: check_empty_rank(t, Shard(1), N, M, (0, 100, 57)),
            ]
        checks += [
            lambda: check_pca(t, Shard(0), F64),
            lambda: check_pca(t, Shard(1), F32),
            lambda: check_dtensor_loss(t),
            lambda: check_complex(t),
        ]
        return _report(t, checks)
    finally:
        dist.destroy_process_group()


def _nccl_checks(t: Rank) -> list[Callable[[], None]]:
    """The checks of the products, the small problems and the collective errors, on GPUs."""
    return [
        lambda: check_svds(t, Shard(0), F64, False, "USV"),
        lambda: check_svds(t, Shard(1), F64, True, "USV"),
        lambda: check_svds(t, Shard(0), F32, False, "USV"),
        lambda: check_small(t, Shard(0), False),
        lambda: check_small(t, Shard(1), True),
        lambda: check_overflow(t),
    ]


def _report(t: Rank, checks: list[Callable[[], None]]) -> int:
    """Run every check (one that raises is reported, and the next runs); print the failures."""
    for check in checks:
        try:
            check()
        except Exception:
            t.failures.append(f"rank {t.rank}: {traceback.format_exc()}")
    for line in t.failures:
        print(line, flush=True)
    return 1 if t.failures else 0


if __name__ == "__main__":
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    sys.exit(main())
