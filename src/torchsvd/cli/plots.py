"""The figures of the command line: matplotlib figures without pyplot, saved in the format the
file name's extension asks for. Each function returns the figure it saved."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from torchsvd.cli.images import Compression

__all__ = [
    "figure_format",
    "save_grid",
    "save_singular_values",
    "save_spectrum",
]


def _figure(width: float, height: float) -> Figure:
    # A bare Figure with the Agg canvas: no pyplot, no GUI backend, no global state.
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_format(path: Path) -> str:
    """The image format matplotlib writes for ``path``'s extension; ``ValueError`` if none.

    >>> figure_format(Path("s.SVG")), figure_format(Path("s.jpeg"))
    ('svg', 'jpeg')
    """
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    ext = path.suffix.lower().lstrip(".")
    if ext not in supported:
        raise ValueError(
            f"cannot write a figure to {str(path)!r}: the extension {path.suffix or '(none)'!r} "
            f"is not an image format; expected one of {', '.join('.' + e for e in supported)}"
        )
    return ext


def _save(fig: Figure, path: Path, fmt: str, dpi: int) -> None:
    fig.savefig(path, format=fmt, dpi=dpi)


def save_grid(c: Compression, path: Path, title: str, fmt: str = "png") -> Figure:
    """Original and reconstructions side by side (clipped to [0, 1] for display).

    The panels show ``c.original_preview`` and ``c.previews``: large images are downsampled to
    about twice their displayed size first (`torchsvd.cli.images.downsample`).
    """
    panels = [("original", c.original_preview)] + [
        (f"rank {r.rank}\n{r.storage_ratio:.1%} storage, {r.psnr_db:.1f} dB", c.previews[r.rank])
        for r in c.rows
    ]
    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    h, w = c.original_preview.shape[:2]
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
    _save(fig, path, fmt, dpi=100)
    return fig


def save_spectrum(c: Compression, path: Path, title: str, fmt: str = "png") -> Figure:
    """σ_i/σ_1 (log scale) and the cumulative energy Σ_{i≤k} σ_i² / ‖X_c‖_F², per channel.

    Only the singular values computed are drawn (the top ones when `torchsvd.svds` computed
    them; the energy needs only those, since Σ_i σ_i² = ‖X_c‖_F²). The energy axis is
    logarithmic in k: the first singular value (the mean brightness) holds most of the energy
    of a photograph, and the interesting part is at small k. The energy kept at each rank, over
    all channels, is listed in a box rather than next to the curve, where the labels of nearby
    ranks would overlap.
    """
    S = c.singular_values
    ranks = [r.rank for r in c.rows]
    fig = _figure(10, 4.0)
    fig.suptitle(title)
    ax_s, ax_e = fig.subplots(1, 2)
    colours = ["tab:red", "tab:green", "tab:blue"] if S.shape[0] == 3 else ["black"]
    names = ["red", "green", "blue"] if S.shape[0] == 3 else ["grey"]
    i = np.arange(1, S.shape[1] + 1)
    tiny = np.finfo(float).tiny
    energies = []
    for s, norm2, col, name in zip(S, c.squared_norms, colours, names, strict=True):
        top = s[0] if s[0] > 0 else 1.0
        positive = s > 0  # a zero has no place on a log axis
        ax_s.semilogy(i[positive], s[positive] / top, color=col, lw=1.2, label=name)
        energy = np.cumsum(s**2) / max(float(norm2), tiny)
        energies.append(energy)
        ax_e.semilogx(i, energy, color=col, lw=1.2, label=name)
    overall = np.sum([np.cumsum(s**2) for s in S], axis=0) / max(float(c.squared_norms.sum()), tiny)
    lines = []
    for k in ranks:
        for ax in (ax_s, ax_e):
            ax.axvline(k, color="0.5", ls="--", lw=0.8)
        ax_e.plot([k], [overall[k - 1]], "o", color="0.2", ms=3)
        lines.append(f"k = {k}: {overall[k - 1]:.2%}")
    ax_e.text(
        0.97,
        0.05,
        "energy kept, all channels\n" + "\n".join(lines),
        transform=ax_e.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
    )
    shown = "" if c.complete else f" (the top {S.shape[1]})"
    ax_s.set(xlabel="index $i$", ylabel=r"$\sigma_i / \sigma_1$", title="singular values" + shown)
    ax_e.set(
        xlabel="rank $k$",
        ylabel=r"$\sum_{i \leq k} \sigma_i^2 \,/\, \|X_c\|_F^2$",
        title="cumulative energy",
    )
    low = float(min(e[0] for e in energies))
    ax_e.set_ylim(max(0.0, low - 0.05 * (1 - low) - 0.01), 1.005)
    ax_s.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_s.legend(fontsize=8, loc="upper right")
    for ax in (ax_s, ax_e):
        ax.grid(alpha=0.3)
    _save(fig, path, fmt, dpi=110)
    return fig


def save_singular_values(
    S: np.ndarray, tol: float, path: Path, title: str, fmt: str = "png", *, total: int
) -> Figure:
    """Singular values of a matrix (log scale) with the rank tolerance (``info --plot``).

    Every positive σ is drawn at its value; exact zeros, which a log axis cannot show, are
    drawn on the bottom edge of the axes. ``S`` may be the top of a spectrum of ``total``
    values (the title says so).
    """
    with warnings.catch_warnings():
        # a log axis reaching σ near 1e300 overflows while placing its minor ticks; harmless
        warnings.simplefilter("ignore", RuntimeWarning)
        return _draw_singular_values(S, tol, path, title, fmt, total)


def _draw_singular_values(
    S: np.ndarray, tol: float, path: Path, title: str, fmt: str, total: int
) -> Figure:
    fig = _figure(6.0, 3.8)
    ax = fig.subplots()
    i = np.arange(1, S.size + 1)
    kept = S > tol
    small = ~kept & (S > 0)
    zero = S == 0
    ax.semilogy(i[kept], S[kept], "o-", ms=4, color="tab:blue", label=r"$\sigma_i$ > tolerance")
    if small.any():
        ax.semilogy(i[small], S[small], "x", color="tab:red", label=r"$\sigma_i$ ≤ tolerance")
    if zero.any():
        # x in data coordinates, y on the bottom edge of the axes
        ax.plot(
            i[zero],
            np.zeros(int(zero.sum())),
            "v",
            color="tab:red",
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label=r"$\sigma_i = 0$ (on the bottom edge)",
        )
    if tol > 0:
        ax.axhline(tol, color="tab:red", ls="--", lw=0.8, label=f"tolerance {tol:.3g}")
    top = "" if S.size == total else f" (the {S.size} largest of {total})"
    ax.set(xlabel="index $i$", ylabel=r"$\sigma_i$", title=title + top)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path, fmt, dpi=110)
    return fig
