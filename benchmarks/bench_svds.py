"""Benchmark torchsvd.svds (top-k SVD, implicit backward) against dense and ARPACK baselines.

Prints Markdown tables:

1. headline: forward+backward of a loss using S, U and V, svds vs torch.linalg.svd, float32, CPU,
   on a decaying spectrum (σ_i = 1/i, random orthogonal factors) and a Gaussian matrix, k = 1
   and 10, with the gradient error against a float64 dense reference;
2. forward only: svds at its default tol vs scipy.sparse.linalg.svds (ARPACK) at equal residual
   (the loosest ARPACK tol whose residual is no larger than svds's: `arpack_at`), and
   torch.svd_lowrank(q=k+10, niter=4) with its residual;
3. scaling in n, and a sparse 100000×100000 matrix with 1e6 non-zeros, k = 10, beside ARPACK
   at equal residual (also alone: ``--table sparse``);
4. ``--table dispatch``: svds (method chosen by its cost model) against torch.linalg.svd
   (full_matrices=False) and torch.svd_lowrank on tall, square and wide float32 matrices,
   decaying and Gaussian spectra, k = 1 and 10, forward and forward+backward, all timed
   alternately in one loop, with each method's residual beside its time; svds runs with the
   tol that matches torch.linalg.svd's residual (equal accuracy);
5. ``--table methods``: the two forwards of svds (``method="dense"`` and ``"krylov"``) side by
   side, forward and forward+backward, beside the seconds the cost model estimates for each
   (`torchsvd._dispatch.estimate_costs`) and the method it picks (the data its constants are
   fitted to), and the default ``method="auto"`` over the faster of the two.

Every svds row reports the passes over A (products with A or Aᴴ) and the floor they imply:
passes × bytes of A / memory read bandwidth (measured here: a sum over 256 MB). Timings are
medians of ``--repeat`` runs with time.perf_counter.

Usage::

    python benchmarks/bench_svds.py            # full (the float64 4000² references take minutes;
                                               # cached under the temp directory)
    python benchmarks/bench_svds.py --quick    # small sizes, to check that it runs
    python benchmarks/bench_svds.py --table dispatch   # the dispatch table alone (minutes)
    python benchmarks/bench_svds.py --table methods    # dense against Krylov (minutes)
    python benchmarks/bench_svds.py --table forward    # forward 4000² beside ARPACK (minutes)
    python benchmarks/bench_svds.py --table sparse     # the sparse table alone (a minute)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

import torchsvd
from _timing import machine_line, median_time
from torchsvd import LinearOperator
from torchsvd._operators import aslinearoperator
from torchsvd._topk import default_tol

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def bandwidth() -> float:
    """Bytes per second read from memory: a sum over 256 MB, larger than any cache (the floor)."""
    buf = torch.ones(64 * 2**20)
    t, _ = median_time(buf.sum, 11)
    return buf.numel() * buf.element_size() / t


def gemv_rates(n: int) -> tuple[float, float]:
    """Bytes of A per second streamed by torch's float32 GEMV and by svds's product with one
    vector (A cut into one row block per thread), for comparison with the floor."""
    A = torch.randn(n, n)
    x = torch.randn(1, n)
    matmat = aslinearoperator(A).matmat
    t_torch, _ = median_time(lambda: torch.mv(A, x[0]), 21)
    t_svds, _ = median_time(lambda: matmat(x.mT), 21)
    nbytes = A.numel() * A.element_size()
    return nbytes / t_torch, nbytes / t_svds


def decaying(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    Q1 = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    Q2 = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    s = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    return ((Q1 * s) @ Q2.T).float()


def gaussian(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, n, generator=gen)


def make_loss(m: int, n: int) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A gauge-invariant loss of S, U and V: Σσ_i + Σ(aᵀu_i)² + Σ(v_iᵀb)²."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(m, generator=gen, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)

    def loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
        return S.sum() + ((a.to(U.dtype) @ U) ** 2).sum() + ((Vh @ b.to(U.dtype)) ** 2).sum()

    return loss


class Counted(LinearOperator):
    """The operator svds makes of ``A``, as a public `LinearOperator` whose products are counted.

    Products and gradients are those of ``aslinearoperator(A)`` (so timings equal those of
    ``svds(A)``); each call of ``matmat`` or ``rmatmat`` is one pass over ``A``. The wrappers
    close over a counter, not over ``self``: a cycle through the operator would keep every
    matrix and gradient alive until the garbage collector ran, and the growing memory slowed
    later runs by 2× (seen in the headline table).
    """

    def __init__(self, A: torch.Tensor) -> None:
        base = aslinearoperator(A)
        calls = self._calls = [0]

        def counted(product: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., Any]:
            def call(X: torch.Tensor) -> torch.Tensor:
                calls[0] += 1
                return product(X)

            return call

        super().__init__(
            base.shape,
            counted(base.matmat),
            counted(base.rmatmat),
            dtype=base.dtype,
            device=base.device,
            params=base.params,
            block_size=base.block_size,
            cheap_products=base.cheap_products,
        )
        self._base = base

    def param_grads(
        self, left: torch.Tensor, right: torch.Tensor, needs: Sequence[bool]
    ) -> tuple[torch.Tensor | None, ...]:
        return self._base.param_grads(left, right, needs)

    def _magnitude(self) -> torch.Tensor:
        return self._base._magnitude()  # as svds(A) does: no extra product

    @property
    def passes(self) -> int:
        return self._calls[0]


def svds_fwd_bwd(A: torch.Tensor, k: int, loss: Callable[..., torch.Tensor]) -> tuple[Any, int]:
    X = A.detach().clone().requires_grad_()
    counted = Counted(X)
    loss(*torchsvd.svds(counted, k)).backward()
    return X.grad, counted.passes


def dense_fwd_bwd(A: torch.Tensor, k: int, loss: Callable[..., torch.Tensor]) -> Any:
    X = A.detach().clone().requires_grad_()
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    loss(U[:, :k], S[:k], Vh[:k]).backward()
    return X.grad


def reference_grads(
    name: str, A: torch.Tensor, ks: list[int], loss: Callable[..., torch.Tensor]
) -> dict[int, torch.Tensor]:
    """float64 dense gradients of the loss for each k, cached on disk (minutes at 4000²)."""
    path = os.path.join(
        tempfile.gettempdir(), f"torchsvd_bench_ref_{name}_{A.shape[0]}x{A.shape[1]}.pt"
    )
    if os.path.exists(path):
        return torch.load(path)
    X = A.double().requires_grad_()
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    out = {}
    for k in ks:
        X.grad = None
        loss(U[:, :k], S[:k], Vh[:k]).backward(retain_graph=True)
        assert X.grad is not None
        out[k] = X.grad.float()
    torch.save(out, path)
    return out


def residual(A: torch.Tensor | Any, U: Any, S: Any, Vh: Any) -> float:
    """max_i max(‖Av_i − σ_i u_i‖, ‖Aᵀu_i − σ_i v_i‖) / σ_1, in float64."""
    U, S, Vh = (torch.as_tensor(np.asarray(t)).double() for t in (U, S, Vh))
    if isinstance(A, torch.Tensor) and A.layout == torch.strided:
        A64 = A.double()
        r1 = (A64 @ Vh.T - U * S).norm(dim=0)
        r2 = (A64.T @ U - Vh.T * S).norm(dim=0)
    else:
        csr = A if scipy.sparse.issparse(A) else None
        assert csr is not None
        r1 = torch.as_tensor(csr @ Vh.T.numpy() - (U * S).numpy()).norm(dim=0)
        r2 = torch.as_tensor(csr.T @ U.numpy() - (Vh.T * S).numpy()).norm(dim=0)
    return float(torch.maximum(r1, r2).max() / S.max())


def headline(n: int, repeat: int, bw: float) -> None:
    print(f"\n## Headline: {n}×{n} float32, loss of S, U and V, forward+backward\n")
    print(
        "| matrix | k | torch.linalg.svd (s) | svds (s) | speed-up | passes | floor (s) "
        "| × floor | svds grad error | torch.linalg.svd float32 grad error |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    ks = [1, 10]
    for name, maker in (("decaying", decaying), ("gaussian", gaussian)):
        A = maker(n)
        loss = make_loss(n, n)
        ref = reference_grads(name, A, ks, loss)
        dense = {k: median_time(partial(dense_fwd_bwd, A, k, loss), 1) for k in ks}
        for k in ks:
            t, (grad, passes) = median_time(partial(svds_fwd_bwd, A, k, loss), repeat)
            err = float((grad - ref[k]).norm() / ref[k].norm())
            # The float32 dense SVD's own error: the floor float32 sets at these gaps.
            dense_t, dense_grad = dense[k]
            dense_err = float((dense_grad - ref[k]).norm() / ref[k].norm())
            floor = passes * A.numel() * 4 / bw
            print(
                f"| {name} | {k} | {dense_t:.2f} | {t:.3f} | {dense_t / t:.0f}× | {passes} "
                f"| {floor:.3f} | {t / floor:.1f} | {err:.1e} | {dense_err:.1e} |"
            )


def forward_table(n: int, repeat: int, bw: float) -> None:
    print(f"\n## Forward only: {n}×{n} float32, equal residual\n")
    print(
        "| matrix | k | svds (s) | its residual | passes | × floor | ARPACK tol "
        "| scipy svds ARPACK (s) | its residual | svds / ARPACK "
        "| svd_lowrank q=k+10 niter=4 (s) | its residual |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, maker in (("decaying", decaying), ("gaussian", gaussian)):
        A = maker(n)
        A_np = A.numpy()
        for k in (1, 10):
            counted = Counted(A)
            t_ts, (U, S, Vh) = median_time(partial(torchsvd.svds, counted, k), repeat)
            passes = counted.passes // repeat
            res_ts = residual(A, U, S, Vh)
            arpack = arpack_at(A_np, A, k, res_ts, repeat)
            lowrank = partial(torch.svd_lowrank, A, q=k + 10, niter=4)
            t_lr, (Ul, Sl, Vl) = median_time(lowrank, repeat)
            res_lr = residual(A, Ul[:, :k], Sl[:k], Vl[:, :k].T)
            floor = passes * A.numel() * 4 / bw
            print(
                f"| {name} | {k} | {t_ts:.3f} | {res_ts:.1e} | {passes} | {t_ts / floor:.1f} "
                f"| {arpack_cells(arpack, t_ts)} | {t_lr:.3f} | {res_lr:.1e} |"
            )


# scipy's svds hands eigsh (on AᴴA) the square of its tol, so a loose tol still reaches a tight
# residual (tol 1e-3 reached 8e-7 on the Gaussian 4000²): ARPACK runs at each tol of this sweep,
# loosest first, and its first run whose residual is no larger than svds's counts.
ARPACK_TOLS = {
    np.dtype(np.float32): (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
    np.dtype(np.float64): (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8, 1e-10, 1e-12),
}


def arpack_at(
    matrix: Any, reference: Any, k: int, target: float, repeat: int
) -> tuple[float, float, float, bool]:
    """``(tol, seconds, residual, reached)`` of ARPACK (`scipy.sparse.linalg.svds`) on
    ``matrix``, at the loosest tol of `ARPACK_TOLS` whose residual (against ``reference``) is at
    most ``target`` — its fastest run at equal residual, since a looser tol never took longer —
    or, where no tol reached ``target`` (``reached`` False), its run of smallest residual."""
    best: tuple[float, float, float, bool] | None = None
    for tol in ARPACK_TOLS[matrix.dtype]:
        run = partial(
            scipy.sparse.linalg.svds, matrix, k, tol=tol, random_state=np.random.default_rng(0)
        )
        t, (u, s, vt) = median_time(run, repeat)
        order = np.argsort(s)[::-1]
        res = residual(reference, u[:, order], s[order], vt[order])
        if res <= target:
            return tol, t, res, True
        if best is None or res < best[2]:
            best = (tol, t, res, False)
    assert best is not None
    return best


def arpack_cells(arpack: tuple[float, float, float, bool], ours: float) -> str:
    """Four table cells: ARPACK's tol, seconds, residual, and svds's seconds over ARPACK's (not
    a ratio at equal residual where ARPACK never reached svds's: marked)."""
    tol, t, res, reached = arpack
    ratio = f"{ours / t:.2f}" if reached else f"({ours / t:.2f}: not reached)"
    return f"{tol:g} | {t:.3f} | {res:.1e} | {ratio}"


def scaling_table(sizes: list[int], repeat: int, bw: float) -> None:
    print("\n## Scaling, float32, k = 10, loss of S, U and V\n")
    print("| matrix | n | forward (s) | forward+backward (s) | passes | × floor |")
    print("|---|---|---|---|---|---|")
    for name, maker in (("decaying", decaying), ("gaussian", gaussian)):
        for n in sizes:
            A = maker(n)
            loss = make_loss(n, n)
            t_f, _ = median_time(partial(torchsvd.svds, A, 10), repeat)
            t, (_, passes) = median_time(partial(svds_fwd_bwd, A, 10, loss), repeat)
            floor = passes * A.numel() * 4 / bw
            print(f"| {name} | {n} | {t_f:.3f} | {t:.3f} | {passes} | {t / floor:.1f} |")


def sparse_table(n: int, nnz: int, repeat: int, bw: float) -> None:
    print(f"\n## Sparse {n}×{n}, {nnz} non-zeros (CSR), k = 10\n")
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, n, (nnz,), generator=gen)
    cols = torch.randint(0, n, (nnz,), generator=gen)
    vals = torch.randn(nnz, generator=gen)
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n)).coalesce()
    print(
        "| dtype | forward (s) | residual | passes | × floor | forward+backward (s) "
        "| ARPACK tol | scipy ARPACK (s) | its residual | svds / ARPACK |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.float64):
        sparse_row(coo.to(dtype).to_sparse_csr(), repeat, bw)


def sparse_row(A: torch.Tensor, repeat: int, bw: float) -> None:
    """svds at its default tolerance, forward and forward+backward, beside ARPACK (`arpack_at`)."""
    n = A.shape[0]
    csr = scipy.sparse.csr_matrix(
        (A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=(n, n)
    )
    csr64 = csr.astype(np.float64)
    loss = make_loss(n, n)
    # Bytes of a CSR pass: values + int32 column indices per non-zero.
    nbytes = A.values().numel() * (A.element_size() + 4)
    counted = Counted(A)
    t_f, (U, S, Vh) = median_time(lambda: torchsvd.svds(counted, 10), repeat)
    passes_f = counted.passes // repeat
    res = residual(csr64, U, S, Vh)
    X = A.detach().clone().requires_grad_()
    t, _ = median_time(lambda: loss(*torchsvd.svds(X, 10)).backward(), repeat)
    arpack = arpack_at(csr, csr64, 10, res, repeat)
    print(
        f"| {str(A.dtype).split('.')[-1]} | {t_f:.3f} | {res:.1e} "
        f"| {passes_f} | {t_f / (passes_f * nbytes / bw):.0f} | {t:.3f} "
        f"| {arpack_cells(arpack, t_f)} |"
    )


def rectangular(kind: str, m: int, n: int, seed: int = 0) -> torch.Tensor:
    """float32 ``m × n``: σ_i = 1/i with random orthonormal factors, or Gaussian entries."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(m, n, generator=gen)
    r = min(m, n)
    Q1 = torch.linalg.qr(torch.randn(m, r, generator=gen, dtype=torch.float64))[0]
    Q2 = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=torch.float64))[0]
    s = 1.0 / torch.arange(1, r + 1, dtype=torch.float64)
    return ((Q1 * s) @ Q2.T).float()


def forward_backward(
    f: Callable[[torch.Tensor], Triplets],
    k: int,
    A: torch.Tensor,
    loss: Callable[..., torch.Tensor],
) -> Triplets:
    """``f`` on a copy of ``A`` that requires grad, and the backward of ``loss`` on its top k."""
    X = A.clone().requires_grad_()
    U, S, Vh = f(X)
    loss(U[:, :k], S[:k], Vh[:k]).backward()
    return U.detach(), S.detach(), Vh.detach()


def alternated(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, tuple[float, Any]]:
    """Median seconds and last output of each callable, run in turn ``repeat`` times."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    outs: dict[str, Any] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times[name]), outs[name]) for name in fns}


# The smallest float32 residual svds is asked for: the rounding of float32 products confirms
# about 1.5e-6·σ_1 on a 4000² Gaussian matrix (docs/topk.md), and a tol below what can be
# confirmed raises ConvergenceError.
FLOAT32_FLOOR = 2e-6


def equal_accuracy_tol(A: torch.Tensor, reference: Triplets, k: int) -> float:
    """svds's tol for the accuracy of ``reference`` (torch.linalg.svd) on the top ``k``: its
    residual, within [FLOAT32_FLOOR, default tol]."""
    U, S, Vh = reference
    res = residual(A, U[:, :k], S[:k], Vh[:k])
    return min(default_tol(torch.float32), max(res, FLOAT32_FLOOR))


def dispatch_table(shapes: list[tuple[int, int]], repeat: int) -> None:
    """svds (auto) against torch.linalg.svd and torch.svd_lowrank, float32, alternated.

    svds runs at the accuracy of torch.linalg.svd (`equal_accuracy_tol`); each residual is
    printed beside its method's time.
    """
    from torchsvd._dispatch import choose_method
    from torchsvd._operators import aslinearoperator

    print("\n## Dispatch: svds (cost model) vs torch.linalg.svd and torch.svd_lowrank\n")
    print(
        "| shape | matrix | k | method | svds tol | svd fwd (s) | svd residual | svds fwd (s) "
        "| svds residual | ratio | lowrank fwd (s) | lowrank residual | svd fwd+bwd (s) "
        "| svds fwd+bwd (s) | ratio | lowrank fwd+bwd (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m, n in shapes:
        for kind in ("decaying", "gaussian"):
            A = rectangular(kind, m, n)
            loss = make_loss(m, n)

            fwd_bwd = partial(forward_backward, A=A, loss=loss)

            def svd(X: torch.Tensor) -> Triplets:
                return torch.linalg.svd(X, full_matrices=False)

            reference = svd(A)
            tols = {k: equal_accuracy_tol(A, reference, k) for k in (1, 10)}
            fns: dict[str, Callable[[], Any]] = {
                "svd": partial(svd, A),
                "svd_bwd": partial(fwd_bwd, svd, 10),
            }
            for k in (1, 10):

                def lowrank(X: torch.Tensor, k: int = k) -> Triplets:
                    U, S, V = torch.svd_lowrank(X, q=k + 10, niter=4)
                    return U, S, V.mT

                svds_k = partial(torchsvd.svds, k=k, tol=tols[k])
                fns[f"svds{k}"] = partial(svds_k, A)
                fns[f"svds{k}_bwd"] = partial(fwd_bwd, svds_k, k)
                fns[f"lr{k}"] = partial(lowrank, A)
                fns[f"lr{k}_bwd"] = partial(fwd_bwd, lowrank, k)
            got = alternated(fns, repeat)
            U, S, Vh = got["svd"][1]
            for k in (1, 10):
                method = choose_method(aslinearoperator(A), k)
                res = {
                    name: residual(A, *(t[..., :k] if i == 0 else t[:k] for i, t in enumerate(out)))
                    for name, out in (
                        ("svd", (U, S, Vh)),
                        ("svds", got[f"svds{k}"][1]),
                        ("lr", got[f"lr{k}"][1]),
                    )
                }
                t = {name: got[name][0] for name in got}
                print(
                    f"| {m}×{n} | {kind} | {k} | {method} | {tols[k]:.1e} | {t['svd']:.3f} "
                    f"| {res['svd']:.1e} | {t[f'svds{k}']:.3f} | {res['svds']:.1e} "
                    f"| {t[f'svds{k}'] / t['svd']:.2f} | {t[f'lr{k}']:.3f} | {res['lr']:.1e} "
                    f"| {t['svd_bwd']:.3f} | {t[f'svds{k}_bwd']:.3f} "
                    f"| {t[f'svds{k}_bwd'] / t['svd_bwd']:.2f} | {t[f'lr{k}_bwd']:.3f} |",
                    flush=True,
                )


def methods_table(shapes: list[tuple[int, int]], repeat: int) -> None:
    """svds's dense and Krylov forwards and its default (``method="auto"``: the cost model's
    pick, with the Krylov probe where it picks dense) timed alternately, beside the model's
    estimates; "auto / best": auto's time over the faster of the two methods."""
    from torchsvd._dispatch import choose_method, estimate_costs
    from torchsvd._operators import aslinearoperator

    print("\n## svds: dense against Krylov, and the cost model\n")
    print(
        "| shape | matrix | k | dense fwd (s) | krylov fwd (s) | dense fwd+bwd (s) "
        "| krylov fwd+bwd (s) | model dense fwd (s) | model krylov fwd (s) "
        "| model dense fwd+bwd (s) | model krylov fwd+bwd (s) | picks fwd | picks fwd+bwd "
        "| auto fwd (s) | auto / best | auto fwd+bwd (s) | auto / best |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m, n in shapes:
        for kind in ("decaying", "gaussian"):
            A = rectangular(kind, m, n)
            loss = make_loss(m, n)
            for k in (1, 10):
                dense = partial(torchsvd.svds, k=k, method="dense")
                krylov = partial(torchsvd.svds, k=k, method="krylov")
                auto = partial(torchsvd.svds, k=k)
                got = alternated(
                    {
                        "dense": partial(dense, A),
                        "krylov": partial(krylov, A),
                        "auto": partial(auto, A),
                        "dense_bwd": partial(forward_backward, dense, k, A, loss),
                        "krylov_bwd": partial(forward_backward, krylov, k, A, loss),
                        "auto_bwd": partial(forward_backward, auto, k, A, loss),
                    },
                    repeat,
                )
                t = {name: got[name][0] for name in got}
                fwd = estimate_costs(m, n, k, dtype=A.dtype)
                both = estimate_costs(m, n, k, dtype=A.dtype, backward=True)
                picks = choose_method(aslinearoperator(A), k)
                picks_bwd = choose_method(aslinearoperator(A.clone().requires_grad_()), k)
                print(
                    f"| {m}×{n} | {kind} | {k} | {t['dense']:.3f} | {t['krylov']:.3f} "
                    f"| {t['dense_bwd']:.3f} | {t['krylov_bwd']:.3f} | {fwd.dense:.3f} "
                    f"| {fwd.krylov:.3f} | {both.dense:.3f} | {both.krylov:.3f} | {picks} "
                    f"| {picks_bwd} | {t['auto']:.3f} "
                    f"| {t['auto'] / min(t['dense'], t['krylov']):.2f} | {t['auto_bwd']:.3f} "
                    f"| {t['auto_bwd'] / min(t['dense_bwd'], t['krylov_bwd']):.2f} |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check it runs")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--table",
        choices=["all", "dispatch", "methods", "forward", "sparse"],
        default="all",
        help="which tables to print",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    quick = args.quick
    print(machine_line(torch.device("cpu"), args.repeat) + f", scipy {scipy.__version__}")
    if args.table == "dispatch":
        shapes = (
            [(6000, 48), (1000, 250), (400, 400), (250, 1000)]
            if quick
            else [(60000, 192), (10000, 1000), (4000, 4000), (1000, 8000)]
        )
        dispatch_table(shapes, args.repeat)
        return
    if args.table == "methods":
        shapes = (
            [(6000, 48), (1000, 250), (400, 400), (250, 1000)]
            if quick
            else [
                (60000, 192),
                (20000, 500),
                (10000, 1000),
                (3000, 1500),
                (2000, 2000),
                (1000, 8000),
            ]
        )
        methods_table(shapes, args.repeat)
        return
    bw = bandwidth()
    sparse_size = (10_000, 100_000) if quick else (100_000, 1_000_000)
    if args.table == "sparse":
        sparse_table(*sparse_size, args.repeat, bw)
        return
    n = 400 if quick else 4000
    if args.table == "forward":
        forward_table(n, args.repeat, bw)
        return
    gemv_torch, gemv_svds = gemv_rates(4000)
    print(
        f"torch {torch.__version__}, scipy {scipy.__version__}, {torch.get_num_threads()} "
        f"threads, memory read bandwidth {bw / 1e9:.1f} GB/s, float32 GEMV streams "
        f"{gemv_torch / 1e9:.1f} GB/s (torch.mv), {gemv_svds / 1e9:.1f} GB/s (svds's product)"
    )
    headline(n, args.repeat, bw)
    forward_table(n, args.repeat, bw)
    scaling_table([250, 500, 1000] if quick else [1000, 2000, 4000, 8000], args.repeat, bw)
    sparse_table(*sparse_size, args.repeat, bw)


if __name__ == "__main__":
    main()
