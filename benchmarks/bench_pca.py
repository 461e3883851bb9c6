"""PCA: torchsvd.pca against the dense SVD of the centred matrix, torch.pca_lowrank and sklearn.

Usage: python benchmarks/bench_pca.py [--quick] [--repeats N] [--k K] [--dtype float32|float64]

The data are 8×8 colour patches (192 features) of matplotlib's sample photograph, 60000 of them
(``--quick``: 6000), a classic PCA workload with a decaying spectrum. Each method is timed against
torchsvd.pca alternately in the same run (medians; ratio = method / torchsvd, > 1 means torchsvd is
faster), forward only and, for the differentiable torch methods, forward+backward of a loss of
the top-k subspace. Accuracy: the distance of each method's top-k projector from the float64 dense
reference, ‖P − P_ref‖₂, and the largest relative residual ‖A_c v − σ u‖ / σ_1.
sklearn runs only when installed (an optional benchmark peer).
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable

import torch

import torchsvd
from _timing import time_pair

Method = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def patches(count: int, dtype: torch.dtype) -> torch.Tensor:
    """``count`` 8×8×3 patches of grace_hopper.jpg as rows of a (count, 192) matrix."""
    import matplotlib.cbook
    import matplotlib.image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        image = torch.from_numpy(matplotlib.image.imread(f, format="jpg").copy()).double() / 255
    windows = image.unfold(0, 8, 1).unfold(1, 8, 1)  # (H-7, W-7, 3, 8, 8)
    rows = windows.reshape(-1, 192)
    step = max(1, rows.shape[0] // count)
    return rows[::step][:count].to(dtype).contiguous()


def _dense(A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    U, S, Vh = torch.linalg.svd(A - A.mean(dim=0), full_matrices=False)
    return U[:, :k], S[:k], Vh[:k]


def _lowrank(A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    U, S, V = torch.pca_lowrank(A, q=k + 10, niter=4, center=True)
    return U[:, :k], S[:k], V[:, :k].mH


def _ours(A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torchsvd.pca(A, k)


def _sklearn(solver: str) -> Method | None:
    try:
        from sklearn.decomposition import PCA
    except ImportError:
        return None

    def run(A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = PCA(k, svd_solver=solver, random_state=0).fit(A.numpy())
        # copy(): sklearn's components can have negative strides, which torch refuses.
        Vh = torch.from_numpy(p.components_.copy()).to(A.dtype)
        S = torch.from_numpy(p.singular_values_.copy()).to(A.dtype)
        # sklearn returns no U: A_c v / σ, which makes its residual zero by construction (its
        # accuracy is the projector column).
        U = (A - A.mean(dim=0)) @ Vh.mH / S
        return U, S, Vh

    return run


def _accuracy(A: torch.Tensor, k: int, result: tuple[torch.Tensor, ...]) -> tuple[float, float]:
    U, S, Vh = (t.double() for t in result)
    Ac = A.double() - A.double().mean(dim=0)
    _, _, Vr = _dense(A.double(), k)
    proj = float(torch.linalg.matrix_norm(Vh.mH @ Vh - Vr.mH @ Vr, ord=2))
    resid = (Ac @ Vh.mH - U * S).norm(dim=0).max() / S[0]
    return proj, float(resid)


def _loss(result: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    _, S, Vh = result
    return S.sum() + (Vh.sum(dim=-1) ** 2).sum()


def _row(name: str, method: Method, A: torch.Tensor, k: int, repeats: int) -> str:
    """One table row: the method's times against torchsvd.pca's, and its accuracy."""
    cpu = torch.device("cpu")
    t_peer, t_ours = time_pair((lambda: method(A, k), lambda: _ours(A, k)), repeats, cpu)
    both = "– | –"
    if name.startswith("torch"):  # differentiable: forward+backward too
        X = A.clone().requires_grad_()
        b_peer, b_ours = time_pair(
            (lambda: _loss(method(X, k)).backward(), lambda: _loss(_ours(X, k)).backward()),
            repeats,
            cpu,
        )
        both = f"{b_peer:.4g} | {b_peer / b_ours:.2f}"
    proj, resid = _accuracy(A, k, method(A, k))
    return f"| {name} | {t_peer:.4g} | {t_peer / t_ours:.2f} | {both} | {proj:.1e} | {resid:.1e} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    A = patches(6000 if args.quick else 60000, dtype)
    k = args.k
    print(
        f"torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads, {args.dtype}, A {tuple(A.shape)}, k = {k}, "
        f"median of {args.repeats}"
    )
    methods: dict[str, Method | None] = {
        "torch.linalg.svd (centred)": _dense,
        "torch.pca_lowrank(q=k+10, niter=4)": _lowrank,
        "sklearn PCA arpack": _sklearn("arpack"),
        "sklearn PCA randomized": _sklearn("randomized"),
    }
    print("\n| method | fwd (s) | ratio | fwd+bwd (s) | ratio | ‖P − P_ref‖₂ | residual |")
    print("|---|---|---|---|---|---|---|")
    for name, method in methods.items():
        if method is None:
            print(f"| {name} | not installed | | | | | |")
        else:
            print(_row(name, method, A, k, args.repeats))
    proj, resid = _accuracy(A, k, _ours(A, k))
    print(f"| torchsvd.pca | | 1.00 | | 1.00 | {proj:.1e} | {resid:.1e} |")


if __name__ == "__main__":
    main()
