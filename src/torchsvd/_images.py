r"""Low-rank image compression: the numbers and the pictures behind ``torchsvd compress``.

An image is a batch of matrices, one per colour channel, X ∈ [0, 1]^{C×H×W}. One SVD of the
batch gives every rank-k approximation X_k = U_k Σ_k V_kᵀ (per channel); for each k the table
reports

- storage ratio k(H + W + 1) / (HW): numbers kept (U_k, σ, V_k) over pixels, per channel;
- relative Frobenius error ‖X − X_k‖_F / ‖X‖_F over all channels, which by Eckart–Young equals
  √(Σ_c Σ_{i>k} σ_{c,i}²) / √(Σ_c Σ_i σ_{c,i}²);
- σ_{k+1}/σ_1 = ‖X_c − X_{c,k}‖₂ / ‖X_c‖₂, the worst channel;
- PSNR = 10 log₁₀(1 / MSE) in dB, peak value 1, MSE over all pixels and channels.

The metrics are those of the approximation X_k itself; the pictures clip it to [0, 1] for display
(which can only bring each pixel closer to the original).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchsvd._svd import svd

__all__ = [
    "CompressionRow",
    "compress_image",
    "markdown_table",
    "parse_ranks",
    "save_grid",
    "save_singular_values",
    "save_spectrum",
    "write_csv",
]

_COLUMNS = ("rank", "storage_ratio", "rel_frobenius_error", "sigma_ratio", "psnr_db")


@dataclass(frozen=True)
class CompressionRow:
    """One line of the compression table (see the module docstring for the definitions)."""

    rank: int
    storage_ratio: float
    rel_frobenius_error: float
    sigma_ratio: float
    psnr_db: float


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


def compress_image(
    image: np.ndarray, ranks: Sequence[int], *, progress: Callable[[], object] | None = None
) -> tuple[dict[int, np.ndarray], list[CompressionRow], np.ndarray]:
    """Rank-k approximations of an image and the table of their quality.

    Parameters
    ----------
    image : ndarray ``(H, W)`` or ``(H, W, C)``, values in [0, 1]
    ranks : sequence of int, each in ``[1, min(H, W)]``
    progress : callable, optional
        Called once after the SVD and once per rank (for a progress bar).

    Returns
    -------
    reconstructions : dict rank → ndarray of the image's shape (not clipped)
    rows : list of CompressionRow, one per rank
    singular_values : ndarray ``(C, min(H, W))``, float64, descending per channel

    Examples
    --------
    >>> img = np.outer(np.linspace(0, 1, 8), np.linspace(1, 0, 6))  # rank 1
    >>> _, rows, s = compress_image(img, [1])
    >>> rows[0].rank, round(rows[0].rel_frobenius_error, 6), rows[0].storage_ratio
    (1, 0.0, 0.3125)
    """
    h, w = image.shape[:2]
    kmax = min(h, w)
    bad = [k for k in ranks if not 1 <= k <= kmax]
    if bad:
        raise ValueError(
            f"rank {bad[-1]} is larger than the image allows: ranks go from 1 to "
            f"min(height, width) = min({h}, {w}) = {kmax}"
        )
    # Channels as a batch (C, H, W); float32 is plenty for 8-bit pixel data and 4× faster here.
    X = torch.from_numpy(np.ascontiguousarray(np.atleast_3d(image).transpose(2, 0, 1)))
    X = X.to(torch.float32)
    with torch.no_grad():
        U, S, Vh = svd(X)
    if progress is not None:
        progress()
    total = float(torch.linalg.vector_norm(X.double()))
    recon: dict[int, np.ndarray] = {}
    rows = []
    for k in ranks:
        with torch.no_grad():
            Xk = (U[..., :k] * S[..., None, :k]) @ Vh[..., :k, :]
        err = (X - Xk).double()
        mse = float((err**2).mean())
        s_next = S[:, k] if k < kmax else torch.zeros_like(S[:, 0])
        ratio = float((s_next / S[:, 0].clamp_min(torch.finfo(S.dtype).tiny)).max())
        rows.append(
            CompressionRow(
                rank=k,
                storage_ratio=k * (h + w + 1) / (h * w),
                rel_frobenius_error=float(torch.linalg.vector_norm(err)) / total if total else 0.0,
                sigma_ratio=ratio,
                psnr_db=10 * math.log10(1 / mse) if mse > 0 else math.inf,
            )
        )
        out = Xk.numpy().transpose(1, 2, 0).astype(np.float64)
        recon[k] = out[..., 0] if image.ndim == 2 else out
        if progress is not None:
            progress()
    return recon, rows, S.double().numpy()


def markdown_table(rows: Sequence[CompressionRow]) -> str:
    """The table as Markdown (also readable as plain text)."""
    lines = [
        "| rank | storage | rel. Frobenius error | σ_{k+1}/σ_1 | PSNR (dB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.rank} | {r.storage_ratio:.2%} | {r.rel_frobenius_error:.4f} | "
            f"{r.sigma_ratio:.4f} | {r.psnr_db:.2f} |"
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


def _figure(width: float, height: float) -> Any:
    # A bare Figure with the Agg canvas: no pyplot, no GUI backend, no global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_grid(
    image: np.ndarray,
    recon: dict[int, np.ndarray],
    rows: Sequence[CompressionRow],
    path: Path,
    title: str,
) -> None:
    """Original and reconstructions side by side (clipped to [0, 1] for display), as PNG."""
    panels = [("original", image)] + [
        (f"rank {r.rank}\n{r.storage_ratio:.1%} storage, {r.psnr_db:.1f} dB", recon[r.rank])
        for r in rows
    ]
    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    h, w = image.shape[:2]
    tile = 3.2
    fig = _figure(tile * ncols, tile * nrows * h / w + 0.6 * nrows + 0.4)
    fig.suptitle(title)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (label, img) in zip(axes.flat, panels, strict=False):
        shown = np.clip(img, 0.0, 1.0)
        ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(label, fontsize=9)
    fig.savefig(path, format="png", dpi=100)


def save_spectrum(S: np.ndarray, ranks: Sequence[int], path: Path, title: str) -> None:
    """σ_i/σ_1 (log scale) and cumulative energy Σ_{i≤k} σ_i² / Σ σ_i², per channel, as PNG.

    The energy axis is logarithmic in k: the first singular value (the mean brightness) holds
    most of the energy of a photograph, and the interesting part is at small k.
    """
    fig = _figure(9.5, 3.8)
    fig.suptitle(title)
    ax_s, ax_e = fig.subplots(1, 2)
    colours = ["tab:red", "tab:green", "tab:blue"] if S.shape[0] == 3 else ["black"]
    names = ["red", "green", "blue"] if S.shape[0] == 3 else ["grey"]
    i = np.arange(1, S.shape[1] + 1)
    energies = []
    for s, c, name in zip(S, colours, names, strict=True):
        top = s[0] if s[0] > 0 else 1.0
        ax_s.semilogy(i, np.maximum(s / top, 1e-16), color=c, lw=1.2, label=name)
        energy = np.cumsum(s**2) / max(float(np.sum(s**2)), np.finfo(float).tiny)
        energies.append(energy)
        ax_e.semilogx(i, energy, color=c, lw=1.2, label=name)
    mean_energy = np.mean(energies, axis=0)
    for k in ranks:
        for ax in (ax_s, ax_e):
            ax.axvline(k, color="0.5", ls="--", lw=0.8)
        ax_e.annotate(
            f"k={k}: {mean_energy[k - 1]:.1%}",
            (k, mean_energy[k - 1]),
            xytext=(4, -14),
            textcoords="offset points",
            fontsize=8,
            color="0.2",
        )
    ax_s.set(xlabel="index $i$", ylabel=r"$\sigma_i / \sigma_1$", title="singular values")
    ax_e.set(
        xlabel="rank $k$",
        ylabel="fraction of the energy",
        title=r"cumulative energy $\sum_{i \leq k} \sigma_i^2 \,/\, \sum_i \sigma_i^2$",
    )
    low = float(min(e[0] for e in energies))
    ax_e.set_ylim(max(0.0, low - 0.05 * (1 - low) - 0.01), 1.005)
    ax_s.legend(fontsize=8)
    ax_e.legend(fontsize=8, loc="lower right")
    for ax in (ax_s, ax_e):
        ax.grid(alpha=0.3)
    fig.savefig(path, format="png", dpi=110)


def save_singular_values(S: np.ndarray, tol: float, path: Path, title: str) -> None:
    """Singular values of a matrix (log scale) with the rank tolerance, as PNG (``info --plot``)."""
    fig = _figure(5.5, 3.6)
    ax = fig.subplots()
    i = np.arange(1, S.size + 1)
    kept = S > tol
    floor = max(tol, float(S[0]) * 1e-17, np.finfo(float).tiny) / 10
    ax.semilogy(i[kept], S[kept], "o-", ms=4, color="tab:blue", label=r"$\sigma_i$ > tolerance")
    if (~kept).any():
        ax.semilogy(i[~kept], np.maximum(S[~kept], floor), "x", color="tab:red", label="≈ 0")
    if tol > 0:
        ax.axhline(tol, color="tab:red", ls="--", lw=0.8, label=f"tolerance {tol:.3g}")
    ax.set(xlabel="index $i$", ylabel=r"$\sigma_i$", title=title)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, format="png", dpi=110)
