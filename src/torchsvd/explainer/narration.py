r"""The words and formulas of the explanation, written once and rendered as text or LaTeX.

A sentence is a template whose math, between ``$…$``, is written in a small neutral notation:
``σ_1``, ``λ_{i}`` (subscripts), ``A^T`` (the transpose), ``√{λ_1}``, Greek letters and ``−``.
:func:`math_text` turns it into unicode (σ₁, Aᵀ, √λ₁), :func:`math_tex` into LaTeX
(``\sigma_{1}``, ``A^{T}``, ``\sqrt{\lambda_{1}}``); ``{0}``, ``{1}``, … are sympy values, set
inline. Equations are chains ``item = item → item``, their items math or sympy values.
:func:`narrate` writes the steps of a :class:`~.derivation.Derivation` with these.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import sympy

from torchsvd.explainer.derivation import Completion, Derivation
from torchsvd.explainer.fields import WIDTH

__all__ = [
    "Column",
    "Equation",
    "Math",
    "Prose",
    "Step",
    "math_tex",
    "math_text",
    "narrate",
    "render",
    "title",
]

_SUB = dict(
    zip("0123456789+-=()aehijklmnoprstuvx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ", strict=True)
)
_SUP = dict(zip("0123456789+-−", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁻", strict=True))
_TEX = {
    "σ": r"\sigma",
    "λ": r"\lambda",
    "Σ": r"\Sigma",
    "×": r"\times",
    "≈": r"\approx",
    "→": r"\longrightarrow",
    "·": r"\cdot",
    "≤": r"\le",
    "…": r"\dots",
    "‖": r"\|",
    "−": "-",
}
_CHOP = 15  # decimal entries of unit vectors below 10^-(digits + _CHOP) are shown as 0
_SEP_TEX = {"=": "=", "→": r"\;\longrightarrow\;", "≈": r"\approx"}


def _apply(s: str, op: str, fn: Any) -> str:
    """Replace each ``op`` followed by one character or a balanced ``{…}`` group by
    ``fn(body)``, innermost groups first."""
    out, i = [], 0
    while i < len(s):
        if s.startswith(op, i) and i + len(op) < len(s) and not s[i + len(op)].isspace():
            j = i + len(op)
            if s[j] == "{":
                depth, k = 0, j
                while k < len(s):
                    depth += {"{": 1, "}": -1}.get(s[k], 0)
                    if depth == 0:
                        break
                    k += 1
                body, i = _apply(s[j + 1 : k], op, fn), k + 1
            else:
                body, i = s[j], j + 1
            out.append(fn(body))
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def math_text(s: str) -> str:
    """Neutral math notation as unicode text.

    >>> math_text("σ_1 = √{λ_1}, A^TA, u_{i} − e_{12}, 10^{−8}")
    'σ₁ = √λ₁, AᵀA, uᵢ − e₁₂, 10⁻⁸'
    """
    s = s.replace("^T", "ᵀ").replace("\\,", "")

    def sub(body: str) -> str:
        if all(c in _SUB for c in body):
            return "".join(_SUB[c] for c in body)
        return f"_({body})"

    def sup(body: str) -> str:
        if all(c in _SUP for c in body):
            return "".join(_SUP[c] for c in body)
        return f"^({body})"

    s = _apply(_apply(s, "_", sub), "^", sup)

    def root(body: str) -> str:
        return (
            f"√{body}"
            if len(body) == 1 or re.fullmatch(r"\w[₀-₉ᵢⱼₖᵣ]*|\d+", body)
            else f"√({body})"
        )

    return _apply(s, "√", root)


def math_tex(s: str) -> str:
    r"""Neutral math notation as LaTeX.

    >>> math_tex("σ_1 = √{λ_1}, A^TA, 2×3, det(λI − A)")
    '\\sigma_{1} = \\sqrt{\\lambda_{1}}, A^{T}A, 2\\times 3, \\det(\\lambda I - A)'
    """
    s = re.sub(r"\bdet\b", r"\\det", s)
    s = s.replace("^T", "^{T}")
    s = _apply(s, "√", lambda body: r"\sqrt{" + body + "}")
    s = _apply(s, "_", lambda body: "_{" + body + "}")
    s = _apply(s, "^", lambda body: "^{" + body + "}")
    out = []
    for i, c in enumerate(s):
        if c in _TEX:
            cmd = _TEX[c]
            nxt = s[i + 1] if i + 1 < len(s) else ""
            out.append(cmd + " " if cmd.startswith("\\") and nxt.isalnum() else cmd)
        else:
            out.append(c)
    return "".join(out)


# --------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class Math:
    """A formula in neutral notation."""

    s: str


@dataclass(frozen=True)
class Column:
    """A column vector, shown as a transposed row: (a, b, c)ᵀ."""

    v: Any


@dataclass(frozen=True)
class Prose:
    """A sentence: a template with ``$math$`` and ``{k}`` for ``values[k]`` (set inline)."""

    template: str
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Equation:
    """``items[0] seps[0] items[1] seps[1] …``; items Math, Column or sympy objects."""

    items: tuple[Any, ...]
    seps: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """One numbered step: a title (a template with ``$math$``) and its blocks."""

    title: str
    blocks: tuple[Prose | Equation, ...]


def _eq(*parts: Any) -> Equation:
    """``_eq(a, '=', b, '→', c)``; strings among the items are math."""
    items = tuple(Math(p) if isinstance(p, str) else p for p in parts[0::2])
    return Equation(items, tuple(parts[1::2]))


# --------------------------------------------------------------------------- rendering


class _Renderer:
    """Renders values with decimals rounded to ``digits`` significant digits."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def show(self, x: Any) -> Any:
        if isinstance(x, Column):
            return Column(self.show(x.v))
        if isinstance(x, sympy.MatrixBase) and x.has(sympy.Float):
            return x.applyfunc(lambda a: a.evalf(self.digits) if a.has(sympy.Float) else a)
        if isinstance(x, sympy.Basic) and x.has(sympy.Float):
            return x.evalf(self.digits)
        return x

    def inline_text(self, x: Any) -> str:
        x = self.show(x)
        if isinstance(x, Column):
            return "(" + ", ".join(self.inline_text(a) for a in x.v) + ")ᵀ"
        s = str(sympy.sstr(x))
        s = re.sub(r"sqrt\((\d+)\)", r"√\1", s).replace("sqrt", "√")
        return s.replace("*√", "√").replace("*", "·")

    def inline_tex(self, x: Any) -> str:
        x = self.show(x)
        if isinstance(x, Column):
            return "(" + ", ".join(self.inline_tex(a) for a in x.v) + ")^{T}"
        return str(sympy.latex(x))

    def prose(self, p: Prose, tex: bool) -> str:
        out = []
        for piece in re.split(r"(\$[^$]*\$)", p.template):
            if len(piece) > 1 and piece.startswith("$") and piece.endswith("$"):
                out.append(f"${math_tex(piece[1:-1])}$" if tex else math_text(piece[1:-1]))
            else:
                out.append(
                    re.sub(r"\{(\d+)\}", lambda m: self._value(p.values[int(m[1])], tex), piece)
                )
        return "".join(out)

    def _value(self, x: Any, tex: bool) -> str:
        return f"${self.inline_tex(x)}$" if tex else self.inline_text(x)

    def pretty(self, eq: Equation) -> str:
        from sympy.printing.pretty.pretty import PrettyPrinter
        from sympy.printing.pretty.stringpict import prettyForm, stringPict

        printer = PrettyPrinter({"use_unicode": True, "wrap_line": False})

        def one(it: Any) -> Any:
            if isinstance(it, Math):
                return prettyForm(math_text(it.s))
            if isinstance(it, Column):
                row = self.show(it).v.T
                return prettyForm(*stringPict.next(printer._print(row), "ᵀ"))
            return printer._print(self.show(it))

        forms = [one(it) for it in eq.items]
        out = forms[0]
        for sep, form in zip(eq.seps, forms[1:], strict=True):
            out = prettyForm(*stringPict.next(out, f" {sep} ", form))
        return str(out.render(wrap_line=False))

    def tex(self, eq: Equation) -> str:
        def one(it: Any) -> str:
            if isinstance(it, Math):
                return math_tex(it.s)
            if isinstance(it, Column):
                return str(sympy.latex(self.show(it).v.T, mat_delim="[")) + "^{T}"
            return str(sympy.latex(self.show(it), mat_delim="["))

        parts = [one(eq.items[0])]
        for sep, it in zip(eq.seps, eq.items[1:], strict=True):
            parts += [_SEP_TEX[sep], one(it)]
        return " ".join(parts)


def render(title: str, steps: tuple[Step, ...], digits: int, fmt: str) -> str:
    """The whole explanation as ``"text"``, ``"markdown"`` or ``"latex"``."""
    r = _Renderer(digits)
    tex = fmt != "text"
    head = r.prose(Prose(title), tex)
    if fmt == "text":
        out = [head, ""]
    elif fmt == "markdown":
        out = [f"## {head}", ""]
    else:
        out = [rf"\section*{{{head}}}", ""]
    for k, step in enumerate(steps, start=1):
        name = f"Step {k}. {r.prose(Prose(step.title), tex)}"
        out += [
            {"text": name, "markdown": f"### {name}", "latex": rf"\subsection*{{{name}}}"}[fmt],
            "",
        ]
        for block in step.blocks:
            if isinstance(block, Prose):
                line = r.prose(block, tex)
                out += [
                    textwrap.fill(line, width=88, break_on_hyphens=False) if not tex else line,
                    "",
                ]
            elif fmt == "text":
                out += [textwrap.indent(r.pretty(block), "    ", lambda ln: bool(ln.strip())), ""]
            elif fmt == "markdown":
                out += ["$$", r.tex(block), "$$", ""]
            else:
                out += [r"\[", r.tex(block), r"\]", ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- the steps


def title(d: Derivation) -> str:
    m, n = d.A.shape
    kind = "exact" if d.exact else f"decimals to {d.field.digits} digits"
    return f"SVD of a ${m}×{n}$ matrix, step by step ({kind})"


def narrate(d: Derivation) -> tuple[Step, ...]:
    """The seven steps of the derivation ``d``, as sentences and equations."""
    return (
        _gram(d),
        _charpoly(d),
        _sigmas(d),
        _right(d),
        _left(d),
        Step(
            "Completing V and U to orthonormal bases",
            (*_completion(d.completions[0], d), *_completion(d.completions[1], d)),
        ),
        _result(d),
    )


def _gram(d: Derivation) -> Step:
    return Step(
        "Gram matrices $A^TA$ and $AA^T$",
        (
            _eq("A", "=", d.A),
            _eq("A^TA", "=", d.AtA),
            _eq("AA^T", "=", d.AAt),
            Prose(
                "Both are symmetric positive semi-definite, $A^TA = V Σ^TΣ V^T$ and "
                "$AA^T = U ΣΣ^T U^T$: their eigenvalues are the squared singular values, their "
                "eigenvectors the singular vectors."
            ),
        ),
    )


def _charpoly(d: Derivation) -> Step:
    blocks: list[Prose | Equation] = []
    for (p, factored), name in zip(d.charpolys, ("A^TA", "AA^T"), strict=True):
        label = f"det(λI − {name})"
        blocks.append(_eq(label, "=", p) if factored == p else _eq(label, "=", p, "=", factored))
    m, n = d.A.shape
    zero_v, zero_u = n - d.rank, m - d.rank
    if zero_v or zero_u:
        zeros = (
            f"$λ = 0$ is a root of multiplicity {zero_v} of the first (the dimension of the null "
            f"space of $A$) and {zero_u} of the second (of the null space of $A^T$)"
        )
    else:
        zeros = "0 is not a root"
    blocks.append(
        Prose(f"Both have the same non-zero roots; {zeros}. So $A$ has rank $r = {d.rank}$.")
    )
    for i, lam in enumerate(d.lams, start=1):
        if lam.exact is None:
            blocks.append(_eq(f"λ_{i}", "≈", lam.value))
        elif d.exact or lam.exact.is_Rational:
            blocks.append(_eq(f"λ_{i}", "=", lam.exact))
        else:
            blocks.append(_eq(f"λ_{i}", "=", lam.exact, "≈", lam.value))
    if not d.exact and d.reason is not None:
        blocks.append(
            Prose(
                "Steps 3 to 5 and 7 are computed in "
                f"{d.field.dps}-digit binary arithmetic and shown as decimals, because "
                f"{d.reason.template}. "
                "Each $λ_i$ is certified: it lies in a rational interval, narrower than "
                f"$10^{{−{d.field.digits + WIDTH}}}λ_i$, at whose ends exactly one irreducible "
                "factor of $det(λI − A^TA)$ changes sign, and these intervals are disjoint, as "
                "many for each factor as its degree.",
                d.reason.values,
            )
        )
    return Step("Characteristic polynomials and their roots", tuple(blocks))


def _sigmas(d: Derivation) -> Step:
    blocks: list[Prose | Equation] = []
    for i, s in enumerate(d.sigmas, start=1):
        if not d.exact:
            blocks.append(_eq(f"σ_{i}", "=", f"√{{λ_{i}}}", "≈", s))
        elif s.is_Rational:
            blocks.append(_eq(f"σ_{i}", "=", f"√{{λ_{i}}}", "=", s))
        else:
            blocks.append(
                _eq(f"σ_{i}", "=", f"√{{λ_{i}}}", "=", s, "≈", sympy.Float(s.evalf(60), 60))
            )
    if not d.sigmas:
        blocks.append(Prose("$A = 0$: every singular value is 0."))
    k = min(d.A.shape)
    if k > d.rank:
        zeros = ", ".join(f"σ_{i}" for i in range(d.rank + 1, k + 1))
        blocks.append(Prose(f"and ${zeros} = 0$."))
    return Step("Singular values $σ_i = √{λ_i}$, in descending order", tuple(blocks))


def _unit(x: Any, d: Derivation) -> Any:
    """A decimal vector or orthogonal matrix with entries below 10^-(digits + _CHOP) set to 0:
    the working precision is chosen for errors far below that (see
    :class:`~.fields.DecimalField`), so such entries are noise or negligible."""
    if d.exact:
        return x
    tol = sympy.Rational(1, 10 ** (d.field.digits + _CHOP))
    return x.applyfunc(lambda a: sympy.Integer(0) if a.is_Float and abs(a) < tol else a)


def _right(d: Derivation) -> Step:
    blocks: list[Prose | Equation] = []
    i = 0
    if not d.exact:
        blocks.append(
            Prose(
                "$v_i$: unit eigenvectors of $A^TA$ for $λ_i$ (an orthonormal basis of the "
                f"eigenspace when $λ_i$ is repeated), by the Jacobi method in {d.field.dps}-digit "
                "arithmetic (sign: first non-zero entry positive)."
            )
        )
    for root, space in zip(d.roots, d.spaces, strict=True):
        lam = f"λ_{i + 1}"
        if d.exact:
            blocks.append(_eq(f"A^TA − {lam}I", "=", space.shifted, "→", space.reduced))
            how = (
                f"orthonormalised by Gram–Schmidt (${lam}$ has multiplicity {root.mult})"
                if root.mult > 1
                else "normalised to unit length"
            )
            spans = ", ".join(f"{{{k}}}" for k in range(len(space.spanning)))
            blocks.append(
                Prose(
                    f"Its null space, read off the row-reduced form, is spanned by {spans}; {how}:",
                    tuple(Column(w) for w in space.spanning),
                )
            )
        for v in space.vectors:
            i += 1
            blocks.append(_eq(f"v_{i}", d.field.rel, Column(_unit(v, d))))
    return Step("Right singular vectors: unit eigenvectors of $A^TA$", tuple(blocks))


def _left(d: Derivation) -> Step:
    blocks: list[Prose | Equation] = [
        Prose(
            "Each $u_i = A v_i / σ_i$ is a unit eigenvector of $AA^T$ for $λ_i$ "
            "($AA^T u_i = A (A^TA v_i) / σ_i = λ_i u_i$). Taking it this way rather than solving "
            "$(AA^T − λ_iI) u = 0$ again fixes its sign so that $A v_i = σ_i u_i$, which "
            "$A = UΣV^T$ needs."
        )
    ]
    for i, u in enumerate(d.us, start=1):
        blocks.append(_eq(f"u_{i}", "=", f"Av_{i} / σ_{i}", d.field.rel, Column(_unit(u, d))))
    if not d.us:
        blocks.append(Prose("(none: $A = 0$)"))
    return Step("Left singular vectors $u_i = A v_i / σ_i$", tuple(blocks))


def _completion(c: Completion, d: Derivation) -> list[Prose | Equation]:
    symbol, of = ("V", "A") if c.name == "v" else ("U", "A^T")
    if not c.extensions:
        return [Prose(f"${symbol}$ is complete: {c.size} columns.")]
    blocks: list[Prose | Equation] = [
        Prose(
            f"${symbol}$ has {c.found} of its {c.size} columns: Gram–Schmidt on the standard "
            "basis against them (vectors already in their span are skipped). The new columns are "
            f"an orthonormal basis of the null space of ${of}$, which has a rational basis, so "
            "they are exact."
        )
    ]
    for x in c.extensions:
        e = f"e_{x.j}"
        proj = " − ".join(f"({c.name}_{i}^T {e})\\,{c.name}_{i}" for i in range(1, x.before + 1))
        blocks.append(
            _eq(
                f"{e} − {proj}" if proj else e,
                "=",
                Column(x.w),
                "→",
                f"{c.name}_{x.index}",
                "=",
                Column(x.q),
            )
        )
    return blocks


def _result(d: Derivation) -> Step:
    product = d.U * d.Sigma * d.V.T
    if d.exact:
        check = Prose(
            "$UΣV^T = A$, $U^TU = I$ and $V^TV = I$ exactly: every entry of $UΣV^T − A$, "
            "$U^TU − I$ and $V^TV − I$, rationalised and expanded, is 0."
        )
        product = d.A
    else:
        errors = d.check.errors or (Fraction(0),) * 3
        bound = sympy.Rational(errors[0].numerator, errors[0].denominator)
        product = product.applyfunc(lambda x: x)
        for i in range(product.rows):
            for j in range(product.cols):
                if d.A[i, j] == 0 and abs(product[i, j]) <= bound:
                    product[i, j] = sympy.Integer(0)
        e = [_upper(x) for x in errors]
        check = Prose(
            f"$UΣV^T = A$ up to ${e[0]}$, $U^TU = I$ up to ${e[1]}$ and $V^TV = I$ up to ${e[2]}$: "
            "bounds on the largest entries of $UΣV^T − A$, $U^TU − I$ and $V^TV − I$, computed "
            f"exactly from the {d.field.dps}-digit working values. The decimals above are "
            f"rounded to {d.field.digits} significant digits; entries of the singular vectors, "
            f"$U$ and $V$ below $10^{{−{d.field.digits + _CHOP}}}$ in absolute value are shown "
            "as 0, and so are those of $UΣV^T$ within that first bound of a zero entry of $A$.",
        )
    return Step(
        "Result: $A = UΣV^T$",
        (
            _eq("U", d.field.rel, _unit(d.U, d)),
            _eq("Σ", d.field.rel, d.Sigma),
            _eq("V^T", d.field.rel, _unit(d.V.T, d)),
            _eq("UΣV^T", d.field.rel, product, "=", "A"),
            check,
        ),
    )


def _upper(x: Fraction) -> str:
    """``x ≥ 0`` rounded up to two significant digits, in neutral math: ``3.2·10^{−40}``."""
    if not x:
        return "0"
    k = math.floor(math.log10(x.numerator) - math.log10(x.denominator)) - 1
    mantissa = math.ceil(x / Fraction(10) ** k)  # two digits, rounded up
    if mantissa >= 100:
        mantissa, k = math.ceil(Fraction(mantissa, 10)), k + 1
    return f"{mantissa // 10}.{mantissa % 10}·10^{{{'−' if k + 1 < 0 else ''}{abs(k + 1)}}}"
