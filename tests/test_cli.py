"""The torchsvd command line: outputs, numbers equal to the library's, and bad input.

Most tests use click's CliRunner on the real group (the same error handling as the console
script); a few run the installed entry point in a subprocess.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from click.testing import CliRunner

import torchsvd
from torchsvd.cli.commands import cli

try:  # the explainer's package, once it has one
    from torchsvd.explainer import explain
except ModuleNotFoundError:
    from torchsvd.explain import explain

ROOT = Path(__file__).resolve().parents[1]
SEED003 = [[3, 2, 3], [8, 8, 2], [8, 7, 4], [1, 8, 7], [6, 4, 7]]


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("torchsvd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torchsvd"]


def _run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _assert_one_line_error(code: int, out: str, err: str, match: str, exit_code: int = 1) -> None:
    assert code == exit_code, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchsvd: error: "), err
    assert match in lines[0], lines[0]
    assert "Traceback" not in out + err


@pytest.fixture
def colour_png(tmp_path: Path) -> Path:
    """A smooth 24×32 colour image with noise: a few dominant singular values, then a tail."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:24, 0:32] / 32.0
    img = np.stack([np.sin(3 * x + c) * np.cos(2 * y - c) for c in (0.0, 1.0, 2.0)], axis=-1)
    img = np.clip(0.5 + 0.4 * img + 0.05 * rng.standard_normal(img.shape), 0, 1)
    path = tmp_path / "in.png"
    matplotlib.image.imsave(path, img)
    return path


def _library_rows(image_path: Path, ranks: list[int]) -> list[dict[str, float]]:
    """The table recomputed with the public library: torchsvd.low_rank and torch.linalg."""
    img = matplotlib.image.imread(image_path)[..., :3].astype(np.float64)
    X = torch.from_numpy(img.transpose(2, 0, 1).copy()).to(torch.float32)
    h, w = img.shape[:2]
    S = torch.linalg.svdvals(X)
    rows = []
    for k in ranks:
        err = (X - torchsvd.low_rank(X, k)).double()
        s_next = S[:, k] if k < min(h, w) else torch.zeros(3)
        rows.append(
            {
                "rank": k,
                "storage_ratio": k * (h + w + 1) / (h * w),
                "rel_frobenius_error": float(err.norm() / X.double().norm()),
                "sigma_ratio": float((s_next / S[:, 0]).max()),
                "psnr_db": float(10 * torch.log10(1 / (err**2).mean())),
            }
        )
    return rows


def test_compress_outputs_and_numbers_equal_the_library(colour_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = _run("compress", colour_png, "--ranks", "8,2,24", "--out", out)
    assert code == 0, stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["compression.csv", "compression.md", "reconstructions.png", "spectrum.png"]
    for png in ("reconstructions.png", "spectrum.png"):
        img = matplotlib.image.imread(out / png)
        assert img.ndim == 3 and min(img.shape[:2]) > 100
    with open(out / "compression.csv", newline="") as f:
        table = list(csv.DictReader(f))
    expected = _library_rows(colour_png, [2, 8, 24])
    assert [int(r["rank"]) for r in table] == [2, 8, 24]
    for got, ref in zip(table, expected, strict=True):
        for key, value in ref.items():
            if key == "psnr_db" and ref["rank"] == 24:
                continue  # exact reconstruction: the PSNR of float32 rounding noise
            assert float(got[key]) == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert float(table[-1]["rel_frobenius_error"]) < 1e-5  # rank 24 = min(h, w): exact
    assert float(table[-1]["psnr_db"]) > 100
    # stdout and compression.md carry the same (rounded) table
    md = (out / "compression.md").read_text()
    row2 = f"| 2 | {expected[0]['storage_ratio']:.2%} | {expected[0]['rel_frobenius_error']:.4g} |"
    assert row2 in stdout and row2 in md
    assert f"{expected[1]['psnr_db']:.2f} |" in stdout


def test_compress_greyscale(colour_png: Path, tmp_path: Path) -> None:
    code, stdout, stderr = _run(
        "compress", colour_png, "--grey", "--ranks", "3", "--out", tmp_path / "g"
    )
    assert code == 0, stderr
    assert "greyscale" in stdout
    assert (tmp_path / "g" / "reconstructions.png").exists()


def test_info_numbers_equal_torch_linalg(tmp_path: Path) -> None:
    A = np.array(SEED003, dtype=np.float64)
    A[:, 2] = A[:, 0] + A[:, 1]  # rank 2: a null space of dimension 1
    path = tmp_path / "a.csv"
    np.savetxt(path, A, delimiter=",")
    plot = tmp_path / "plots" / "s.png"
    plot.parent.mkdir()
    code, stdout, stderr = _run("info", path, "--plot", plot)
    assert code == 0, stderr
    fields = dict(line.split(":", 1) for line in stdout.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    T = torch.from_numpy(A)
    S = torch.linalg.svdvals(T)
    assert fields["shape"] == "5 × 3"
    assert fields["numerical rank"].startswith(f"{int(torch.linalg.matrix_rank(T))}  ")
    assert fields["numerical rank"].startswith("2  ")
    assert float(fields["σ_max = ‖A‖₂"]) == pytest.approx(float(S[0]), rel=1e-5)
    assert float(fields["smallest non-zero σ"]) == pytest.approx(float(S[1]), rel=1e-5)
    assert fields["condition number κ₂"].startswith("inf")
    pinv = float(torch.linalg.matrix_norm(torch.linalg.pinv(T), ord=2))
    assert float(fields["‖A⁺‖₂"].split()[0]) == pytest.approx(pinv, rel=1e-5)
    fro = float(torch.linalg.matrix_norm(T, ord="fro"))
    nuc = float(torch.linalg.matrix_norm(T, ord="nuc"))
    assert float(fields["Frobenius norm"]) == pytest.approx(fro, rel=1e-5)
    assert float(fields["nuclear norm"]) == pytest.approx(nuc, rel=1e-5)
    assert fields["null-space dimension"].startswith(f"{torchsvd.null_space(T).shape[-1]}  ")
    assert matplotlib.image.imread(plot).ndim == 3


@pytest.mark.parametrize("fmt", ["npy", "txt", "mtx"])
def test_info_file_formats(tmp_path: Path, fmt: str) -> None:
    A = np.array(SEED003, dtype=np.float64)
    path = tmp_path / f"a.{fmt}"
    if fmt == "npy":
        np.save(path, A)
    elif fmt == "txt":
        np.savetxt(path, A)
    else:
        scipy.io.mmwrite(path, scipy.sparse.coo_matrix(A))
    code, stdout, stderr = _run("info", path)
    assert code == 0, stderr
    assert "numerical rank:       3  " in stdout
    assert f"{float(torch.linalg.cond(torch.from_numpy(A))):.6g}  (σ_max/σ_min)" in stdout


def test_info_rtol(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    np.savetxt(path, np.diag([1.0, 1e-3, 1e-9]))
    for rtol, rank in (("1e-6", 2), ("0.01", 1)):
        code, stdout, _ = _run("info", path, "--rtol", rtol)
        assert code == 0 and f"numerical rank:       {rank}  " in stdout


@pytest.mark.parametrize("fmt", ["text", "markdown", "latex"])
def test_explain_string_and_file(tmp_path: Path, fmt: str) -> None:
    code, stdout, stderr = _run("explain", "3 2 2; 2 3 -2", "--format", fmt)
    assert code == 0, stderr
    assert stdout == getattr(explain("3 2 2; 2 3 -2"), fmt)()
    path = tmp_path / "m.csv"
    path.write_text("3,2,2\n2,3,-2\n")
    assert _run("explain", path, "--format", fmt)[1] == stdout


# --------------------------------------------------------------------------- bad input


def _not_an_image(tmp_path: Path) -> Path:
    p = tmp_path / "fake.png"
    p.write_text("this is not a PNG\n")
    return p


def _pickled_npy(tmp_path: Path) -> Path:
    p = tmp_path / "obj.npy"
    np.save(p, np.array([{"payload": 1}], dtype=object), allow_pickle=True)
    return p


def _bad_csv(tmp_path: Path) -> Path:
    p = tmp_path / "bad.csv"
    p.write_text("1,2,3\n4,five,6\n")
    return p


def _a_file(tmp_path: Path) -> Path:
    p = tmp_path / "plain_file"
    p.write_text("x")
    return p


BAD_INPUTS = [
    # (arguments built from tmp_path, expected fragment of the message, exit code)
    (lambda t: ["compress", t / "missing.png", "--out", t / "o"], "missing.png: no such file", 1),
    (lambda t: ["compress", _not_an_image(t), "--out", t / "o"], "cannot read as an image", 1),
    (lambda t: ["compress", "--ranks", "5,x", "--out", t / "o"], "got 'x' in '5,x'", 2),
    (lambda t: ["compress", "--out", _a_file(t)], "exists and is not a directory", 1),
    (lambda t: ["compress", "--out", _a_file(t) / "sub"], "cannot create output directory", 1),
    (lambda t: ["info", t / "missing.csv"], "missing.csv: no such file", 1),
    (lambda t: ["info", _bad_csv(t)], "line 2, column 2: 'five' is not a number", 1),
    (lambda t: ["info", _not_an_image(t)], "unsupported matrix file type '.png'", 1),
    (
        lambda t: ["info", _pickled_npy(t)],
        "Object arrays cannot be loaded when allow_pickle=False",
        1,
    ),
    (lambda t: ["info", t], "is a directory", 1),
    (lambda t: ["explain", t], "is a directory", 1),
    (lambda t: ["info", _bad_csv(t), "--rtol", "nan"], "--rtol must be a finite float", 2),
    (lambda t: ["info", _bad_csv(t), "--rtol", "inf"], "--rtol must be a finite float", 2),
    (lambda t: ["info", _bad_csv(t), "--rtol", "-1e-3"], "in [0, 1), got -0.001", 2),
    (lambda t: ["info", _bad_csv(t), "--rtol", "1"], "in [0, 1), got 1.0", 2),
    (lambda t: ["info", _bad_csv(t), "--plot", t / "s.bmpx"], "'.bmpx' is not an image format", 2),
    (lambda t: ["info", _bad_csv(t), "--plot", t / "s"], "'(none)' is not an image format", 2),
    (lambda t: ["explain", "3 2 x; 2 3 -2"], "'x' (row 1, column 3) is not a number", 1),
    (lambda t: ["explain", "1 2; 3"], "row 2 has 1 entries but row 1 has 2", 1),
    (lambda t: ["explain", "1 2 3 4 5"], "up to 4×4", 1),
    (lambda t: ["explain", "1", "--format", "pdf"], "'pdf' is not one of", 2),
    (lambda t: ["compress", "--bogus"], "No such option '--bogus'", 2),
    (lambda t: ["nonsense"], "No such command 'nonsense'", 2),
]


@pytest.mark.parametrize(("make_args", "match", "exit_code"), BAD_INPUTS)
def test_bad_input_is_one_line_and_leaves_nothing(
    tmp_path: Path,
    make_args,
    match: str,
    exit_code: int,  # type: ignore[no-untyped-def]
) -> None:
    args = make_args(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = _run(*args)
    _assert_one_line_error(code, out, err, match, exit_code)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # no output file, no partial file, inputs untouched
    assert not (tmp_path / "o").exists()


def test_rank_larger_than_image_keeps_previous_outputs(colour_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "compression.csv").write_text("previous run\n")
    code, stdout, stderr = _run("compress", colour_png, "--ranks", "5,25", "--out", out)
    _assert_one_line_error(code, stdout, stderr, "rank 25 is larger than the image allows")
    assert "min(height, width) = min(24, 32) = 24" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["compression.csv"]
    assert (out / "compression.csv").read_text() == "previous run\n"


def test_output_never_overwrites_the_input(colour_png: Path) -> None:
    target = colour_png.with_name("spectrum.png")
    colour_png.rename(target)
    data = target.read_bytes()
    code, stdout, stderr = _run("compress", target, "--ranks", "2", "--out", target.parent)
    _assert_one_line_error(code, stdout, stderr, "refusing to overwrite the input file")
    assert target.read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == ["spectrum.png"]


# --------------------------------------------------------------------------- real entry point


def test_entry_point_errors_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [*_console_script(), "info", str(tmp_path / "nope.mtx")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    _assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "nope.mtx: no such file")


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """What ``make demo`` runs: the real console script, files that open, nothing but progress
    on stderr, and no reference to documents a reader does not have."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [*_console_script(), "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    # not a terminal: one progress line per step, no warnings
    progress = proc.stderr.splitlines()
    assert progress and all(line.startswith("torchsvd demo [") for line in progress), proc.stderr
    text = proc.stdout
    assert "seed" not in text.lower() and "seed" not in proc.stderr.lower()
    assert "| 50 | 18.12% |" in text  # the compression table, rank 50 of a 600×512 image
    assert "σ₁ = √λ₁ = 5" in text and "σ₂ = √λ₂ = 3" in text  # the 2×3 example by hand
    assert "16 of 16 entries NaN or inf" in text
    errors = [
        float(line.rsplit("=", 1)[1])
        for line in text.splitlines()
        if "central differences =" in line
    ]
    assert len(errors) == 2 and max(errors) < 1e-6
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        [
            "compression.csv",
            "compression.md",
            "explain.md",
            "gradient.txt",
            "reconstructions.png",
            "spectrum.png",
        ]
    )
    grid = matplotlib.image.imread(out / "reconstructions.png")
    assert grid.shape[1] > grid.shape[0] > 300
