"""The commands of ``torchsvd``: compress, info, explain, demo (click)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import scipy.sparse
from tqdm import tqdm

from torchsvd import ConvergenceError
from torchsvd._validate import check_real
from torchsvd.cli import missing_extra
from torchsvd.cli.demo import EXAMPLE_MATRIX, gradient_demo
from torchsvd.cli.images import (
    Compression,
    check_ranks,
    compress_image,
    markdown_table,
    parse_ranks,
    write_csv,
)
from torchsvd.cli.io import MATRIX_SUFFIXES, OutputDir, load_image, load_matrix, sample_image_path
from torchsvd.cli.output import encodable, stream_encoding, write
from torchsvd.cli.plots import figure_format, save_grid, save_singular_values, save_spectrum
from torchsvd.cli.report import matrix_report

__all__ = ["cli"]

# Exceptions that mean "bad input" (or an input the explainer cannot handle exactly, or a
# machine too small for it) and are reported in one line.
_USER_ERRORS = (ValueError, TypeError, OSError, MemoryError, ArithmeticError)
# The largest matrix the explainer takes (its documented limit).
_EXPLAIN_MAX = 4
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
        except click.exceptions.Exit as exc:  # --help, --version
            rv = exc.exit_code
        except click.ClickException as exc:
            message = exc.format_message()
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            _fail(message, exc.exit_code)
        except ImportError as exc:
            _fail(missing_extra(exc) or f"{type(exc).__name__}: {exc}", 1)
        except ConvergenceError as exc:  # svds, in compress: one line, its own message
            _fail(str(exc), 1)
        except MemoryError as exc:
            _fail(f"out of memory ({exc or 'MemoryError'}); try a smaller input", 1)
        except _USER_ERRORS as exc:
            _fail(str(exc) or type(exc).__name__, 1)
        except Exception as exc:  # a bug: still one line, naming it, never a traceback
            _fail(f"internal error, please report it: {type(exc).__name__}: {exc}", 1)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message: str, code: int) -> None:
    write(f"torchsvd: error: {' '.join(message.split())}\n", sys.stderr)
    sys.exit(code)


class _Progress:
    """Progress on stderr: a bar on a terminal, else one line per step (for logs and pipes)."""

    def __init__(self, command: str, total: int) -> None:
        self.command = command
        self.total = total
        self.done = 0
        self.bar = (
            tqdm(total=total, desc=command, unit="step", leave=False, file=sys.stderr)
            if sys.stderr.isatty()
            else None
        )

    def __call__(self, step: str) -> None:
        """Announce the next step (and count the previous one as done)."""
        if self.bar is not None:
            if self.done:
                self.bar.update()
            self.bar.set_postfix_str(step)
        else:
            write(f"torchsvd {self.command} [{self.done + 1}/{self.total}]: {step}\n", sys.stderr)
        self.done += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="torchsvd", prog_name="torchsvd")
def cli() -> None:
    """The SVD toolkit: compress images, inspect matrices, explain the SVD step by step."""


# --------------------------------------------------------------------------- compress


def _ranks_option(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        return parse_ranks(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _run_compress(
    image_path: Path | None, ranks: list[int], out: OutputDir, *, grey: bool, command: str
) -> tuple[Compression, str]:
    """Load, compress, write the pictures and tables into ``out``; return the result, a title."""
    path = image_path if image_path is not None else sample_image_path()
    image = load_image(path, grey=grey)
    check_ranks(image.shape, ranks)  # before any progress output: a bad rank is one line
    h, w = image.shape[:2]
    kind = "colour, channels as a batch" if image.ndim == 3 else "greyscale"
    title = f"{path.name} ({h}×{w}, {kind})"
    progress = _Progress(command, len(ranks) + 3)
    try:
        result = compress_image(image, ranks, progress=progress)
        progress("figure of the reconstructions")
        save_grid(result, out.path("reconstructions.png"), title)
        progress("figure of the spectrum")
        save_spectrum(result, out.path("spectrum.png"), f"singular values of {title}")
    finally:
        progress.close()
    table = markdown_table(result.rows)
    out.path("compression.md").write_text(
        f"Rank-k approximations of {title}\n\n{table}", encoding="utf-8"
    )
    write_csv(result.rows, out.path("compression.csv"))
    return result, title


def _written(out: OutputDir) -> str:
    return "".join(f"wrote {p}\n" for p in out.names)


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
    Frobenius error, σ_{k+1}/σ_1, PSNR), and prints the table. Only the top max(k) + 1
    singular triplets are computed (torchsvd.svds) when that is a small part of the spectrum.
    Progress goes to stderr: a bar on a terminal, else one line per step.
    """
    protect = [image] if image is not None else []
    with OutputDir(out_dir, protect=protect, names=COMPRESS_OUTPUTS) as out:
        result, title = _run_compress(image, ranks, out, grey=grey, command="compress")
    write(
        f"Rank-k approximations of {title}\n"
        f"singular values: {result.method}\n\n{markdown_table(result.rows)}{_written(out)}"
    )


# --------------------------------------------------------------------------- info


def _rtol_option(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        return check_real(value, "--rtol", low=0.0, high=1.0, high_open=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _plot_option(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None:
        try:
            figure_format(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@cli.command(short_help="Rank, singular values, condition number and norms of a matrix file.")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--rtol",
    type=float,
    default=None,
    callback=_rtol_option,
    help="Relative rank tolerance, a finite number in [0, 1) (default max(m, n)·eps).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    callback=_plot_option,
    help="Also draw the singular values into this file (.png, .pdf, .svg, .jpg, ...: the "
    "format of its extension).",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="How many of the largest singular values to compute when a dense SVD is too large.",
)
@click.option(
    "--full",
    is_flag=True,
    help="Compute every singular value with a dense SVD, however large the matrix.",
)
@click.option(
    "--cond",
    is_flag=True,
    help="When a dense SVD is too large: estimate κ₂ of a square matrix from an LU "
    "factorization (σ_max·‖A⁻¹‖₂).",
)
@click.option(
    "--maxiter",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Block steps allowed to torchsvd.svds when a dense SVD is too large.",
)
def info(
    file: Path,
    rtol: float | None,
    plot: Path | None,
    top: int,
    full: bool,
    cond: bool,
    maxiter: int,
) -> None:
    """Rank, singular values, condition number and norms of the matrix in FILE.

    FILE is .npy (never unpickled), .csv/.txt (rows of numbers) or .mtx (Matrix Market, dense
    or sparse). A matrix small enough gets one dense SVD and every number; a sparse matrix, or
    a dense one too large for a dense SVD in a few seconds, gets its --top largest singular
    values from torchsvd.svds (never densified), and only what follows from them.
    """
    A = load_matrix(file)
    progress = _Progress("info", 1)
    try:
        report = matrix_report(
            A, rtol, top=top, full=full, cond=cond, maxiter=maxiter, progress=progress
        )
    finally:
        progress.close()
    # Keys as the terminal will show them, so that the values line up in any encoding.
    lines = [(encodable(k, stream_encoding()), v) for k, v in [("file", str(file)), *report.lines]]
    width = max(len(k) for k, _ in lines) + 2
    text = "".join(f"{key + ':':<{width}}{value}\n" for key, value in lines)
    if plot is not None:
        with OutputDir(plot.parent, protect=[file], names=[plot.name]) as out:
            save_singular_values(
                report.singular_values,
                report.tol,
                out.path(plot.name),
                f"singular values of {file.name}",
                figure_format(plot),
                total=report.total,
            )
        text += f"wrote {plot}\n"
    write(text)


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
    file (an existing path is always read as a file).
    """
    explain = _explainer()
    path = Path(matrix)
    source: Any = matrix
    if path.suffix.lower() in MATRIX_SUFFIXES or path.exists():
        A = load_matrix(path)
        if isinstance(A, scipy.sparse.csr_array):
            m, n = A.shape
            if max(m, n) > _EXPLAIN_MAX:  # refuse before densifying a large sparse matrix
                raise ValueError(
                    f"{path}: explain works on matrices up to {_EXPLAIN_MAX}×{_EXPLAIN_MAX}, "
                    f"got {m} × {n}"
                )
            A = A.toarray()
        source = A
    write(getattr(explain(source, digits=digits), fmt)())


def _explainer() -> Any:
    from torchsvd.explainer import explain

    return explain


# --------------------------------------------------------------------------- demo


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
    """Compress an image, explain the SVD of a 2×3 matrix by hand, and show a gradient PyTorch
    returns as NaN next to torchsvd's finite one."""
    explain = _explainer()
    with OutputDir(out_dir, names=(*COMPRESS_OUTPUTS, "explain.md", "gradient.txt")) as out:
        result, title = _run_compress(None, [5, 20, 50], out, grey=False, command="demo")
        e = explain(EXAMPLE_MATRIX)
        out.path("explain.md").write_text(e.markdown(), encoding="utf-8")
        lines = gradient_demo()
        out.path("gradient.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write(
        "== 1. Image compression: best rank-k approximations (Eckart–Young) ==\n\n"
        f"{title}\nsingular values: {result.method}\n\n{markdown_table(result.rows)}\n"
        f"== 2. The SVD by hand of the 2×3 matrix [{EXAMPLE_MATRIX}] ==\n\n{e.text()}\n"
        "== 3. A gradient that PyTorch returns as NaN ==\n\n"
        + "\n".join(lines)
        + "\n\n"
        + _written(out)
    )
