"""Matrix input for the explainer: every entry made an exact fraction, within size limits.

The limits bound the work before any of it starts: the explainer computes with exact rationals
whose size grows with the entries' digits, so an entry like ``1e999999999`` is refused while it
is still a string, not after its billion digits have been built.
"""

from __future__ import annotations

import ast
import math
import numbers
import re
from fractions import Fraction
from typing import Any

import torch

__all__ = ["MAX_DIGITS", "MAX_SIZE", "as_rationals", "parse_matrix"]

MAX_SIZE = 4
MAX_DIGITS = 100  # an entry's numerator and denominator are at most 10**MAX_DIGITS, and so is D·A
_MAX_TOKEN = 200  # characters of one entry in a string
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE]([+-]?\d+))?(?:/(\d+))?$")


def parse_matrix(text: str) -> list[list[Fraction]]:
    """Parse ``"3 2 2; 2 3 -2"`` into rows of exact fractions.

    Rows are separated by ``;`` or newlines, entries by spaces or commas; an entry is an integer,
    a decimal (``-2.5e3``) or a fraction (``1/3``), read exactly (``0.1`` is 1/10). Outer brackets
    (``[3 2; 1 0]``) and Python nested lists (``[[3, 2], [1, 0]]``) are accepted.

    Raises
    ------
    ValueError
        Naming the offending token and its row and column, or the row whose length differs, or
        an entry whose numerator or denominator exceeds ``10**MAX_DIGITS``.

    Examples
    --------
    >>> parse_matrix("3 2 2; 2 3 -2") == [[3, 2, 2], [2, 3, -2]]
    True
    >>> parse_matrix("1/2, 0.25")
    [[Fraction(1, 2), Fraction(1, 4)]]
    >>> parse_matrix("1 2; 3 x")
    Traceback (most recent call last):
        ...
    ValueError: cannot parse matrix '1 2; 3 x': 'x' (row 2, column 2) is not a number
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_matrix expects a str, got {type(text).__name__}")
    body = text.strip()
    if body.startswith("[["):
        body = _nested_list_to_rows(text, body)
    elif body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    lines = [ln.strip() for ln in re.split(r"[;\n]", body)]
    if lines and lines[-1] == "":  # a trailing ';' or newline
        lines.pop()
    if not lines or all(ln == "" for ln in lines):
        raise ValueError(f"cannot parse matrix {_short(text)}: it has no entries")
    rows: list[list[Fraction]] = []
    for i, line in enumerate(lines, start=1):
        tokens = [t for t in re.split(r"[\s,]+", line) if t]
        if not tokens:
            raise ValueError(f"cannot parse matrix {_short(text)}: row {i} is empty")
        row = [_parse_token(tok, text, i, j) for j, tok in enumerate(tokens, start=1)]
        if rows and len(row) != len(rows[0]):
            raise ValueError(
                f"cannot parse matrix {_short(text)}: row {i} has {len(row)} entries but row 1 "
                f"has {len(rows[0])}"
            )
        rows.append(row)
    return rows


def _short(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def _nested_list_to_rows(text: str, body: str) -> str:
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot parse matrix {_short(text)}: not a nested list ({exc})") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in value):
        raise ValueError(f"cannot parse matrix {_short(text)}: expected a list of rows")
    return ";".join(" ".join(str(x) for x in row) for row in value)


def _parse_token(tok: str, text: str, i: int, j: int) -> Fraction:
    shown = tok if len(tok) <= 40 else tok[:37] + "..."
    where = f"{shown!r} (row {i}, column {j})"
    match = _NUMBER.match(tok) if len(tok) <= _MAX_TOKEN else None
    if match is None:
        what = "is not a number" if len(tok) <= _MAX_TOKEN else f"is over {_MAX_TOKEN} characters"
        raise ValueError(f"cannot parse matrix {_short(text)}: {where} {what}")
    exponent, den = match.group(1), match.group(2)
    # Refuse a huge exponent before Fraction builds 10**exponent.
    if exponent is not None and abs(int(exponent)) > _MAX_TOKEN + MAX_DIGITS:
        raise ValueError(
            f"cannot parse matrix {_short(text)}: {where} has an exponent of {int(exponent)}; "
            f"explain works with entries whose numerator and denominator are at most "
            f"10^{MAX_DIGITS}"
        )
    num = tok.rpartition("/")[0] if den is not None else tok
    if den is not None and int(den) == 0:
        raise ValueError(f"cannot parse matrix {_short(text)}: {where} divides by zero")
    value = Fraction(num)  # exact for decimals: Fraction("0.1") == 1/10
    return _check_size(value / int(den) if den is not None else value, where)


def _digits(k: int) -> int:
    return len(str(abs(k))) if k else 1


def _check_size(x: Fraction, where: str) -> Fraction:
    if max(abs(x.numerator), x.denominator) > 10**MAX_DIGITS:
        raise ValueError(
            f"explain works with entries whose numerator and denominator are at most "
            f"10^{MAX_DIGITS}, got {_digits(x.numerator)} and {_digits(x.denominator)} digits at "
            f"{where}; round the entries, or use torchsvd.svd for a floating-point SVD"
        )
    return x


def _exact(x: Any, where: str) -> Fraction:
    """One entry as an exact fraction; floats through their shortest decimal representation."""
    if isinstance(x, bool) or type(x).__name__ == "bool_":
        raise TypeError(f"explain needs numeric entries, got a bool at {where}")
    if isinstance(x, numbers.Rational) or _is_numpy_integer(x):
        return _check_size(Fraction(int(x.numerator), int(x.denominator)), where)
    if isinstance(x, numbers.Real) and not _is_sympy(x):
        value = float(x)
        if not math.isfinite(value):
            raise ValueError(f"explain needs finite entries, got {x} at {where}")
        # str() of a numpy scalar is the shortest decimal that reads back to the same value in
        # its own precision (0.1 in float32 is "0.1", not 0.100000001490116…).
        return _check_size(
            Fraction(str(x) if type(x).__module__ == "numpy" else repr(value)), where
        )
    if isinstance(x, str):
        return _parse_token(x.strip(), x, 1, 1)
    if _is_sympy(x):
        import sympy

        if isinstance(x, sympy.Rational):
            return _check_size(Fraction(int(x.p), int(x.q)), where)
        if isinstance(x, sympy.Float):
            if not x.is_finite:
                raise ValueError(f"explain needs finite entries, got {x} at {where}")
            return _exact(float(x), where)
    raise TypeError(
        f"explain needs rational or decimal entries, got {x!r} ({type(x).__name__}) at {where}"
    )


def _is_numpy_integer(x: Any) -> bool:
    return type(x).__module__ == "numpy" and hasattr(x, "numerator") and hasattr(x, "item")


def _is_sympy(x: Any) -> bool:
    return type(x).__module__.startswith("sympy")


def as_rationals(A: Any) -> list[list[Fraction]]:
    """Any matrix-like input as rows of exact fractions, with checks on shape, type and size.

    Accepts a string (see :func:`parse_matrix`), a tensor, a numpy array, a nested list or tuple,
    or a sympy Matrix. Floats are read through their shortest decimal (float32 0.1 is 1/10).
    """
    if isinstance(A, str):
        rows = parse_matrix(A)
        m, n = len(rows), len(rows[0])
    else:
        cells, (m, n) = _cells(A)
        rows = [
            [_exact(x, f"row {i + 1}, column {j + 1}") for j, x in enumerate(r)]
            for i, r in enumerate(cells)
        ]
    if not (1 <= m <= MAX_SIZE and 1 <= n <= MAX_SIZE):
        raise ValueError(
            f"explain works by hand on matrices up to {MAX_SIZE}×{MAX_SIZE} (at least 1×1), got "
            f"{m}×{n}; use torchsvd.svd for larger ones"
        )
    # The computation runs on D·A with D the common denominator: bound its entries as well.
    D = math.lcm(*(x.denominator for r in rows for x in r))
    top = max(abs(x.numerator) * (D // x.denominator) for r in rows for x in r)
    if top > 10**MAX_DIGITS:
        raise ValueError(
            f"explain works with entries whose numerators over their common denominator are at "
            f"most 10^{MAX_DIGITS}, got {_digits(top)} digits (the denominator has "
            f"{_digits(D)}); round the entries, or use torchsvd.svd for a floating-point SVD"
        )
    return rows


def _cells(A: Any) -> tuple[list[list[Any]], tuple[int, int]]:
    """The entries of a matrix-like ``A`` and its shape."""
    if isinstance(A, torch.Tensor):
        if A.is_complex() or A.dtype == torch.bool:
            raise TypeError(f"explain needs a real matrix, got dtype {A.dtype}")
        if A.ndim != 2:
            raise ValueError(f"explain needs a 2-D matrix, got shape {tuple(A.shape)}")
        A = A.detach().cpu()
        shape = (A.shape[0], A.shape[1])
        if A.is_floating_point():
            # Through numpy when present: its str() gives each float's shortest decimal in its
            # own precision; without numpy, float32 values are widened first.
            try:
                return _np_cells(A.float() if A.dtype == torch.bfloat16 else A), shape
            except (ImportError, RuntimeError):
                return [[float(x) for x in r] for r in A.double().tolist()], shape
        return A.tolist(), shape
    if type(A).__module__ == "numpy" and hasattr(A, "ndim"):
        if A.dtype.kind not in "iuf":
            raise TypeError(f"explain needs a real numeric matrix, got dtype {A.dtype}")
        if A.ndim != 2:
            raise ValueError(f"explain needs a 2-D matrix, got shape {A.shape}")
        return [[A[i, j] for j in range(A.shape[1])] for i in range(A.shape[0])], A.shape
    if _is_sympy(A) and hasattr(A, "tolist"):
        return [list(r) for r in A.tolist()], A.shape
    if isinstance(A, (list, tuple)) and all(isinstance(r, (list, tuple)) for r in A):
        cells = [list(r) for r in A]
        if any(len(r) != len(cells[0]) for r in cells):
            raise ValueError("explain needs rows of equal length, got a ragged list")
        return cells, (len(cells), len(cells[0]) if cells else 0)
    raise TypeError(
        "explain needs a matrix (tensor, array, nested list, sympy Matrix or a string like "
        f"'3 2 2; 2 3 -2'), got {type(A).__name__}"
    )


def _np_cells(A: torch.Tensor) -> list[list[Any]]:
    array = A.numpy()
    return [[array[i, j] for j in range(array.shape[1])] for i in range(array.shape[0])]
