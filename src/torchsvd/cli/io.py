"""Reading matrices and images for the command line, and writing its outputs all-or-nothing.

Every failure on bad input is a ``ValueError`` or ``OSError`` whose message names the file and
says what was expected, so that the command line can print it on one line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import matplotlib.image
import numpy as np
import scipy.io
import scipy.sparse
from matplotlib import cbook

__all__ = [
    "MATRIX_SUFFIXES",
    "OutputDir",
    "check_dense_fits",
    "load_image",
    "load_matrix",
    "memory_bytes",
    "sample_image_path",
]

MATRIX_SUFFIXES = (".npy", ".csv", ".txt", ".mtx")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected a file")


def memory_bytes() -> int | None:
    """The machine's physical memory in bytes, where the system reports it."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def check_dense_fits(
    what: object,
    shape: tuple[int, ...],
    advice: str = "store it sparse (Matrix Market coordinate .mtx)",
) -> None:
    """Refuse a dense matrix whose float64 copy would take over half the memory.

    ``what`` (a file, or what is being done) starts the message, ``advice`` ends it.
    """
    need = 8 * int(np.prod(shape, dtype=np.float64))
    have = memory_bytes()
    if have is not None and need > have / 2:
        dims = " × ".join(str(d) for d in shape)
        raise ValueError(
            f"{what}: a dense {dims} matrix takes {_gib(need)} in float64, more than half of this "
            f"machine's {_gib(have)} of memory; {advice}"
        )


def load_matrix(path: str | os.PathLike[str]) -> np.ndarray | scipy.sparse.csr_array:
    """A real 2-D float64 matrix from a .npy, .csv/.txt or .mtx (Matrix Market) file.

    Dense files give an ``ndarray``; a Matrix Market file in coordinate format stays sparse
    (a ``scipy.sparse.csr_array``, duplicates summed, explicit zeros dropped). A dense matrix
    whose float64 copy would take more than half of the machine's memory is refused before it
    is read.

    ``.npy`` files are read with ``allow_pickle=False``: a file holding Python objects is refused,
    never unpickled. Text files (``.csv`` or ``.txt``, UTF-8, with or without a byte-order mark):
    one row per line, values separated by commas (when the line has one) or whitespace, a
    trailing comma allowed; blank lines are skipped and ``#`` starts a comment, on its own line
    or after the numbers.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        The path does not name a file.
    ValueError
        Unknown suffix, unreadable content (with line and column for text files), not 2-D,
        empty, complex, non-finite, or too large for the memory.
    """
    p = Path(path)
    _check_file(p)
    suffix = p.suffix.lower()
    data: np.ndarray | scipy.sparse.csr_array
    if suffix == ".npy":
        data = _load_npy(p)
    elif suffix in (".csv", ".txt"):
        data = _load_text(p)
    elif suffix == ".mtx":
        data = _load_mtx(p)
    else:
        raise ValueError(
            f"{p}: unsupported matrix file type {suffix or '(no suffix)'!r}; expected one of "
            + ", ".join(MATRIX_SUFFIXES)
        )
    values = data.data if isinstance(data, scipy.sparse.csr_array) else data
    if values.dtype.kind == "c":
        raise ValueError(f"{p}: complex matrices are not supported, got dtype {values.dtype}")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{p}: expected a numeric matrix, got dtype {values.dtype}")
    if data.ndim != 2:
        raise ValueError(f"{p}: expected a 2-D matrix, got shape {data.shape}")
    if 0 in data.shape:
        raise ValueError(f"{p}: the matrix is empty (shape {data.shape})")
    data = data.astype(np.float64)
    values = data.data if isinstance(data, scipy.sparse.csr_array) else data
    if not np.isfinite(values).all():
        raise ValueError(f"{p}: the matrix contains NaN or infinite entries")
    return data


def _load_npy(p: Path) -> np.ndarray:
    try:
        # the header first: the size is checked before the data is read
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{p}: cannot read as a .npy array ({_one_line(exc)})") from None
    if len(shape) == 2:
        check_dense_fits(p, shape)
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{p}: cannot read as a .npy array ({_one_line(exc)})") from None


def _load_mtx(p: Path) -> np.ndarray | scipy.sparse.csr_array:
    errors = (ValueError, OSError, EOFError, IndexError, TypeError)
    try:
        rows, cols, _, fmt, field, _ = scipy.io.mminfo(p)
    except errors as exc:
        raise ValueError(f"{p}: cannot read as Matrix Market ({_one_line(exc)})") from None
    if field == "complex":
        raise ValueError(f"{p}: complex matrices are not supported (Matrix Market field complex)")
    if fmt == "array":
        check_dense_fits(p, (rows, cols))
    try:
        data = scipy.io.mmread(p)
    except errors as exc:
        raise ValueError(f"{p}: cannot read as Matrix Market ({_one_line(exc)})") from None
    if scipy.sparse.issparse(data):
        sparse = scipy.sparse.csr_array(data)
        sparse.sum_duplicates()
        sparse.eliminate_zeros()
        return sparse
    return np.asarray(data)


def _load_text(p: Path) -> np.ndarray:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a text file (expected numbers in rows)") from None
    rows: list[list[float]] = []
    width = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "," in line:
            cells = line.split(",")
            if len(cells) > 1 and not cells[-1].strip():
                cells.pop()  # one trailing comma, as many spreadsheets write
        else:
            cells = line.split()
        row = []
        for col, cell in enumerate(cells, start=1):
            try:
                row.append(float(cell))
            except ValueError:
                raise ValueError(
                    f"{p}: line {lineno}, column {col}: {cell.strip()!r} is not a number"
                ) from None
        if rows and len(row) != width:
            raise ValueError(f"{p}: line {lineno} has {len(row)} values, expected {width}")
        width = len(row)
        rows.append(row)
    if not rows:
        raise ValueError(f"{p}: no numbers found")
    return np.array(rows, dtype=np.float64)


def sample_image_path() -> Path:
    """matplotlib's sample photograph ``grace_hopper.jpg`` (600×512, colour), installed with it."""
    try:
        path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"no IMAGE given, and matplotlib's sample image grace_hopper.jpg is not available "
            f"({_one_line(exc)})"
        ) from None
    _check_file(path)
    return path


def load_image(path: str | os.PathLike[str], *, grey: bool = False) -> np.ndarray:
    """An image as float64 in [0, 1]: ``(H, W)`` for greyscale, ``(H, W, 3)`` for colour.

    An alpha channel is composited over white (a transparent pixel is white, as a viewer shows
    it); a colour image whose channels are all equal is greyscale. ``grey=True`` converts colour
    to luma (ITU-R BT.601 weights 0.299, 0.587, 0.114).
    """
    p = Path(path)
    _check_file(p)
    try:
        img = np.asarray(matplotlib.image.imread(p))
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three on bad files
        raise ValueError(f"{p}: cannot read as an image ({_one_line(exc)})") from None
    if img.dtype.kind in "ui":
        img = img.astype(np.float64) / np.iinfo(img.dtype).max
    elif img.dtype.kind == "f":
        img = img.astype(np.float64)
    else:
        raise ValueError(f"{p}: unsupported pixel type {img.dtype}")
    if img.ndim == 3 and img.shape[2] in (2, 4):  # LA / RGBA
        alpha = img[..., -1:]
        img = img[..., :-1] * alpha + (1.0 - alpha)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and (grey or (img == img[..., :1]).all()):
        img = img[..., 0] if not grey else img @ np.array([0.299, 0.587, 0.114])
    if img.ndim not in (2, 3) or min(img.shape[:2]) == 0:
        raise ValueError(f"{p}: unsupported image shape {img.shape}")
    return img


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class OutputDir:
    """Write files into a directory all-or-nothing.

    ``path(name)`` gives a temporary file in the directory; on a clean exit every temporary file
    is renamed to its final name, on an error they are all removed (and the directory too, if it
    was created here), so no partial output is ever left. Refuses to write over any of the
    ``protect`` paths (the inputs): on entry for the ``names`` announced, else in ``path``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        protect: Iterable[Path] = (),
        names: Iterable[str] = (),
    ) -> None:
        self.dir = Path(directory)
        self.protect = [Path(p) for p in protect]
        self.planned = list(names)
        self._pending: list[tuple[Path, Path]] = []
        self._created: Path | None = None

    def __enter__(self) -> OutputDir:
        for name in self.planned:
            self._check_not_input(self.dir / name)
        if self.dir.exists() and not self.dir.is_dir():
            raise NotADirectoryError(f"output directory {self.dir} exists and is not a directory")
        if not self.dir.exists():
            # remember the topmost directory created, to remove it again on failure
            top = self.dir
            while not top.parent.exists():
                top = top.parent
            try:
                self.dir.mkdir(parents=True)
            except OSError as exc:
                raise OSError(
                    f"cannot create output directory {self.dir}: {_one_line(exc)}"
                ) from None
            self._created = top
        try:  # fail now, before any work, if nothing can be written there
            fd, probe = tempfile.mkstemp(prefix=".torchsvd-probe-", dir=self.dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            self._cleanup()
            raise OSError(
                f"cannot write to output directory {self.dir}: {_one_line(exc)}"
            ) from None
        return self

    def path(self, name: str) -> Path:
        """A temporary path that becomes ``directory/name`` when the block ends without error."""
        final = self.dir / name
        self._check_not_input(final)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=self.dir)
        os.close(fd)
        # mkstemp makes the file private (0600); give it the permissions open() would
        os.chmod(tmp, 0o666 & ~_umask())
        self._pending.append((Path(tmp), final))
        return Path(tmp)

    def _check_not_input(self, final: Path) -> None:
        for p in self.protect:
            if final.exists() and p.exists() and os.path.samefile(final, p):
                raise ValueError(f"refusing to overwrite the input file {p} with an output")

    @property
    def names(self) -> list[Path]:
        """Final paths of the files written, in order."""
        return [final for _, final in self._pending]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._cleanup()
            return
        try:
            for tmp, final in self._pending:
                os.replace(tmp, final)
        except OSError:
            self._cleanup()
            raise

    def _cleanup(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        if self._created is not None:
            # only directories this object created, and only if left empty
            d = self.dir
            while True:
                try:
                    d.rmdir()
                except OSError:
                    break
                if d == self._created:
                    break
                d = d.parent
