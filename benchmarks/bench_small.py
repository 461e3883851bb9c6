"""Batches of 2×2 and 3×3 SVDs: torchsvd's elementwise kernel against torch.linalg.svd and peers.

Usage: python benchmarks/bench_small.py [--quick] [--repeats N] [--device cpu|cuda]

Times (medians, each pair of callables alternated by `_timing.time_pair`) of the forward pass and
of forward+backward of a polar-type loss ((U Vh)·W + ΣS), float32: torch.linalg.svd against
torchsvd.svd, which takes the small-matrix kernel for these batches, and 1000×8×8 on the general
path. Peers, when installed (never required), each alternated with torchsvd in the same run:
JAX ``jit`` on the CPU (``jnp.linalg.svd`` forward, and ``jax.jit(jax.grad(loss))`` of the same
loss), ``roma.special_procrustes`` against ``torchsvd.polar(special=True)``. Beside the times:
reconstruction and orthogonality errors in units of eps (worst matrix of the batch), and the
error of the float32 gradient of the loss at a tie (orthogonal inputs, all σ equal) against
float64 central differences.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import torchsvd
from _timing import device_args, machine_line, print_pair_table, time_pair
from bench_svd import _torch_svd, bench_shape
from torchsvd import _small
from torchsvd._svd import default_rtol
from torchsvd.testing import numerical_gradient, random_unitary

SHAPES = [(100000, 3, 3), (100000, 2, 2), (1000, 8, 8)]
QUICK_SHAPES = [(2000, 3, 3), (2000, 2, 2), (100, 8, 8)]

Decomposition = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _loss(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return ((U @ Vh) * W).sum() + S.sum()


def _errors(svd: Decomposition, A: torch.Tensor) -> tuple[float, float]:
    """Worst reconstruction error / σ_max and orthogonality error, in units of eps."""
    U, S, Vh = svd(A)
    eps = torch.finfo(A.dtype).eps
    rec = ((U * S.unsqueeze(-2)) @ Vh - A).abs().amax((-2, -1)) / S[..., 0]
    eye = torch.eye(S.shape[-1], dtype=A.dtype, device=A.device)
    orth = torch.maximum(
        (U.mT @ U - eye).abs().amax((-2, -1)), (Vh @ Vh.mT - eye).abs().amax((-2, -1))
    )
    return float(rec.max()) / eps, float(orth.max()) / eps


def _tie_gradient_error(svd: Decomposition, n: int) -> float:
    """Relative error of the float32 gradient at orthogonal matrices against float64 FD."""
    Q = random_unitary(n, batch=(4,), seed=0)
    W = torch.randn(4, n, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss64(X: torch.Tensor) -> torch.Tensor:
        U, _, Vh = torchsvd.svd(X)
        return ((U @ Vh) * W).sum()

    ref = numerical_gradient(loss64, Q)
    A = Q.float().requires_grad_()
    U, _, Vh = svd(A)
    (g,) = torch.autograd.grad(((U @ Vh) * W.float()).sum(), A)
    return float((g.double() - ref).norm() / ref.norm())


def _jax_times(shape: tuple[int, ...], repeats: int) -> tuple[float, float, float, float] | None:
    """JAX jit on the CPU against torchsvd.svd, alternated: (JAX fwd, torchsvd fwd, JAX
    fwd+bwd, torchsvd fwd+bwd), the same loss and data; None when JAX is not installed."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    gen = torch.Generator().manual_seed(0)
    A_t, W_t = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    A, W = jnp.asarray(A_t.numpy()), jnp.asarray(W_t.numpy())
    Ag = A_t.clone().requires_grad_()

    def loss(X: jax.Array) -> jax.Array:
        U, S, Vh = jnp.linalg.svd(X, full_matrices=False)
        return ((U @ Vh) * W).sum() + S.sum()

    fwd = jax.jit(lambda X: jnp.linalg.svd(X, full_matrices=False))
    fb = jax.jit(jax.grad(loss))

    def ours_fwd() -> object:
        with torch.no_grad():
            return torchsvd.svd(A_t)

    def ours_fb() -> object:
        return torch.autograd.grad(_loss(*torchsvd.svd(Ag), W_t), Ag)

    cpu = torch.device("cpu")
    jax_fwd, our_fwd = time_pair((lambda: jax.block_until_ready(fwd(A)), ours_fwd), repeats, cpu)
    jax_fb, our_fb = time_pair((lambda: jax.block_until_ready(fb(A)), ours_fb), repeats, cpu)
    return jax_fwd, our_fwd, jax_fb, our_fb


def _rotation_times(
    n: int, N: int, repeats: int, device: torch.device
) -> tuple[float, float] | None:
    """fwd+bwd of roma.special_procrustes and torchsvd.polar(special=True), alternated; None
    when roma is not installed."""
    try:
        import roma
    except ImportError:
        return None
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(N, n, n, generator=gen).to(device).requires_grad_()
    W = torch.randn(N, n, n, generator=gen).to(device)

    def ours() -> object:
        R = torchsvd.polar(M, special=True)
        return torch.autograd.grad((R * W).sum(), M)

    def theirs() -> object:
        return torch.autograd.grad((roma.special_procrustes(M) * W).sum(), M)

    return time_pair((theirs, ours), repeats, device)


def main() -> None:
    args = device_args(__doc__, full_repeats=11)
    device, repeats = torch.device(args.device), args.repeats
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rows = [
        ("×".join(map(str, shape)), bench_shape(shape, repeats, device, _loss)) for shape in shapes
    ]
    print_pair_table(rows, machine_line(device, repeats))
    print()
    print("ratio: torch (or peer) time / torchsvd time (> 1: torchsvd is faster)")
    print()
    print(
        "| peer | shape | peer fwd (s) | torchsvd fwd (s) | ratio | peer fwd+bwd (s) "
        "| torchsvd fwd+bwd (s) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for shape in shapes[:2]:
        name = "×".join(map(str, shape))
        jax_times = _jax_times(shape, repeats) if device.type == "cpu" else None
        if jax_times is None:
            print(f"| JAX jit (CPU) | {name} | not installed or not CPU | | | | | |")
        else:
            jf, of, jb, ob = jax_times
            print(
                f"| JAX jit (CPU), svd | {name} | {jf:.4g} | {of:.4g} | {jf / of:.2f}× "
                f"| {jb:.4g} | {ob:.4g} | {jb / ob:.2f}× |"
            )
        rot = _rotation_times(shape[-1], shape[0], repeats, device)
        if rot is None:
            print(f"| roma.special_procrustes | {name} | roma missing | | | | | |")
        else:
            print(
                f"| roma.special_procrustes vs polar(special=True) | {name} | | | "
                f"| {rot[0]:.4g} | {rot[1]:.4g} | {rot[0] / rot[1]:.2f}× |"
            )
    print()
    print(
        "| shape | torch rec / eps | torchsvd rec / eps | torch orth / eps | torchsvd orth / eps |"
    )
    print("|---|---|---|---|---|")
    for shape in shapes[:2]:
        A = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(device)
        (rt, ot), (rs, os_) = _errors(_torch_svd, A), _errors(torchsvd.svd, A)
        print(f"| {'×'.join(map(str, shape))} | {rt:.1f} | {rs:.1f} | {ot:.1f} | {os_:.1f} |")
    print()
    print("float32 gradient of (U Vh)·W at 4 orthogonal matrices (all σ tied), relative error")
    print("against float64 central differences (torch.linalg.svd's is NaN there):")
    for n in (3, 2):
        small = _tie_gradient_error(lambda X: _small.svd(X, default_rtol(X.dtype)), n)
        naive = _tie_gradient_error(_torch_svd, n)
        print(f"  {n}×{n}: small kernel {small:.1e}, torch.linalg.svd {naive:.1e}")


if __name__ == "__main__":
    main()
