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
from torchsvd.cli import commands, images, io, plots, report
from torchsvd.cli.commands import cli
from torchsvd.explainer import explain

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
    (lambda t: ["explain", _sparse_diag(t, np.ones(100000))], "up to 4×4, got 100000 × 100000", 1),
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


# --------------------------------------------------------------------------- info: large input


def _fields(stdout: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in stdout.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _sparse_diag(tmp_path: Path, d: np.ndarray) -> Path:
    path = tmp_path / "diag.mtx"
    scipy.io.mmwrite(path, scipy.sparse.diags(d).tocoo())
    return path


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send matrices of a few hundred rows down the large-matrix path (fast tests)."""
    monkeypatch.setattr(report, "DENSE_ENTRIES", 1000)
    monkeypatch.setattr(report, "DENSE_WORK", 1000)


def test_info_sparse_stays_sparse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_limits: None
) -> None:
    """A sparse .mtx too large for a dense SVD goes to svds as a sparse tensor: never densified
    (the old code called toarray() and ran out of memory), values equal the known diagonal."""
    n = 400
    d = 0.97 ** np.arange(n)  # σ_i = 0.97^i: distinct, known exactly
    path = _sparse_diag(tmp_path, d[::-1].copy())  # stored in ascending order
    densified = []
    monkeypatch.setattr(scipy.sparse.csr_array, "toarray", lambda *a, **k: densified.append(1))
    code, stdout, stderr = _run("info", path, "--top", "4")
    assert code == 0, stderr
    assert not densified
    f = _fields(stdout)
    assert f["shape"] == f"{n} × {n}, sparse ({n} stored entries)"
    assert f["computed"].startswith(f"the 4 largest of {n} singular values, by torchsvd.svds")
    assert float(f["σ_max = ‖A‖₂"]) == pytest.approx(1.0, rel=1e-6)
    top = [float(x) for x in f["largest singular values"].split(",")]
    assert top == pytest.approx(d[:4], rel=1e-6)
    assert f["numerical rank"].startswith("≥ 4  ")
    assert f["Frobenius norm"] == f"{np.linalg.norm(d):.6g}"
    assert f["nuclear norm"].startswith("not computed")
    assert f["condition number κ₂"].startswith("not computed")
    assert f["null-space dimension"].startswith(f"≤ {n - 4}")
    assert "torchsvd info [1/1]: the 4 largest singular values" in stderr


def test_info_sparse_rank_and_condition_estimate(tmp_path: Path, small_limits: None) -> None:
    n = 400
    d = np.zeros(n)
    d[:3] = [5.0, 2.0, 1.0]  # rank 3, seen inside the top 6
    code, stdout, stderr = _run("info", _sparse_diag(tmp_path, d))
    assert code == 0, stderr
    f = _fields(stdout)
    assert f["numerical rank"].startswith("3  ")
    assert float(f["smallest non-zero σ"]) == pytest.approx(1.0, rel=1e-6)
    assert f["condition number κ₂"].startswith("inf")
    assert f["null-space dimension"].startswith(f"{n - 3}  ")
    # a non-singular one: κ₂ = max/min of the diagonal, estimated through its LU factorization
    # (top and bottom of the spectrum separated, so that both top-k solves converge fast)
    middle = np.random.default_rng(0).uniform(1.5, 2.5, n - 9)
    d = np.concatenate([[10.0, 8, 6, 5, 4, 3], middle, [1.0, 0.5, 0.25]])
    code, stdout, stderr = _run("info", _sparse_diag(tmp_path, d), "--cond")
    assert code == 0, stderr
    kappa = float(_fields(stdout)["condition number κ₂"].split()[0])
    assert kappa == pytest.approx(d.max() / d.min(), rel=1e-6)


def test_info_dense_too_large_uses_svds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    A = torchsvd.testing.matrix_with_singular_values([4.0, 2.0, 1.0, 0.5], 40, 30, seed=3)
    path = tmp_path / "a.npy"
    np.save(path, A.numpy())
    monkeypatch.setattr(report, "DENSE_WORK", 100)
    monkeypatch.setattr(torch.linalg, "svdvals", None)  # the dense SVD must not run
    code, stdout, stderr = _run("info", path, "--top", "3", "--cond")
    assert code == 0, stderr
    f = _fields(stdout)
    assert [float(x) for x in f["largest singular values"].split(",")] == pytest.approx(
        [4.0, 2.0, 1.0], rel=1e-7
    )
    assert f["condition number κ₂"].startswith("not computed (σ_min of a non-square")


def test_info_top_k_not_converged_is_one_line(tmp_path: Path, small_limits: None) -> None:
    path = _sparse_diag(tmp_path, 1 + 1e-6 * np.arange(400))  # tightly clustered top
    code, stdout, stderr = _run("info", path, "--maxiter", "2")
    lines = [ln for ln in stderr.splitlines() if not ln.startswith("torchsvd info [")]
    _assert_one_line_error(code, stdout, "\n".join(lines), "did not converge in 2 block steps")
    assert "400 × 400" in stderr


def test_info_refuses_a_dense_file_larger_than_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.npy"
    np.save(path, np.ones((300, 200)))
    monkeypatch.setattr(io, "memory_bytes", lambda: 2**18)  # a 256 KiB machine
    code, stdout, stderr = _run("info", path)
    _assert_one_line_error(code, stdout, stderr, "big.npy: a dense 300 × 200 matrix takes")
    assert "more than half of this machine's 0.0 GiB" in stderr


def test_info_computes_one_svd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old code ran six decompositions (svdvals, matrix_norm 2, matrix_rank, pinv, cond,
    nuclear norm) for one report."""
    calls = []
    for name in ("svd", "svdvals", "matrix_norm", "matrix_rank", "pinv", "cond"):
        original = getattr(torch.linalg, name)

        def counted(*args, _f=original, _n=name, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(_n)
            return _f(*args, **kwargs)

        monkeypatch.setattr(torch.linalg, name, counted)
    path = tmp_path / "a.csv"
    np.savetxt(path, np.array(SEED003, dtype=float), delimiter=",")
    code, _, stderr = _run("info", path)
    assert code == 0, stderr
    assert calls == ["svdvals"]


def test_info_frobenius_norm_does_not_overflow(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, np.diag([1e300, 1.0, 1e-300]))
    code, stdout, stderr = _run("info", path)
    assert code == 0, stderr
    f = _fields(stdout)
    assert f["Frobenius norm"] == "1e+300"
    assert f["σ_max = ‖A‖₂"] == "1e+300"


@pytest.mark.parametrize(
    ("suffix", "magic"),
    [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml"), (".jpg", b"\xff\xd8")],
)
def test_info_plot_writes_the_format_of_its_extension(
    tmp_path: Path, suffix: str, magic: bytes
) -> None:
    path = tmp_path / "a.csv"
    np.savetxt(path, np.array(SEED003, dtype=float), delimiter=",")
    plot = tmp_path / f"s{suffix}"
    code, _, stderr = _run("info", path, "--plot", plot)
    assert code == 0, stderr
    assert plot.read_bytes().startswith(magic)


def test_info_plot_draws_small_singular_values_where_they_are(tmp_path: Path) -> None:
    """σ = 1 below a tolerance of 6.7e284 was drawn at a fake floor of 1e284; an exact zero
    goes on the bottom edge, not at an invented value."""
    S = np.array([1e300, 1.0, 1e-300, 0.0])
    fig = plots.save_singular_values(S, 6.7e284, tmp_path / "s.png", "t", total=4)
    (ax,) = fig.axes
    drawn = {line.get_label(): line for line in ax.get_lines()}
    small = drawn[r"$\sigma_i$ ≤ tolerance"]
    assert list(small.get_ydata()) == [1.0, 1e-300]
    zero = drawn[r"$\sigma_i = 0$ (on the bottom edge)"]
    assert list(zero.get_xdata()) == [4] and list(zero.get_ydata()) == [0.0]
    assert zero.get_transform() == ax.get_xaxis_transform()


def test_info_rtol_zero_counts_every_positive_value(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    np.savetxt(path, np.diag([1.0, 1e-20, 0.0]))
    code, stdout, _ = _run("info", path, "--rtol", "0")
    assert code == 0 and _fields(stdout)["numerical rank"].startswith("2  ")


# --------------------------------------------------------------------------- text files


def test_csv_bom_comments_and_trailing_commas(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeff# a header comment\n3,2,2,  # first row\n2,3,-2,\n\n# done\n".encode())
    assert io.load_matrix(path).tolist() == [[3, 2, 2], [2, 3, -2]]
    (tmp_path / "b.txt").write_text("1 2  # comment\n3 4\n")
    assert io.load_matrix(tmp_path / "b.txt").tolist() == [[1, 2], [3, 4]]
    (tmp_path / "c.csv").write_text("1,,2\n")  # an empty cell inside a row is still an error
    with pytest.raises(ValueError, match="line 1, column 2: '' is not a number"):
        io.load_matrix(tmp_path / "c.csv")


def test_alpha_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 6, 4))
    rgba[:2, :, 0] = 1.0  # top half opaque red, bottom half transparent black
    rgba[:2, :, 3] = 1.0
    rgba[2:, :, 3] = 0.0
    path = tmp_path / "t.png"
    matplotlib.image.imsave(path, rgba)
    img = io.load_image(path)
    assert img.shape == (4, 6, 3)
    assert np.allclose(img[:2], [1.0, 0.0, 0.0]) and np.allclose(img[2:], 1.0)


# --------------------------------------------------------------------------- compress


def test_compress_uses_svds_for_small_ranks(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:160, 0:200] / 200.0
    img = np.clip(0.5 + 0.3 * np.sin(5 * x) * np.cos(3 * y) + 0.02 * rng.random(x.shape), 0, 1)
    path = tmp_path / "g.png"
    matplotlib.image.imsave(path, img, cmap="gray", vmin=0, vmax=1)
    code, stdout, stderr = _run("compress", path, "--ranks", "2,5", "--out", tmp_path / "o")
    assert code == 0, stderr
    assert "singular values: torchsvd.svds, the top 6 of 160" in stdout
    assert stderr.splitlines()[0] == (
        "torchsvd compress [1/5]: singular values of 1 channel of 160 × 200 "
        "(torchsvd.svds, the top 6 of 160)"
    )
    with open(tmp_path / "o" / "compression.csv", newline="") as f:
        table = list(csv.DictReader(f))
    X = torch.from_numpy(io.load_image(path)).to(torch.float32)
    S = torch.linalg.svdvals(X.double())
    for row, k in zip(table, [2, 5], strict=True):
        err = (X - torchsvd.low_rank(X, k)).double()
        assert float(row["rel_frobenius_error"]) == pytest.approx(
            float(err.norm() / X.double().norm()), rel=1e-4
        )
        assert float(row["sigma_ratio"]) == pytest.approx(float(S[k] / S[0]), rel=1e-4)


def test_figures_are_drawn_at_display_resolution() -> None:
    img = np.outer(np.linspace(0, 1, 1500), np.linspace(1, 0, 700))
    c = images.compress_image(img, [1])
    assert c.original_preview.shape == (500, 233)  # 1500×700 shrunk by 3, whole blocks
    assert c.previews[1].shape == (500, 233)
    assert np.allclose(c.original_preview, images.downsample(img), atol=0)
    assert c.rows[0].rel_frobenius_error < 1e-6


def test_table_keeps_significant_digits_of_small_errors() -> None:
    row = images.CompressionRow(3, 0.1, 1.234e-6, 2.5e-7, 118.0)
    table = images.markdown_table([row])
    assert "| 3 | 10.00% | 1.234e-06 | 2.5e-07 | 118.00 |" in table


def _overlap(a, b) -> bool:  # type: ignore[no-untyped-def]
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_spectrum_labels_and_titles_do_not_overlap(tmp_path: Path) -> None:
    """A saturating energy curve with close ranks: the old per-point annotations overlapped,
    and the long math title of the right panel ran into the left one."""
    s = np.concatenate([[100.0], 1e-3 * 0.9 ** np.arange(99)])
    c = images.Compression(
        rows=[images.CompressionRow(k, 0.1, 1e-3, 1e-3, 60.0) for k in (40, 45, 50)],
        singular_values=s[None],
        squared_norms=np.array([float((s**2).sum())]),
        previews={},
        original_preview=np.zeros((2, 2)),
        method="",
        complete=True,
    )
    fig = plots.save_spectrum(c, tmp_path / "s.png", "singular values of x.png (10×100)")
    renderer = fig.canvas.get_renderer()
    boxes = [
        t.get_window_extent(renderer)
        for ax in fig.axes
        for t in [ax.title, *ax.texts]
        if t.get_text()
    ]
    for i, a in enumerate(boxes):
        assert 0 <= a.x0 and a.x1 <= fig.bbox.x1  # inside the figure
        for b in boxes[i + 1 :]:
            assert not _overlap(a, b)
    left, right = fig.axes
    assert right.title.get_window_extent(renderer).x0 > left.get_window_extent(renderer).x1


# --------------------------------------------------------------------------- errors, encodings


def test_explainer_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ValueError("explain: cannot handle this entry exactly\n(second line)")

    monkeypatch.setattr(commands, "_explainer", lambda: refuse)
    code, out, err = _run("explain", "1 2; 3 4")
    _assert_one_line_error(code, out, err, "cannot handle this entry exactly (second line)")


def test_unexpected_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyError("boom")

    monkeypatch.setattr(commands, "matrix_report", broken)
    path = tmp_path / "a.csv"
    path.write_text("1,2\n3,4\n")
    code, out, err = _run("info", path)
    _assert_one_line_error(code, out, err, "internal error, please report it: KeyError: 'boom'")


def test_info_output_in_a_legacy_encoding(tmp_path: Path) -> None:
    """With cp1252 the old code printed two lines and then died with UnicodeEncodeError."""
    path = tmp_path / "a.csv"
    np.savetxt(path, np.array(SEED003, dtype=float), delimiter=",")
    env = {**os.environ, "PYTHONIOENCODING": "cp1252", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [*_console_script(), "info", str(path)], capture_output=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode("cp1252")
    lines = text.splitlines()
    assert len(lines) == 10
    assert lines[3].startswith("sigma_max = ||A||2:")
    assert lines[-1].startswith("null-space dimension:") and lines[-1].endswith("0  (n - rank)")
    # the values line up after the ASCII spellings
    starts = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}
    assert len(starts) == 1


def test_missing_dependency_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['click'] = None; sys.argv = ['torchsvd', 'info', 'x.csv']\n"
        "from torchsvd.cli import main; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "torchsvd: error: the torchsvd command line needs the Python package 'click', which is "
        "not installed; install the command line's dependencies with: pip install 'torchsvd[cli]'"
    ]


def test_info_plot_never_overwrites_the_input(tmp_path: Path) -> None:
    path = tmp_path / "a.png"  # a matrix file cannot be a .png; a .svg plot onto a .svg can't
    np.savetxt(tmp_path / "m.csv", np.eye(2), delimiter=",")
    src = tmp_path / "m.csv"
    data = src.read_bytes()
    code, out, err = _run("info", src, "--plot", tmp_path / "m.csv")
    _assert_one_line_error(code, out, err, "'.csv' is not an image format", 2)
    assert src.read_bytes() == data and not path.exists()


def test_compress_convergence_failure_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stalls(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise torchsvd.ConvergenceError("svds did not converge in 3 block steps")

    monkeypatch.setattr(images, "svds", stalls)
    img = np.outer(np.linspace(0, 1, 64), np.linspace(1, 0, 80))
    path = tmp_path / "g.png"
    matplotlib.image.imsave(path, img, cmap="gray")
    code, out, err = _run("compress", path, "--ranks", "1", "--out", tmp_path / "o")
    lines = [ln for ln in err.splitlines() if not ln.startswith("torchsvd compress [")]
    _assert_one_line_error(code, out, "\n".join(lines), "svds did not converge in 3 block steps")
    assert not (tmp_path / "o").exists()
