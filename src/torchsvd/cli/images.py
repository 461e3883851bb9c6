r"""Low-rank image compression: the numbers behind ``torchsvd compress``.

An image is a batch of matrices, one per colour channel, X ∈ [0, 1]^{C×H×W}. The top singular
triplets of the batch give every rank-k approximation X_k = U_k Σ_k V_kᵀ (per channel); for
each k the table reports

- storage ratio k(H + W + 1) / (HW): numbers kept (U_k, σ, V_k) over pixels, per channel;
- relative Frobenius error ‖X − X_k‖_F / ‖X‖_F over all channels (by Eckart–Young equal to
  √(Σ_c Σ_{i>k} σ_{c,i}²) / ‖X‖_F, but computed from the difference itself, which keeps its
  digits when the error is small);
- σ_{k+1}/σ_1 = ‖X_c − X_{c,k}‖₂ / ‖X_c‖₂, the worst channel;
- PSNR = 10 log₁₀(1 / MSE) in dB, peak value 1, MSE over all pixels and channels.

Only the singular triplets the largest rank needs are computed: all of them by one dense SVD
(``torch.linalg.svd``) when the largest rank is a sizeable part of min(H, W), else the top
max(k) + 1 by ``torchsvd.svds`` (block Lanczos), whose cost grows with the ranks asked for
rather than with the size of the spectrum.

The metrics are those of the approximation X_k itself; the pictures clip it to [0, 1] for
display (which can only bring each pixel closer to the original).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from torchsvd import svds

__all__ = [
    "Compression",
    "CompressionRow",
    "compress_image",
    "downsample",
    "markdown_table",
    "parse_ranks",
    "write_csv",
]

_COLUMNS = ("rank", "storage_ratio", "rel_frobenius_error", "sigma_ratio", "psnr_db")
# svds computes the top p triplets when p is at most this fraction of min(H, W); above it one
# dense SVD of the batch costs about the same and gives the whole spectrum.
_SVDS_FRACTION = 1 / 16
# Longest side, in pixels, of the images drawn in the figures (about twice the size at which
# a panel is shown, so that nothing visible is lost).
PREVIEW_PIXELS = 640


@dataclass(frozen=True)
class CompressionRow:
    """One line of the compression table (see the module docstring for the definitions)."""

    rank: int
    storage_ratio: float
    rel_frobenius_error: float
    sigma_ratio: float
    psnr_db: float


@dataclass(frozen=True)
class Compression:
    """What `compress_image` computed.

    Attributes
    ----------
    rows : list of CompressionRow, one per rank
    singular_values : ndarray ``(C, p)``, float64, the p largest per channel, descending
        (p = min(H, W) when ``complete``)
    squared_norms : ndarray ``(C,)``, ‖X_c‖_F² (the sum of all squared singular values)
    previews : dict rank → the approximation downsampled for display (not clipped)
    original_preview : the image downsampled the same way
    method : str, which solver computed the singular values
    complete : bool, whether every singular value was computed
    """

    rows: list[CompressionRow]
    singular_values: np.ndarray
    squared_norms: np.ndarray
    previews: dict[int, np.ndarray]
    original_preview: np.ndarray
    method: str
    complete: bool


def parse_ranks(text: str) -> list[int]:
    """``"5,20,50"`` → ``[5, 20, 50]`` (sorted, without repeats); positive integers only.

    >>> parse_ranks("50, 5,20,5")
    [5, 20, 50]
    """
    ranks = set()
    for tok in text.split(","):
        tok = tok.strip()
        if not tok.isdigit() or int(tok) < 1:
            raise ValueError(
                f"ranks must be positive integers separated by commas, got {tok!r} in {text!r}"
            )
        ranks.add(int(tok))
    return sorted(ranks)


def check_ranks(shape: tuple[int, ...], ranks: Sequence[int]) -> None:
    """``ValueError`` unless every rank is in ``[1, min(H, W)]`` for an image of ``shape``."""
    h, w = shape[:2]
    kmax = min(h, w)
    bad = [k for k in ranks if not 1 <= k <= kmax]
    if bad:
        raise ValueError(
            f"rank {bad[-1]} is larger than the image allows: ranks go from 1 to "
            f"min(height, width) = min({h}, {w}) = {kmax}"
        )


def solver(shape: tuple[int, ...], ranks: Sequence[int]) -> tuple[int, str]:
    """How many singular triplets per channel `compress_image` computes, and with what."""
    kmin = min(shape[:2])
    p = min(max(ranks) + 1, kmin)
    if p <= _SVDS_FRACTION * kmin:
        return p, f"torchsvd.svds, the top {p} of {kmin}"
    return kmin, "torch.linalg.svd, all of them"


def downsample(image: np.ndarray, pixels: int = PREVIEW_PIXELS) -> np.ndarray:
    """The image shrunk by an integer factor f (mean of f×f blocks) to at most ``pixels`` a side.

    The last rows and columns that do not fill a block (fewer than f) are left out. Images
    already small enough are returned unchanged.

    >>> downsample(np.arange(16.0).reshape(4, 4), pixels=2)
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    h, w = image.shape[:2]
    f = math.ceil(max(h, w) / pixels)
    if f <= 1:
        return image
    hh, ww = h // f, w // f
    blocks = image[: hh * f, : ww * f].reshape(hh, f, ww, f, *image.shape[2:])
    return blocks.mean(axis=(1, 3))


def compress_image(
    image: np.ndarray, ranks: Sequence[int], *, progress: Callable[[str], object] | None = None
) -> Compression:
    """Rank-k approximations of an image and the table of their quality.

    Parameters
    ----------
    image : ndarray ``(H, W)`` or ``(H, W, C)``, values in [0, 1]
    ranks : sequence of int, each in ``[1, min(H, W)]``
    progress : callable, optional
        Called with a description at the start of each step (the SVD, then one per rank).

    Returns
    -------
    Compression

    Examples
    --------
    >>> img = np.outer(np.linspace(0, 1, 8), np.linspace(1, 0, 6))  # rank 1
    >>> c = compress_image(img, [1])
    >>> r = c.rows[0]
    >>> r.rank, r.rel_frobenius_error < 1e-6, r.storage_ratio
    (1, True, 0.3125)
    """
    check_ranks(image.shape, ranks)
    h, w = image.shape[:2]
    kmin = min(h, w)
    p, method = solver(image.shape, ranks)
    # Channels as a batch (C, H, W); float32 is plenty for 8-bit pixel data.
    X = torch.from_numpy(np.ascontiguousarray(np.atleast_3d(image).transpose(2, 0, 1)))
    X = X.to(torch.float32)
    if progress is not None:
        c = X.shape[0]
        progress(f"singular values of {c} channel{'s' * (c > 1)} of {h} × {w} ({method})")
    with torch.no_grad():
        if p < kmin:
            U, S, Vh = svds(X, p)
        else:
            U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    squared = (X.double() ** 2).sum(dim=(-2, -1))
    total = math.sqrt(float(squared.sum()))
    previews: dict[int, np.ndarray] = {}
    rows = []
    for k in ranks:
        if progress is not None:
            progress(f"rank {k}")
        err_sq = 0.0
        channels = []
        for ch in range(X.shape[0]):  # one channel at a time bounds the memory
            with torch.no_grad():
                Xk = (U[ch, :, :k] * S[ch, None, :k]) @ Vh[ch, :k, :]
            err_sq += float(((X[ch] - Xk).double() ** 2).sum())
            channels.append(downsample(Xk.numpy()).astype(np.float64))
        mse = err_sq / X.numel()
        s_next = S[:, k] if k < kmin else torch.zeros_like(S[:, 0])
        ratio = float((s_next / S[:, 0].clamp_min(torch.finfo(S.dtype).tiny)).max())
        rows.append(
            CompressionRow(
                rank=k,
                storage_ratio=k * (h + w + 1) / (h * w),
                rel_frobenius_error=math.sqrt(err_sq) / total if total else 0.0,
                sigma_ratio=ratio,
                psnr_db=10 * math.log10(1 / mse) if mse > 0 else math.inf,
            )
        )
        previews[k] = channels[0] if image.ndim == 2 else np.stack(channels, axis=-1)
    return Compression(
        rows=rows,
        singular_values=S.double().numpy(),
        squared_norms=squared.numpy(),
        previews=previews,
        original_preview=downsample(image),
        method=method,
        complete=p == kmin,
    )


def _sig(x: float) -> str:
    """Four significant digits: a small error stays visible (1.234e-06, not 0.0000)."""
    return f"{x:.4g}"


def markdown_table(rows: Sequence[CompressionRow]) -> str:
    """The table as Markdown (also readable as plain text), four significant digits."""
    lines = [
        "| rank | storage | rel. Frobenius error | σ_{k+1}/σ_1 | PSNR (dB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.rank} | {r.storage_ratio:.2%} | {_sig(r.rel_frobenius_error)} | "
            f"{_sig(r.sigma_ratio)} | {r.psnr_db:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[CompressionRow], path: Path) -> None:
    """The table as CSV, full precision (``repr`` of each float)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for r in rows:
        writer.writerow([repr(getattr(r, c)) for c in _COLUMNS])
    path.write_text(buf.getvalue(), encoding="utf-8")
