"""The ``torchsvd`` command line (also ``python -m torchsvd``): compress, info, explain, demo.

Errors in the input (a missing or unreadable file, a malformed matrix, a rank out of range, an
output directory that cannot be written) end the command with one line on stderr,
``torchsvd: error: <what was wrong>``, exit status 1 (2 for a wrong option or argument), and no
output file: everything is written to temporary files that are renamed only when the command
succeeds (:class:`torchsvd._io.OutputDir`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

__all__ = ["cli", "main"]

# Exceptions that mean "bad input" and are reported in one line; anything else is a bug and
# keeps its traceback.
_USER_ERRORS = (ValueError, TypeError, OSError, MemoryError)
SEED001 = "3 2 2; 2 3 -2"
COMPRESS_OUTPUTS = ("reconstructions.png", "spectrum.png", "compression.md", "compression.csv")


class _Main(click.Group):
    """A click group whose errors, its own included, are one line on stderr."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or "torchsvd",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except (click.exceptions.Abort, KeyboardInterrupt):
            _fail("interrupted", 130)
        except click.ClickException as exc:
            message = exc.format_message()
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            _fail(message, exc.exit_code)
        except _USER_ERRORS as exc:
            _fail(str(exc) or type(exc).__name__, 1)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message: str, code: int) -> None:
    click.echo(f"torchsvd: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="torchsvd", prog_name="torchsvd")
def cli() -> None:
    """The SVD toolkit: compress images, inspect matrices, explain the SVD step by step."""


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="torchsvd")


# --------------------------------------------------------------------------- compress


def _ranks_option(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    from torchsvd._images import parse_ranks

    try:
        return parse_ranks(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _run_compress(
    image_path: Path | None, ranks: list[int], out: Any, *, grey: bool
) -> tuple[list[Any], str]:
    """Load, compress, write the pictures and tables into ``out``; return rows and a title."""
    from tqdm import tqdm

    from torchsvd import _images, _io

    path = image_path if image_path is not None else _io.sample_image_path()
    image = _io.load_image(path, grey=grey)
    h, w = image.shape[:2]
    kind = "colour, channels as a batch" if image.ndim == 3 else "greyscale"
    title = f"{path.name} ({h}×{w}, {kind})"
    with tqdm(total=len(ranks) + 3, desc="compress", unit="step", disable=None, leave=False) as bar:
        recon, rows, S = _images.compress_image(image, ranks, progress=lambda: bar.update())
        _images.save_grid(image, recon, rows, out.path("reconstructions.png"), title)
        bar.update()
        _images.save_spectrum(S, ranks, out.path("spectrum.png"), f"singular values of {title}")
        bar.update()
        table = _images.markdown_table(rows)
        out.path("compression.md").write_text(f"Rank-k approximations of {title}\n\n{table}")
        _images.write_csv(rows, out.path("compression.csv"))
        bar.update()
    return rows, title


def _echo_written(out: Any) -> None:
    for p in out.names:
        click.echo(f"wrote {p}")


@cli.command(short_help="Best rank-k approximations of an image.")
@click.argument("image", required=False, type=click.Path(dir_okay=True, path_type=Path))
@click.option(
    "--ranks",
    default="5,20,50",
    show_default=True,
    callback=_ranks_option,
    help="Comma-separated ranks k of the approximations.",
)
@click.option(
    "--out",
    "out_dir",
    default="torchsvd-compress",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Output directory (created if missing).",
)
@click.option("--grey", is_flag=True, help="Convert a colour image to greyscale first.")
def compress(image: Path | None, ranks: list[int], out_dir: Path, grey: bool) -> None:
    """Best rank-k approximations of IMAGE (default: matplotlib's grace_hopper.jpg).

    Writes reconstructions.png (the approximations side by side), spectrum.png (singular values
    and cumulative energy), compression.md and compression.csv (rank, storage ratio, relative
    Frobenius error, σ_{k+1}/σ_1, PSNR), and prints the table.
    """
    from torchsvd._io import OutputDir

    protect = [image] if image is not None else []
    with OutputDir(out_dir, protect=protect, names=COMPRESS_OUTPUTS) as out:
        rows, title = _run_compress(image, ranks, out, grey=grey)
    from torchsvd._images import markdown_table

    click.echo(f"Rank-k approximations of {title}\n")
    click.echo(markdown_table(rows))
    _echo_written(out)


# --------------------------------------------------------------------------- info


def _matrix_report(A: np.ndarray, rtol: float | None) -> list[tuple[str, str]]:
    """The ``info`` lines: every number from torch.linalg (rank, cond, pinv, norms)."""
    T = torch.from_numpy(A)
    m, n = A.shape
    eps = float(torch.finfo(T.dtype).eps)
    rtol_used = max(m, n) * eps if rtol is None else rtol
    S = torch.linalg.svdvals(T)
    smax = float(torch.linalg.matrix_norm(T, ord=2))
    tol = rtol_used * smax
    rank = int(torch.linalg.matrix_rank(T, rtol=rtol_used))
    how = "max(m, n)·eps(float64)" if rtol is None else "--rtol"
    lines = [
        ("shape", f"{m} × {n}"),
        (
            "numerical rank",
            f"{rank}  (singular values > {tol:.3g} = rtol·σ_max, rtol = {rtol_used:.3g} = {how})",
        ),
        ("σ_max = ‖A‖₂", f"{smax:.6g}"),
    ]
    if rank:
        smin = float(S[rank - 1])
        pinv_norm = float(torch.linalg.matrix_norm(torch.linalg.pinv(T, rtol=rtol_used), ord=2))
        lines.append(("smallest non-zero σ", f"{smin:.6g}"))
        if rank == min(m, n):
            lines.append(
                ("condition number κ₂", f"{float(torch.linalg.cond(T)):.6g}  (σ_max/σ_min)")
            )
        else:
            lines.append(("condition number κ₂", "inf  (numerically rank-deficient)"))
        lines.append(("‖A⁺‖₂", f"{pinv_norm:.6g}  (1 / smallest non-zero σ)"))
    else:
        lines.append(("smallest non-zero σ", "none (A = 0)"))
        lines.append(("condition number κ₂", "inf  (A = 0)"))
    lines += [
        ("Frobenius norm", f"{float(torch.linalg.matrix_norm(T, ord='fro')):.6g}"),
        ("nuclear norm", f"{float(torch.linalg.matrix_norm(T, ord='nuc')):.6g}"),
        ("null-space dimension", f"{n - rank}  (n − rank)"),
    ]
    return lines


@cli.command(short_help="Rank, singular values, condition number and norms of a matrix file.")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--rtol",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=None,
    help="Relative rank tolerance (default max(m, n)·eps).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a PNG of the singular values to this path.",
)
def info(file: Path, rtol: float | None, plot: Path | None) -> None:
    """Rank, singular values, condition number and norms of the matrix in FILE.

    FILE is .npy (never unpickled), .csv/.txt (rows of numbers) or .mtx (Matrix Market).
    """
    from torchsvd._io import OutputDir, load_matrix

    A = load_matrix(file)
    lines = [("file", str(file)), *_matrix_report(A, rtol)]
    if plot is not None:
        from torchsvd._images import save_singular_values

        S = torch.linalg.svdvals(torch.from_numpy(A)).numpy()
        eps = float(np.finfo(np.float64).eps)
        tol = (max(A.shape) * eps if rtol is None else rtol) * float(S[0])
        with OutputDir(plot.parent, protect=[file], names=[plot.name]) as out:
            save_singular_values(S, tol, out.path(plot.name), f"singular values of {file.name}")
    width = max(len(k) for k, _ in lines) + 2
    for key, value in lines:
        click.echo(f"{key + ':':<{width}}{value}")
    if plot is not None:
        click.echo(f"wrote {plot}")


# --------------------------------------------------------------------------- explain


@cli.command("explain", short_help="The SVD of a small matrix by hand, step by step.")
@click.argument("matrix")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "latex"]),
    default="text",
    show_default=True,
)
@click.option("--digits", type=click.IntRange(1, 50), default=6, show_default=True)
def explain_command(matrix: str, fmt: str, digits: int) -> None:
    """The SVD of a small matrix (up to 4×4) by hand, exactly, step by step.

    MATRIX is a string, rows separated by ';' (e.g. "3 2 2; 2 3 -2"), or a .npy/.csv/.txt/.mtx
    file.
    """
    from torchsvd._io import MATRIX_SUFFIXES, load_matrix
    from torchsvd.explainer import explain

    path = Path(matrix)
    source: Any = matrix
    if path.suffix.lower() in MATRIX_SUFFIXES or path.is_file():
        source = load_matrix(path)
    click.echo(getattr(explain(source, digits=digits), fmt)(), nl=False)


# --------------------------------------------------------------------------- demo


def _gradient_demo(echo: Callable[[str], None]) -> list[str]:
    """Gradients at tied singular values: PyTorch's NaN next to torchsvd's, checked by finite
    differences. Returns the report lines (also echoed)."""
    import torchsvd

    def polar_sum(A: torch.Tensor, decompose: Callable[..., Any]) -> torch.Tensor:
        U, _, Vh = decompose(A)
        return (U @ Vh).sum()

    def central_differences(A: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
        # float64 central differences of the forward only (no backward involved)
        g = torch.zeros_like(A)
        with torch.no_grad():
            for idx in np.ndindex(*A.shape):
                E = torch.zeros_like(A)
                E[idx] = h
                up = polar_sum(A + E, torch.linalg.svd)
                down = polar_sum(A - E, torch.linalg.svd)
                g[idx] = (up - down) / (2 * h)
        return g

    cases = [
        ("a 4×4 orthogonal matrix", torchsvd.testing.random_unitary(4, seed=0)),
        (
            "a 3×3 matrix with σ = (2, 2, 1)",
            torchsvd.testing.matrix_with_singular_values([2.0, 2.0, 1.0], 3, 3, seed=1),
        ),
    ]
    lines = ["loss(A) = sum(U @ Vh) (U @ Vh is the polar factor), at matrices with tied σ:"]
    for name, A in cases:
        A_torch = A.clone().requires_grad_()
        (g_torch,) = torch.autograd.grad(polar_sum(A_torch, torch.linalg.svd), A_torch)
        A_ours = A.clone().requires_grad_()
        (g_ours,) = torch.autograd.grad(polar_sum(A_ours, torchsvd.svd), A_ours)
        g_fd = central_differences(A)
        bad = int((~torch.isfinite(g_torch)).sum())
        err = float((g_ours - g_fd).abs().max())
        lines += [
            f"  at {name}:",
            f"    torch.linalg.svd  gradient: {bad} of {g_torch.numel()} entries NaN or inf",
            f"    torchsvd.svd      gradient: "
            f"{'all finite' if bool(torch.isfinite(g_ours).all()) else 'NOT finite'}, "
            f"max |error| vs float64 central differences = {err:.1e}",
            "    first row of each gradient:",
            f"      torch.linalg.svd     {_row(g_torch[0])}",
            f"      torchsvd.svd         {_row(g_ours[0])}",
            f"      central differences  {_row(g_fd[0])}",
        ]
    for line in lines:
        echo(line)
    return lines


def _row(x: torch.Tensor) -> str:
    return "[" + ", ".join(f"{float(v):.4f}" for v in x) + "]"


@cli.command(short_help="Compression, an SVD by hand, and a gradient PyTorch gets as NaN.")
@click.option(
    "--out",
    "out_dir",
    default="torchsvd-demo",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Output directory (created if missing).",
)
def demo(out_dir: Path) -> None:
    """Compress an image, explain the SVD of seed 001's matrix, and show a gradient PyTorch
    returns as NaN next to torchsvd's finite one."""
    from torchsvd._images import markdown_table
    from torchsvd._io import OutputDir
    from torchsvd.explainer import explain

    with OutputDir(out_dir) as out:
        click.echo("== 1. Image compression: best rank-k approximations (Eckart–Young) ==\n")
        rows, title = _run_compress(None, [5, 20, 50], out, grey=False)
        click.echo(f"{title}\n")
        click.echo(markdown_table(rows))

        click.echo(f"== 2. The SVD by hand of [{SEED001}] (seed 001) ==\n")
        e = explain(SEED001)
        click.echo(e.text())
        out.path("explain.md").write_text(e.markdown(), encoding="utf-8")

        click.echo("== 3. A gradient that PyTorch returns as NaN ==\n")
        lines = _gradient_demo(click.echo)
        out.path("gradient.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        click.echo("")
    _echo_written(out)
