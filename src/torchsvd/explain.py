r"""The SVD of a small matrix by hand, exactly, step by step: :func:`explain`.

The method is the textbook one (seed ``001_*``): since AᵀA = V ΣᵀΣ Vᵀ and AAᵀ = U ΣΣᵀ Uᵀ,

1. form the Gram matrices AᵀA and AAᵀ;
2. the roots of their characteristic polynomials det(λI − AᵀA) and det(λI − AAᵀ) are the
   squared singular values (both share the non-zero ones; the multiplicity of 0 is the
   dimension of the null space);
3. σ_i = √λ_i, in descending order;
4. the unit eigenvectors of AᵀA for the non-zero λ_i are the right singular vectors v_i (an
   orthonormal basis of each eigenspace, by Gram–Schmidt when λ_i is repeated);
5. u_i = A v_i / σ_i are unit eigenvectors of AAᵀ; taking them this way, rather than solving
   for them separately, fixes their signs so that A = UΣVᵀ holds;
6. the columns of U and V still missing (for σ = 0 and for the extra dimension of a
   rectangular matrix) complete each to an orthonormal basis: Gram–Schmidt applied to the
   standard basis vectors e_1, e_2, … against the columns already found;
7. Σ is the m×n matrix with σ_1, σ_2, … on its diagonal, and UΣVᵀ = A is checked.

Everything is exact (sympy, rational input) while the squared singular values are expressible
in real radicals of modest size (rational, or roots of quadratic factors such as 3 ± √3) and
the singular vectors need no nested radicals; otherwise (an irreducible cubic, whose real roots
need complex radicals, or vectors like (√(5 − √5), …)) steps 3–7 are computed in 50-digit
arithmetic and shown as decimals.

References
----------
.. [1] G. Strang, *Introduction to Linear Algebra*, 5th ed., ch. 7 ("The Singular Value
       Decomposition"), Wellesley-Cambridge Press, 2016.
.. [2] Seed document ``001_*``: the SVD of [[3, 2, 2], [2, 3, −2]] by hand.
"""

from __future__ import annotations

import ast
import math
import numbers
import re
import textwrap
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import sympy

__all__ = ["Explanation", "Step", "explain", "parse_matrix"]

MAX_SIZE = 4
_DPS = 50  # decimal digits of the fallback arithmetic
_MESSY_OPS = 40  # a root with more operations than this is shown as a decimal
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?(/\d+)?$")
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


# --------------------------------------------------------------------------- document model


@dataclass(frozen=True)
class Label:
    """A name in an equation, with its plain-text and LaTeX spellings."""

    text: str
    tex: str


@dataclass(frozen=True)
class Column:
    """A column vector, printed compactly as a transposed row: (a, b, c)ᵀ."""

    row: Any  # sympy Matrix of shape (1, k)


@dataclass(frozen=True)
class Prose:
    """A sentence, in plain text and in LaTeX/Markdown (inline math between $…$)."""

    text: str
    tex: str


@dataclass(frozen=True)
class Equation:
    """``item₀ sep₁ item₁ sep₂ item₂ …``; items are Labels or sympy objects, seps '=', '→', '≈'."""

    items: tuple[Any, ...]
    seps: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """One numbered step of the explanation: a title and its prose and equations."""

    title: str
    blocks: tuple[Prose | Equation, ...]
    title_tex: str = ""  # the title with LaTeX math, where it differs


_TEX_SEP = {"=": "=", "→": r"\;\longrightarrow\;", "≈": r"\approx"}


def _eq(*parts: Any) -> Equation:
    """``_eq(a, '=', b, '→', c)`` → Equation((a, b, c), ('=', '→'))."""
    return Equation(items=tuple(parts[0::2]), seps=tuple(parts[1::2]))


def _sym(name: str, i: int | None = None) -> Label:
    """Label of a subscripted symbol: ``_sym('σ', 1)`` is σ₁ / \\sigma_{1}."""
    tex = {"σ": r"\sigma", "λ": r"\lambda", "Σ": r"\Sigma"}.get(name, name)
    if i is None:
        return Label(name, tex)
    return Label(f"{name}{str(i).translate(_SUB)}", f"{tex}_{{{i}}}")


# --------------------------------------------------------------------------- input


def parse_matrix(text: str) -> list[list[Fraction]]:
    """Parse ``"3 2 2; 2 3 -2"`` into rows of exact fractions.

    Rows are separated by ``;`` or newlines, entries by spaces or commas; an entry is an integer,
    a decimal (``-2.5e3``) or a fraction (``1/3``). Outer brackets (``[3 2; 1 0]``) and Python
    nested lists (``[[3, 2], [1, 0]]``) are accepted.

    Raises
    ------
    ValueError
        Naming the offending token and its row and column, or the row whose length differs.

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
        raise ValueError(f"cannot parse matrix {text!r}: it has no entries")
    rows: list[list[Fraction]] = []
    for i, line in enumerate(lines, start=1):
        tokens = [t for t in re.split(r"[\s,]+", line) if t]
        if not tokens:
            raise ValueError(f"cannot parse matrix {text!r}: row {i} is empty")
        row = []
        for j, tok in enumerate(tokens, start=1):
            row.append(_parse_token(tok, text, i, j))
        if rows and len(row) != len(rows[0]):
            raise ValueError(
                f"cannot parse matrix {text!r}: row {i} has {len(row)} entries but row 1 has "
                f"{len(rows[0])}"
            )
        rows.append(row)
    return rows


def _nested_list_to_rows(text: str, body: str) -> str:
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot parse matrix {text!r}: not a nested list ({exc})") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in value):
        raise ValueError(f"cannot parse matrix {text!r}: expected a list of rows")
    return ";".join(" ".join(str(x) for x in row) for row in value)


def _parse_token(tok: str, text: str, i: int, j: int) -> Fraction:
    where = f"{tok!r} (row {i}, column {j})"
    if not _NUMBER.match(tok):
        raise ValueError(f"cannot parse matrix {text!r}: {where} is not a number")
    num, _, den = tok.partition("/")
    if den and int(den) == 0:
        raise ValueError(f"cannot parse matrix {text!r}: {where} divides by zero")
    value = Fraction(num)  # exact for decimals: Fraction("0.1") == 1/10
    return value / int(den) if den else value


def _exact(x: Any, where: str) -> Fraction:
    """One entry as an exact fraction; floats through their shortest decimal representation."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"explain needs numeric entries, got a bool at {where}")
    if isinstance(x, (numbers.Rational, np.integer)):
        return Fraction(int(x.numerator), int(x.denominator))
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(float(x)):
            raise ValueError(f"explain needs finite entries, got {x} at {where}")
        # str() of a numpy scalar is the shortest decimal that reads back to the same value in
        # its own precision (0.1 in float32 is "0.1", not 0.100000001490116…).
        return Fraction(str(x if isinstance(x, np.floating) else np.float64(x)))
    if isinstance(x, str):
        return _parse_token(x.strip(), x, 1, 1)
    try:  # sympy numbers
        import sympy

        if isinstance(x, sympy.Rational):
            return Fraction(int(x.p), int(x.q))
        if isinstance(x, sympy.Float):
            return _exact(float(x), where) if x.is_finite else _exact(float("nan"), where)
    except ImportError:  # pragma: no cover - sympy is a dependency
        pass
    raise TypeError(
        f"explain needs rational or decimal entries, got {x!r} ({type(x).__name__}) at {where}"
    )


def _as_rows(A: Any) -> tuple[list[list[Fraction]], tuple[int, int]]:
    """Any matrix-like input as rows of fractions and its shape, with checks on the values."""
    if isinstance(A, str):
        rows = parse_matrix(A)
        return rows, (len(rows), len(rows[0]))
    if isinstance(A, torch.Tensor):
        if A.is_complex() or A.dtype == torch.bool:
            raise TypeError(f"explain needs a real matrix, got dtype {A.dtype}")
        A = A.detach().cpu()
        A = A.numpy() if A.dtype != torch.bfloat16 else A.float().numpy()
    if hasattr(A, "tolist") and hasattr(A, "shape") and not isinstance(A, np.ndarray):
        A = A.tolist()  # sympy Matrix
    if isinstance(A, np.ndarray):
        if A.dtype.kind not in "iuf":
            raise TypeError(f"explain needs a real numeric matrix, got dtype {A.dtype}")
        if A.ndim != 2:
            raise ValueError(f"explain needs a 2-D matrix, got shape {A.shape}")
        cells = [[A[i, j] for j in range(A.shape[1])] for i in range(A.shape[0])]
        shape = (A.shape[0], A.shape[1])
    elif isinstance(A, (list, tuple)) and all(isinstance(r, (list, tuple)) for r in A):
        cells = [list(r) for r in A]
        if any(len(r) != len(cells[0]) for r in cells):
            raise ValueError("explain needs rows of equal length, got a ragged list")
        shape = (len(cells), len(cells[0]) if cells else 0)
    else:
        raise TypeError(
            "explain needs a matrix (tensor, array, nested list, sympy Matrix or a string like "
            f"'3 2 2; 2 3 -2'), got {type(A).__name__}"
        )
    rows = [
        [_exact(x, f"row {i + 1}, column {j + 1}") for j, x in enumerate(r)]
        for i, r in enumerate(cells)
    ]
    return rows, shape


# --------------------------------------------------------------------------- the computation


@dataclass(frozen=True)
class Explanation:
    """The SVD A = U Σ Vᵀ of a small matrix and the steps that compute it by hand.

    Attributes
    ----------
    A : sympy.Matrix, m×n, rational entries
    U : sympy.Matrix, m×m, orthogonal
    S : tuple of sympy numbers, the min(m, n) singular values, descending
    Sigma : sympy.Matrix, m×n, ``S`` on the diagonal
    V : sympy.Matrix, n×n, orthogonal (``A == U * Sigma * V.T``)
    exact : bool
        True when every entry is exact (surds); False when steps 4–7 are 50-digit decimals.
    rank : int
    steps : tuple of Step
    digits : int
        Significant digits shown for decimals.
    """

    A: sympy.Matrix
    U: sympy.Matrix
    S: tuple[sympy.Expr, ...]
    Sigma: sympy.Matrix
    V: sympy.Matrix
    exact: bool
    rank: int
    steps: tuple[Step, ...]
    digits: int = 6

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        """Plain-text rendering (unicode, matrices drawn with sympy's pretty printer)."""
        out = [f"SVD of a {self._shape()} matrix, step by step ({self._kind()})", ""]
        for k, step in enumerate(self.steps, start=1):
            out += [f"Step {k}. {step.title}", ""]
            for block in step.blocks:
                if isinstance(block, Prose):
                    out += [textwrap.fill(block.text, width=88, break_on_hyphens=False), ""]
                else:
                    out += [_indent(self._pretty(block), "    "), ""]
        return "\n".join(out).rstrip() + "\n"

    def markdown(self) -> str:
        """Markdown with LaTeX math (``$…$`` inline, ``$$…$$`` display), as GitHub renders it."""
        out = [f"## SVD of a {self._shape('$')} matrix, step by step ({self._kind()})", ""]
        for k, step in enumerate(self.steps, start=1):
            out += [f"### Step {k}. {step.title_tex or step.title}", ""]
            for block in step.blocks:
                if isinstance(block, Prose):
                    out += [block.tex, ""]
                else:
                    out += ["$$", self._tex(block), "$$", ""]
        return "\n".join(out).rstrip() + "\n"

    def latex(self) -> str:
        """A LaTeX fragment (needs ``amsmath``): one ``\\subsection*`` per step."""
        out = [
            rf"\section*{{SVD of a {self._shape('$')} matrix, step by step ({self._kind()})}}",
            "",
        ]
        for k, step in enumerate(self.steps, start=1):
            out += [rf"\subsection*{{Step {k}. {step.title_tex or step.title}}}", ""]
            for block in step.blocks:
                if isinstance(block, Prose):
                    out += [block.tex, ""]
                else:
                    out += [r"\[", self._tex(block), r"\]", ""]
        return "\n".join(out).rstrip() + "\n"

    def to_torch(self, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
        """``(U, S, Vh)`` as tensors in the layout of :func:`torch.linalg.svd` (full matrices)."""

        def conv(M: Any) -> torch.Tensor:
            return torch.tensor([[float(x) for x in row] for row in M.tolist()], dtype=dtype)

        return conv(self.U), torch.tensor([float(s) for s in self.S], dtype=dtype), conv(self.V.T)

    # rendering helpers
    def _shape(self, math_delim: str = "") -> str:
        m, n = self.A.shape
        return f"{math_delim}{m}\\times {n}{math_delim}" if math_delim else f"{m}×{n}"

    def _kind(self) -> str:
        return "exact" if self.exact else f"decimals to {self.digits} digits"

    def _show(self, obj: Any) -> Any:
        import sympy

        if isinstance(obj, Label):
            return obj
        if isinstance(obj, Column):
            return Column(self._show(obj.row))
        if isinstance(obj, (sympy.Basic, sympy.MatrixBase)) and obj.has(sympy.Float):
            return obj.evalf(self.digits, chop=True)
        return obj

    def _pretty(self, eq: Equation) -> str:
        from sympy.printing.pretty.pretty import PrettyPrinter
        from sympy.printing.pretty.stringpict import prettyForm, stringPict

        printer = PrettyPrinter({"use_unicode": True, "wrap_line": False})

        def one(it: Any) -> Any:
            if isinstance(it, Label):
                return prettyForm(it.text)
            if isinstance(it, Column):
                return prettyForm(*stringPict.next(printer._print(self._show(it.row)), "ᵀ"))
            return printer._print(self._show(it))

        forms = [one(it) for it in eq.items]
        out = forms[0]
        for sep, form in zip(eq.seps, forms[1:], strict=True):
            out = prettyForm(*stringPict.next(out, f" {sep} ", form))
        return str(out.render(wrap_line=False))

    def _tex(self, eq: Equation) -> str:
        import sympy

        def one(it: Any) -> str:
            if isinstance(it, Label):
                return it.tex
            if isinstance(it, Column):
                return str(sympy.latex(self._show(it.row), mat_delim="[")) + "^{T}"
            return str(sympy.latex(self._show(it), mat_delim="["))

        parts = [one(eq.items[0])]
        for sep, it in zip(eq.seps, eq.items[1:], strict=True):
            parts += [_TEX_SEP[sep], one(it)]
        return " ".join(parts)


def _indent(block: str, pad: str) -> str:
    return "\n".join(pad + line if line else line for line in block.splitlines())


def explain(A: Any, *, digits: int = 6) -> Explanation:
    r"""Compute the SVD of a small real matrix by hand, exactly, and explain each step.

    Follows seed ``001_*`` (module docstring): eigen-decompositions of AᵀA and AAᵀ, their
    characteristic polynomials and roots, unit eigenvectors, u_i = A v_i / σ_i, completion of U
    and V to orthonormal bases by Gram–Schmidt on the standard basis, Σ, and the check
    A = UΣVᵀ. Exact surds where the squared singular values are rational or roots of rational
    quadratics (of modest size); decimals (50-digit arithmetic, ``digits`` shown) otherwise.

    Parameters
    ----------
    A : matrix-like, shape ``(m, n)`` with ``1 <= m, n <= 4``
        A tensor, numpy array, nested list, sympy Matrix, or a string such as
        ``"3 2 2; 2 3 -2"`` (see :func:`parse_matrix`). Entries are made exact: integers and
        fractions as they are, floats through their shortest decimal (0.1 → 1/10).
    digits : int
        Significant digits shown for decimals.

    Returns
    -------
    Explanation
        ``.U``, ``.S``, ``.Sigma``, ``.V`` (sympy) with ``A == U Σ Vᵀ``; ``.text()``,
        ``.markdown()``, ``.latex()`` render the steps; ``str()`` is the text.

    Raises
    ------
    ValueError
        A dimension is 0 or larger than 4, an entry is not finite, or a string does not parse.
    TypeError
        Complex, boolean or non-numeric entries.

    Examples
    --------
    Seed 001's matrix: σ = 5, 3 and the vectors found there by hand.

    >>> from torchsvd import explain
    >>> e = explain("3 2 2; 2 3 -2")
    >>> e.S
    (5, 3)
    >>> e.V[:, 1].T  # (1, -1, 4)/√18
    Matrix([[sqrt(2)/6, -sqrt(2)/6, 2*sqrt(2)/3]])
    >>> e.U * e.Sigma * e.V.T == e.A
    True
    >>> print(e.text().splitlines()[0])
    SVD of a 2×3 matrix, step by step (exact)
    """
    import sympy

    if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= _DPS:
        raise ValueError(f"digits must be an int in [1, {_DPS}], got {digits!r}")
    rows, (m, n) = _as_rows(A)
    if not (1 <= m <= MAX_SIZE and 1 <= n <= MAX_SIZE):
        raise ValueError(
            f"explain works by hand on matrices up to {MAX_SIZE}×{MAX_SIZE} (at least 1×1), got "
            f"{m}×{n}; use torchsvd.svd for larger ones"
        )
    M = sympy.Matrix([[sympy.Rational(x.numerator, x.denominator) for x in r] for r in rows])
    return _Solver(M, digits).run()


class _Solver:
    """Builds the Explanation; one method per step of the module docstring."""

    def __init__(self, A: sympy.Matrix, digits: int) -> None:
        import sympy

        self.sp = sympy
        self.A = A
        self.m, self.n = A.shape
        self.digits = digits
        self.lam = sympy.Symbol("lambda")
        self.AtA = A.T * A
        self.AAt = A * A.T
        self.rank = int(A.rank())
        self.steps: list[Step] = []

    def run(self) -> Explanation:
        self._step_gram()
        lams = self._step_charpoly()
        first_vector_step = len(self.steps)
        exact = fell_back = False
        if lams is not None:
            try:
                sigmas, V, U = self._exact_vectors(lams)
                S, Sigma = self._step_result(sigmas, V, U, exact=True)
                exact = True
            except _NotExact:
                # nested radicals in the vectors, or sympy could not settle a pivot or the final
                # check: redo these steps in decimals rather than show something unreadable or
                # unverified.
                del self.steps[first_vector_step:]
                fell_back = True
        if not exact:
            sigmas, V, U = self._decimal_vectors(fell_back=fell_back)
            S, Sigma = self._step_result(sigmas, V, U, exact=False)
        return Explanation(
            A=self.A,
            U=U,
            S=S,
            Sigma=Sigma,
            V=V,
            exact=exact,
            rank=self.rank,
            steps=tuple(self.steps),
            digits=self.digits,
        )

    # step 1
    def _step_gram(self) -> None:
        self.steps.append(
            Step(
                "Gram matrices AᵀA and AAᵀ",
                title_tex="Gram matrices $A^{T}A$ and $AA^{T}$",
                blocks=(
                    _eq(Label("A", "A"), "=", self.A),
                    _eq(Label("AᵀA", "A^{T} A"), "=", self.AtA),
                    _eq(Label("AAᵀ", "A A^{T}"), "=", self.AAt),
                    Prose(
                        "Both are symmetric positive semi-definite, AᵀA = V ΣᵀΣ Vᵀ and "
                        "AAᵀ = U ΣΣᵀ Uᵀ: their eigenvalues are the squared singular values, "
                        "their eigenvectors the singular vectors.",
                        r"Both are symmetric positive semi-definite, "
                        r"$A^{T}A = V \Sigma^{T}\Sigma V^{T}$ and "
                        r"$AA^{T} = U \Sigma\Sigma^{T} U^{T}$: their eigenvalues are the squared "
                        "singular values, their eigenvectors the singular vectors.",
                    ),
                ),
            )
        )

    # step 2
    def _step_charpoly(self) -> list[sympy.Expr] | None:
        """Show both characteristic polynomials; return the non-zero roots λ_1 ≥ λ_2 ≥ … with
        multiplicity, exact, or None when they are not (modest) real radicals."""
        sp, lam, r = self.sp, self.lam, self.rank
        blocks: list[Prose | Equation] = []
        for gram, name, tex in ((self.AtA, "AᵀA", "A^{T} A"), (self.AAt, "AAᵀ", "A A^{T}")):
            p = gram.charpoly(lam).as_expr()
            label = Label(f"det(λI − {name})", rf"\det(\lambda I - {tex})")
            factored = sp.factor(p)
            if factored == p:
                blocks.append(_eq(label, "=", p))
            else:
                blocks.append(_eq(label, "=", p, "=", factored))
        # The non-zero roots: divide λ^(n − r) out of det(λI − AᵀA).
        q = sp.Poly(self.AtA.charpoly(lam).as_expr(), lam).exquo(sp.Poly(lam ** (self.n - r), lam))
        exact = self._exact_roots(q)
        shown = exact if exact is not None else [sp.Float(x, _DPS) for x in _nroots(q)]
        zero_v, zero_u = self.n - r, self.m - r
        if zero_v or zero_u:
            zeros = (
                f"λ = 0 is a root of multiplicity {zero_v} of the first (the dimension of the null "
                f"space of A) and {zero_u} of the second (of the null space of Aᵀ)"
            )
        else:
            zeros = "0 is not a root"
        blocks.append(
            Prose(
                f"Both have the same non-zero roots; {zeros}. So A has rank r = {r}.",
                "Both have the same non-zero roots; "
                + zeros.replace("λ = 0", "$\\lambda = 0$")
                .replace(" A)", " $A$)")
                .replace("Aᵀ", "$A^{T}$")
                + f". So $A$ has rank $r = {r}$.",
            )
        )
        for i, x in enumerate(shown, start=1):
            blocks.append(_eq(_sym("λ", i), "=" if exact is not None else "≈", x))
        if exact is None and r:
            blocks.append(
                Prose(
                    "These roots are not expressible in real radicals of modest size, so the "
                    "next steps are computed in 50-digit arithmetic and shown as decimals.",
                    "These roots are not expressible in real radicals of modest size, so the next "
                    "steps are computed in 50-digit arithmetic and shown as decimals.",
                )
            )
        self.steps.append(Step("Characteristic polynomials and their roots", tuple(blocks)))
        return exact

    def _exact_roots(self, q: sympy.Poly) -> list[sympy.Expr] | None:
        sp = self.sp
        found: list[sympy.Expr] = []
        for factor, mult in q.factor_list()[1]:
            if factor.degree() > 4:  # pragma: no cover - q has degree <= 4
                return None
            roots = sp.roots(factor, multiple=True)
            if len(roots) != factor.degree():
                return None
            for x in roots:
                x = sp.radsimp(sp.simplify(x))
                if x.has(sp.I) or sp.count_ops(x) > _MESSY_OPS:
                    return None
                found += [x] * mult
        return sorted(found, key=lambda x: -float(x))

    # steps 3–5 (exact)
    def _exact_vectors(self, lams: list[sympy.Expr]) -> tuple[Any, ...]:
        sp = self.sp
        sigmas = [_simplify(sp, sp.sqrt(x)) for x in lams]
        self.steps.append(self._sigma_step(lams, sigmas, exact=True))
        blocks: list[Prose | Equation] = []
        vs: list[sympy.Matrix] = []
        i = 0
        for lam_value in _distinct(lams):
            mult = lams.count(lam_value)
            shifted = (self.AtA - lam_value * sp.eye(self.n)).applyfunc(lambda x: _simplify(sp, x))
            basis = shifted.nullspace(simplify=True)
            if len(basis) != mult:  # rref could not decide a pivot of a radical entry
                raise _NotExact
            lam_label = _sym("λ", i + 1)
            blocks.append(
                _eq(
                    Label(f"AᵀA − {lam_label.text}I", rf"A^{{T}} A - {lam_label.tex} I"),
                    "=",
                    shifted,
                    "→",
                    shifted.rref(simplify=True)[0].applyfunc(lambda x: _simplify(sp, x)),
                )
            )
            ws = [_primitive(sp, w) for w in basis]
            how = (
                f"orthonormalised by Gram–Schmidt ({lam_label.text} has multiplicity {mult})"
                if mult > 1
                else "normalised to unit length"
            )
            how_tex = how.replace(lam_label.text, f"${lam_label.tex}$")
            blocks.append(
                Prose(
                    "Its null space, read off the row-reduced form, is spanned by "
                    + ", ".join(_vec_text(sp, w) for w in ws)
                    + f"; {how}:",
                    "Its null space, read off the row-reduced form, is spanned by "
                    + ", ".join(f"${_vec_tex(sp, w)}$" for w in ws)
                    + f"; {how_tex}:",
                )
            )
            for w in sp.GramSchmidt(ws, True):
                v = _sign_fix(w.applyfunc(lambda x: _simplify(sp, x)))
                if any(_nested_radical(sp, x) for x in v):
                    raise _NotExact  # e.g. √(5 − √5): exact but unreadable, and slow to check
                vs.append(v)
                i += 1
                blocks.append(_eq(_sym("v", i), "=", Column(v.T)))
        self.steps.append(
            Step(
                "Right singular vectors: unit eigenvectors of AᵀA",
                tuple(blocks),
                "Right singular vectors: unit eigenvectors of $A^{T}A$",
            )
        )
        us = [
            (self.A * v / s).applyfunc(lambda x: _simplify(sp, x))
            for v, s in zip(vs, sigmas, strict=True)
        ]
        self.steps.append(self._u_step(us, exact=True))
        V, v_blocks = self._complete(vs, self.n, "v", "A", exact=True)
        U, u_blocks = self._complete(us, self.m, "u", "Aᵀ", exact=True)
        self.steps.append(Step("Completing V and U to orthonormal bases", (*v_blocks, *u_blocks)))
        return sigmas, V, U

    def _sigma_step(self, lams: list[Any], sigmas: list[Any], *, exact: bool) -> Step:
        sp = self.sp
        blocks: list[Prose | Equation] = []
        for i, s in enumerate(sigmas, start=1):
            root = Label(f"√{_sym('λ', i).text}", rf"\sqrt{{{_sym('λ', i).tex}}}")
            if exact and not s.is_Rational:
                blocks.append(
                    _eq(_sym("σ", i), "=", root, "=", s, "≈", sp.Float(s.evalf(_DPS), _DPS))
                )
            else:
                blocks.append(_eq(_sym("σ", i), "=", root, "=" if exact else "≈", s))
        if not sigmas:
            blocks.append(
                Prose("A = 0: every singular value is 0.", "$A = 0$: every singular value is 0.")
            )
        k = min(self.m, self.n)
        if k > self.rank:
            zeros = ", ".join(_sym("σ", i).text for i in range(self.rank + 1, k + 1))
            zeros_tex = ", ".join(_sym("σ", i).tex for i in range(self.rank + 1, k + 1))
            blocks.append(Prose(f"and {zeros} = 0.", f"and ${zeros_tex} = 0$."))
        return Step(
            "Singular values σᵢ = √λᵢ, in descending order",
            tuple(blocks),
            r"Singular values $\sigma_i = \sqrt{\lambda_i}$, in descending order",
        )

    def _u_step(self, us: list[Any], *, exact: bool) -> Step:
        blocks: list[Prose | Equation] = [
            Prose(
                "Each uᵢ = A vᵢ / σᵢ is a unit eigenvector of AAᵀ for λᵢ (AAᵀ uᵢ = A (AᵀA vᵢ) / σᵢ "
                "= λᵢ uᵢ). Taking it this way rather than solving (AAᵀ − λᵢI) u = 0 again fixes "
                "its sign so that A vᵢ = σᵢ uᵢ, which A = UΣVᵀ needs.",
                r"Each $u_i = A v_i / \sigma_i$ is a unit eigenvector of $AA^{T}$ for $\lambda_i$ "
                r"($AA^{T} u_i = A (A^{T}A v_i) / \sigma_i = \lambda_i u_i$). Taking it this way "
                r"rather than solving $(AA^{T} - \lambda_i I) u = 0$ again fixes its sign so that "
                r"$A v_i = \sigma_i u_i$, which $A = U\Sigma V^{T}$ needs.",
            )
        ]
        for i, u in enumerate(us, start=1):
            frac = Label(
                f"A{_sym('v', i).text} / {_sym('σ', i).text}",
                rf"A {_sym('v', i).tex} / {_sym('σ', i).tex}",
            )
            blocks.append(_eq(_sym("u", i), "=", frac, "=" if exact else "≈", Column(u.T)))
        if not us:
            blocks.append(Prose("(none: A = 0)", "(none: $A = 0$)"))
        return Step(
            "Left singular vectors uᵢ = A vᵢ / σᵢ",
            tuple(blocks),
            r"Left singular vectors $u_i = A v_i / \sigma_i$",
        )

    def _complete(
        self, cols: list[Any], size: int, name: str, of: str, *, exact: bool
    ) -> tuple[Any, list[Prose | Equation]]:
        """Complete orthonormal ``cols`` to a basis of R^size by Gram–Schmidt on e_1, e_2, …."""
        sp = self.sp
        cols = list(cols)
        found = len(cols)
        blocks: list[Prose | Equation] = []
        for j in range(size):
            if len(cols) == size:
                break
            e = sp.zeros(size, 1)
            e[j] = 1
            w = e - sum((c * (c.T * e)[0] for c in cols), sp.zeros(size, 1))
            if exact:
                w = w.applyfunc(lambda x: _simplify(sp, x))
                if w.is_zero_matrix:
                    continue
                norm = _simplify(sp, sp.sqrt((w.T * w)[0]))
            else:
                norm = sp.sqrt((w.T * w)[0])
                if norm < sp.Float(10) ** (-_DPS // 2):
                    continue
            q = (w / norm).applyfunc(lambda x: _simplify(sp, x)) if exact else w / norm
            idx = len(cols) + 1
            e_lab = _sym("e", j + 1)
            proj = " − ".join(
                f"({_sym(name, i).text}·{e_lab.text}){_sym(name, i).text}"
                for i in range(1, len(cols) + 1)
            )
            proj_tex = " - ".join(
                rf"({_sym(name, i).tex}^{{T}} {e_lab.tex})\,{_sym(name, i).tex}"
                for i in range(1, len(cols) + 1)
            )
            w_lab = Label(
                f"{e_lab.text} − {proj}" if proj else e_lab.text,
                f"{e_lab.tex} - {proj_tex}" if proj_tex else e_lab.tex,
            )
            eq = "=" if exact else "≈"
            blocks.append(_eq(w_lab, eq, Column(w.T), "→", _sym(name, idx), eq, Column(q.T)))
            cols.append(q)
        missing = size - found
        symbol = {"v": "V", "u": "U"}[name]
        if missing:
            head = Prose(
                f"{symbol} has {found} of its {size} columns: Gram–Schmidt on the standard basis "
                f"against them (vectors already in their span are skipped). The new columns are a "
                f"basis of the null space of {of}.",
                f"${symbol}$ has {found} of its {size} columns: Gram–Schmidt on the standard basis "
                f"against them (vectors already in their span are skipped). The new columns are a "
                f"basis of the null space of ${of.replace('ᵀ', '^{T}')}$.",
            )
        else:
            head = Prose(
                f"{symbol} is complete: {size} columns.", f"${symbol}$ is complete: {size} columns."
            )
        return sp.Matrix.hstack(*cols), [head, *blocks]

    # steps 3–5 (decimals)
    def _decimal_vectors(self, *, fell_back: bool) -> tuple[Any, ...]:
        import mpmath

        sp = self.sp
        with mpmath.workdps(_DPS):
            gram = mpmath.matrix(
                [[mpmath.mpf(int(x.p)) / int(x.q) for x in row] for row in self.AtA.tolist()]
            )
            evals, evecs = mpmath.eigsy(gram)
            order = sorted(range(self.n), key=lambda i: -evals[i])[: self.rank]
            lams = [sp.Float(evals[i], _DPS) for i in order]
            sigmas = [sp.sqrt(x) for x in lams]
            vs = [
                _sign_fix(sp.Matrix([sp.Float(evecs[r, i], _DPS) for r in range(self.n)]))
                for i in order
            ]
        step = self._sigma_step(lams, sigmas, exact=False)
        if fell_back:
            note = Prose(
                "The singular vectors for these λ need nested radicals (such as √(5 − √5)), so "
                "the next steps are computed in 50-digit arithmetic and shown as decimals.",
                r"The singular vectors for these $\lambda$ need nested radicals (such as "
                r"$\sqrt{5 - \sqrt{5}}$), so the next steps are computed in 50-digit arithmetic "
                "and shown as decimals.",
            )
            step = Step(step.title, (note, *step.blocks), step.title_tex)
        self.steps.append(step)
        blocks: list[Prose | Equation] = [
            Prose(
                "vᵢ: unit eigenvector of AᵀA for λᵢ, computed in 50-digit arithmetic "
                "(sign: first non-zero entry positive).",
                r"$v_i$: unit eigenvector of $A^{T}A$ for $\lambda_i$, computed in 50-digit "
                "arithmetic (sign: first non-zero entry positive).",
            )
        ]
        for i, v in enumerate(vs, start=1):
            blocks.append(_eq(_sym("v", i), "≈", Column(v.T)))
        self.steps.append(
            Step(
                "Right singular vectors: unit eigenvectors of AᵀA",
                tuple(blocks),
                "Right singular vectors: unit eigenvectors of $A^{T}A$",
            )
        )
        Af = self.A.applyfunc(lambda x: sp.Float(x, _DPS))
        us = [Af * v / s for v, s in zip(vs, sigmas, strict=True)]
        self.steps.append(self._u_step(us, exact=False))
        V, v_blocks = self._complete(vs, self.n, "v", "A", exact=False)
        U, u_blocks = self._complete(us, self.m, "u", "Aᵀ", exact=False)
        self.steps.append(Step("Completing V and U to orthonormal bases", (*v_blocks, *u_blocks)))
        return sigmas, V, U

    # step 7
    def _step_result(
        self, sigmas: list[Any], V: Any, U: Any, *, exact: bool
    ) -> tuple[tuple[Any, ...], Any]:
        sp = self.sp
        k = min(self.m, self.n)
        S = tuple(sigmas) + (sp.Integer(0),) * (k - self.rank)
        Sigma = sp.zeros(self.m, self.n)
        for i, s in enumerate(S):
            Sigma[i, i] = s
        product = U * Sigma * V.T
        if exact:
            product = product.applyfunc(lambda x: _simplify(sp, sp.expand(x)))
            if product != self.A:
                raise _NotExact
            check = Prose(
                "UΣVᵀ = A exactly, and UᵀU = I, VᵀV = I.",
                r"$U\Sigma V^{T} = A$ exactly, and $U^{T}U = I$, $V^{T}V = I$.",
            )
        else:
            err = max(abs(x) for x in (product - self.A)) if self.A else sp.Integer(0)
            scale = max([abs(x) for x in self.A] + [sp.Integer(1)])
            tol = sp.Float(10) ** (10 - _DPS)
            if err > tol * scale:  # pragma: no cover - 50-digit arithmetic on a 4×4
                raise ArithmeticError(f"explain: the check UΣVᵀ = A failed by {float(err):.3g}")
            check = Prose(
                f"UΣVᵀ = A up to {sp.Float(err, 2) if err else 0} (50-digit arithmetic); the "
                f"decimals above are rounded to {self.digits} digits.",
                rf"$U\Sigma V^{{T}} = A$ up to ${sp.latex(sp.Float(err, 2)) if err else 0}$ "
                f"(50-digit arithmetic); the decimals above are rounded to {self.digits} digits.",
            )
        Vt = Label("Vᵀ", "V^{T}")
        self.steps.append(
            Step(
                "Result: A = UΣVᵀ",
                title_tex=r"Result: $A = U\Sigma V^{T}$",
                blocks=(
                    _eq(Label("U", "U"), "=", U),
                    _eq(Label("Σ", r"\Sigma"), "=", Sigma),
                    _eq(Vt, "=", V.T),
                    _eq(Label("UΣVᵀ", r"U \Sigma V^{T}"), "=", product, "=", Label("A", "A")),
                    check,
                ),
            )
        )
        return S, Sigma


class _NotExact(Exception):
    """sympy could not carry an exact step through (raised and handled inside explain)."""


def _simplify(sp: Any, x: Any) -> Any:
    """A canonical, readable form of a radical expression: rationalised denominators."""
    return sp.radsimp(sp.sqrtdenest(sp.simplify(x)))


def _nested_radical(sp: Any, x: Any) -> bool:
    """True for a root of an expression that itself holds a root, such as √(5 − √5)."""
    return any(
        p.exp.is_Rational and not p.exp.is_Integer and p.base.has(sp.Pow) for p in x.atoms(sp.Pow)
    )


def _distinct(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _nroots(q: Any) -> list[Any]:
    """Real roots of ``q``, descending, to _DPS digits."""
    roots = q.nroots(n=_DPS) if q.degree() > 0 else []
    return sorted((r for r in roots if r.is_real), key=lambda x: -x)


def _sign_fix(v: Any) -> Any:
    """Make the first clearly non-zero entry positive (the convention of seed 001)."""
    for x in v:
        if abs(x) > 1e-30:
            return -v if x < 0 else v
    return v


def _primitive(sp: Any, w: Any) -> Any:
    """Scale a rational vector to coprime integers, first non-zero entry positive; others kept."""
    if all(x.is_Rational for x in w):
        w = w * math.lcm(*(int(x.q) for x in w))
        g = math.gcd(*(int(x) for x in w))
        w = w / g if g else w
    return _sign_fix(w.applyfunc(lambda x: _simplify(sp, x)))


def _vec_text(sp: Any, w: Any) -> str:
    return "(" + ", ".join(sp.sstr(x).replace("sqrt", "√") for x in w) + ")ᵀ"


def _vec_tex(sp: Any, w: Any) -> str:
    return r"(" + ", ".join(sp.latex(x) for x in w) + r")^{T}"
