"""Matrices with a prescribed spectrum, for tests, benchmarks and experiments.

Every generator takes a ``seed`` (or a ``torch.Generator``) so that results are reproducible,
and builds matrices as ``U diag(s) Vᴴ`` with Haar-distributed orthogonal/unitary factors, so the
singular values are exactly the ones asked for (up to rounding in the product).

Examples
--------
>>> import torch
>>> from torchsvd.testing import matrix_with_singular_values, spectrum
>>> s = spectrum("ties", 4, dtype=torch.float64)
>>> s
tensor([3., 3., 1., 1.], dtype=torch.float64)
>>> A = matrix_with_singular_values(s, 6, 4, seed=0)
>>> torch.allclose(torch.linalg.svdvals(A), s)
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["matrix_with_singular_values", "numerical_gradient", "random_unitary", "spectrum"]

_SPECTRA = ("decaying", "geometric", "ties", "identity", "zeros", "cluster", "dynamic", "gaussian")


def _generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else int(seed))
    return gen


def random_unitary(
    n: int,
    p: int | None = None,
    *,
    batch: Sequence[int] = (),
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    seed: int | torch.Generator | None = None,
) -> torch.Tensor:
    """Haar-random matrices with orthonormal columns, shape ``(*batch, n, p)`` (p defaults to n).

    Real for real dtypes (orthogonal), complex for complex dtypes (unitary). The QR factor's
    column phases are fixed by the diagonal of R so the distribution is exactly Haar.

    Examples
    --------
    >>> Q = random_unitary(5, 3, dtype=torch.complex128, seed=1)
    >>> torch.allclose(Q.mH @ Q, torch.eye(3, dtype=Q.dtype))
    True
    """
    p = n if p is None else p
    if not 0 <= p <= n:
        raise ValueError(f"random_unitary needs 0 <= p <= n, got n={n}, p={p}")
    dev = torch.device("cpu") if device is None else torch.device(device)
    gen = _generator(seed, dev)
    shape = (*batch, n, n)
    # Draw on the generator's device in float64 and convert, so a seed means the same matrix
    # whatever the requested dtype.
    real = torch.float64 if not dtype.is_complex else torch.complex128
    if real.is_complex:
        z = torch.complex(
            torch.randn(shape, generator=gen, dtype=torch.float64, device=dev),
            torch.randn(shape, generator=gen, dtype=torch.float64, device=dev),
        )
    else:
        z = torch.randn(shape, generator=gen, dtype=torch.float64, device=dev)
    # The first p columns of Q and of diag(R) depend on the first p columns of z only: their
    # QR is the same matrix to rounding and far cheaper (`matrix_with_singular_values` at
    # 10000×1000: 32 s with the QR of all of z, 3 s now, most of it drawing z). All of z is
    # still drawn, so that a seed gives the same matrix whatever p.
    q, r = torch.linalg.qr(z[..., :p])
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    phase = d / d.abs().clamp_min(torch.finfo(torch.float64).tiny)
    return (q * phase.conj().unsqueeze(-2)).to(dtype)


def spectrum(
    kind: str,
    k: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    scale: float = 1.0,
    seed: int | torch.Generator | None = None,
) -> torch.Tensor:
    """A descending vector of ``k`` singular values of a named shape, times ``scale``.

    ``kind`` is one of

    - ``"decaying"``: 1, 1/2, ..., 1/k (data, images, trained weights);
    - ``"geometric"``: 2^0, 2^-1, ..., 2^-(k-1);
    - ``"ties"``: pairs of exactly equal values 2·⌈k/2⌉-1, ..., 3, 3, 1, 1;
    - ``"identity"``: all ones (every orthogonal matrix);
    - ``"zeros"``: k//2 distinct positive values followed by exact zeros (rank-deficient);
    - ``"cluster"``: 1 + 1e-8·(k-i) for the first half, then decaying (near-ties);
    - ``"dynamic"``: logarithmically spaced from 1 down to 1e-12 (huge dynamic range);
    - ``"gaussian"``: the singular values of a Gaussian k×k matrix scaled by 1/√k.

    The singular values are real even for complex ``dtype``s (they use the matching real dtype).
    """
    if kind not in _SPECTRA:
        raise ValueError(f"unknown spectrum kind {kind!r}; expected one of {', '.join(_SPECTRA)}")
    if k < 0:
        raise ValueError(f"spectrum size k must be >= 0, got {k}")
    real = dtype.to_real() if dtype.is_complex else dtype
    i = torch.arange(k, dtype=torch.float64)
    if kind == "decaying":
        s = 1.0 / (i + 1)
    elif kind == "geometric":
        s = 2.0**-i
    elif kind == "ties":
        s = 2 * torch.div(k - 1 - i, 2, rounding_mode="floor") + 1
    elif kind == "identity":
        s = torch.ones(k, dtype=torch.float64)
    elif kind == "zeros":
        s = torch.where(i < k // 2, (k // 2 - i).to(torch.float64), 0.0)
    elif kind == "cluster":
        h = (k + 1) // 2
        s = torch.where(i < h, 1 + 1e-8 * (h - i), 0.5 / (i - h + 1))
    elif kind == "dynamic":
        s = torch.logspace(0, -12, k, dtype=torch.float64) if k > 1 else torch.ones(k)
    else:  # gaussian
        gen = _generator(seed, torch.device("cpu"))
        g = torch.randn(k, k, generator=gen, dtype=torch.float64)
        s = torch.linalg.svdvals(g) / max(k, 1) ** 0.5
    return (scale * s).to(device=device, dtype=real)


def matrix_with_singular_values(
    s: torch.Tensor | Sequence[float],
    m: int,
    n: int,
    *,
    batch: Sequence[int] = (),
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    seed: int | torch.Generator | None = None,
) -> torch.Tensor:
    """A matrix ``U diag(s) Vᴴ`` of shape ``(*batch, m, n)`` with the given singular values.

    Parameters
    ----------
    s : tensor of shape ``(..., r)`` or sequence of floats
        Non-negative singular values, ``r <= min(m, n)``; missing ones are zero. Leading
        dimensions broadcast against ``batch``. They need not be sorted.
    m, n : int
        Matrix shape.
    batch : sequence of int
        Batch shape of the result (combined with the leading dimensions of ``s`` by broadcasting).
    dtype : torch.dtype, optional
        Result dtype; defaults to ``s``'s dtype (float64 for a sequence). A complex dtype gives
        unitary factors.
    seed : int or torch.Generator, optional
        Seed of the random factors.

    Examples
    --------
    >>> A = matrix_with_singular_values([2.0, 0.0], 3, 2, batch=(4,), seed=0)
    >>> A.shape
    torch.Size([4, 3, 2])
    >>> torch.linalg.matrix_rank(A).tolist()
    [1, 1, 1, 1]
    """
    s_t = torch.as_tensor(s, dtype=torch.float64 if not isinstance(s, torch.Tensor) else None)
    if dtype is None:
        dtype = s_t.dtype
    if not (dtype.is_floating_point or dtype.is_complex):
        raise TypeError(f"dtype must be floating or complex, got {dtype}")
    k = min(m, n)
    r = s_t.shape[-1] if s_t.ndim else 1
    if s_t.ndim == 0:
        s_t = s_t.reshape(1)
    if r > k:
        raise ValueError(f"got {r} singular values for a {m}x{n} matrix (at most {k})")
    if bool((s_t < 0).any()):
        raise ValueError("singular values must be non-negative")
    dev = torch.device("cpu") if device is None else torch.device(device)
    full_batch = torch.broadcast_shapes(tuple(batch), s_t.shape[:-1])
    gen = _generator(seed, dev)
    work = torch.complex128 if dtype.is_complex else torch.float64
    U = random_unitary(m, k, batch=full_batch, dtype=work, device=dev, seed=gen)
    V = random_unitary(n, k, batch=full_batch, dtype=work, device=dev, seed=gen)
    sk = torch.zeros((*full_batch, k), dtype=torch.float64, device=dev)
    sk[..., :r] = s_t.to(device=dev, dtype=torch.float64).expand(*full_batch, r)
    A = (U * sk.unsqueeze(-2).to(work)) @ V.mH
    return A.to(dtype)


def numerical_gradient(
    f: Callable[[torch.Tensor], torch.Tensor], A: torch.Tensor, h: float = 1e-6
) -> torch.Tensor:
    """Gradient of a real scalar function by central differences, entry by entry.

    Valid wherever ``f`` is smooth — in particular at repeated singular values, where analytic
    SVD-based rules are delicate — so it is the reference the tests trust. For a complex ``A``
    it returns ∂f/∂Re(A) + i·∂f/∂Im(A), PyTorch's convention for the gradient of a real loss.
    Costs 2 evaluations per real entry: use on small matrices, in float64.

    Examples
    --------
    >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    >>> numerical_gradient(lambda X: (X**2).sum(), A).round(decimals=6)
    tensor([[2., 4.],
            [6., 8.]], dtype=torch.float64)
    """
    A = A.detach()
    flat = A.reshape(-1)
    grad = torch.zeros_like(flat)
    steps = (1.0, 1j) if A.is_complex() else (1.0,)
    with torch.no_grad():
        for idx in range(flat.numel()):
            for step in steps:
                plus, minus = flat.clone(), flat.clone()
                plus[idx] += step * h
                minus[idx] -= step * h
                df = f(plus.reshape(A.shape)) - f(minus.reshape(A.shape))
                grad[idx] += step * float(df) / (2 * h)
    return grad.reshape(A.shape)
