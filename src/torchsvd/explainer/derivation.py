r"""The SVD of a small matrix by hand: the steps, computed in an exact or a decimal field.

Since AᵀA = V ΣᵀΣ Vᵀ and AAᵀ = U ΣΣᵀ Uᵀ:

1. form the Gram matrices AᵀA and AAᵀ;
2. the roots of det(λI − AᵀA) and det(λI − AAᵀ) are the squared singular values (both share
   the non-zero ones; the multiplicity of 0 is the dimension of a null space);
3. σᵢ = √λᵢ, descending;
4. the unit eigenvectors of AᵀA for the non-zero λᵢ are the right singular vectors vᵢ (an
   orthonormal basis of each eigenspace, by Gram–Schmidt when λᵢ is repeated);
5. uᵢ = A vᵢ / σᵢ are unit eigenvectors of AAᵀ, with the signs that A = UΣVᵀ needs;
6. the columns of V and U still missing complete each to an orthonormal basis: Gram–Schmidt
   on the standard basis e₁, e₂, … against the columns already found. The new columns span the
   null space of A (of Aᵀ), which is rational, so this step is exact in both fields;
7. Σ is the m×n matrix with σ₁, σ₂, … on its diagonal; UΣVᵀ = A, UᵀU = I and VᵀV = I are
   checked.

:func:`derive` runs these steps once with :class:`~.fields.ExactField` and, where that raises
:class:`~.quadratic.NotExact`, again with :class:`~.fields.DecimalField`. Steps 1, 2 and 6 are
rational and the same in both.

References
----------
.. [1] G. Strang, *Introduction to Linear Algebra*, 5th ed., ch. 7 ("The Singular Value
       Decomposition"), Wellesley-Cambridge Press, 2016.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import sympy

from torchsvd.explainer.fields import (
    Check,
    DecimalField,
    Eigenspace,
    ExactField,
    Field,
    PrecisionTooLow,
    Root,
)
from torchsvd.explainer.quadratic import NotExact, Quadratic, nullspace, rref

__all__ = ["Completion", "Derivation", "Extension", "derive"]

LAMBDA = sympy.Symbol("lambda")


@dataclass(frozen=True)
class Extension:
    """One new column by Gram–Schmidt: w = e_j − Σᵢ (cᵢᵀ e_j) cᵢ over the columns so far, and
    q = w / ‖w‖, the column number ``index`` (1-based); ``j`` is 1-based."""

    j: int
    before: int
    w: Any
    index: int
    q: Any


@dataclass(frozen=True)
class Completion:
    """Step 6 for one of V (``name`` "v", the null space of A) and U ("u", of Aᵀ)."""

    name: str
    size: int
    found: int
    extensions: tuple[Extension, ...]


@dataclass(frozen=True)
class Derivation:
    """Every quantity the hand computation writes down, in the order it does.

    ``field`` is the field of steps 3–7; ``reason`` says why the exact field was not used
    (None when it was). ``roots`` are the distinct non-zero eigenvalues of AᵀA, descending,
    ``lams`` the same with multiplicity; ``spaces`` their eigenspaces.
    """

    A: Any
    AtA: Any
    AAt: Any
    rank: int
    charpolys: tuple[tuple[Any, Any], tuple[Any, Any]]  # (det(λI − G), its factored form)
    roots: tuple[Root, ...]
    lams: tuple[Root, ...]
    sigmas: tuple[Any, ...]
    spaces: tuple[Eigenspace, ...]
    us: tuple[Any, ...]
    completions: tuple[Completion, Completion]
    U: Any
    S: tuple[Any, ...]
    Sigma: Any
    V: Any
    check: Check
    field: Field
    reason: NotExact | None

    @property
    def exact(self) -> bool:
        return self.field.exact


def derive(rows: list[list[Fraction]], digits: int) -> Derivation:
    """Run steps 1–7 on the rational matrix ``rows``: exactly if it can, else in decimals."""
    base = _Rational(rows)
    try:
        return _pipeline(base, ExactField(digits), None)
    except NotExact as exc:
        reason = exc
    dps = None
    while True:
        field = DecimalField(digits, dps)
        try:
            return _pipeline(base, field, reason)
        except PrecisionTooLow:
            dps = 2 * field.dps


class _Rational:
    """The steps that are rational whatever the field: Gram matrices, characteristic
    polynomials, rank, the factors of the polynomial of the non-zero roots, null spaces."""

    def __init__(self, rows: list[list[Fraction]]) -> None:
        self.rows = rows
        self.m, self.n = len(rows), len(rows[0])
        self.A = sympy.Matrix(
            [[sympy.Rational(x.numerator, x.denominator) for x in r] for r in rows]
        )
        self.AtA, self.AAt = self.A.T * self.A, self.A * self.A.T
        self.gram = [[_frac(x) for x in self.AtA.row(i)] for i in range(self.n)]
        _, pivots = rref([[Quadratic(x) for x in r] for r in rows])
        self.rank = len(pivots)
        p, p_left = self._charpoly(self.AtA), self._charpoly(self.AAt)
        self.charpolys = ((p, sympy.factor(p)), (p_left, sympy.factor(p_left)))
        q = sympy.Poly(self.charpolys[0][0], LAMBDA).exquo(
            sympy.Poly(LAMBDA ** (self.n - self.rank), LAMBDA)
        )
        self.factors = [(f, k) for f, k in q.factor_list()[1]]

    @staticmethod
    def _charpoly(G: Any) -> Any:
        return G.charpoly(LAMBDA).as_expr()

    def null_basis(self, transpose: bool) -> list[list[Fraction]]:
        """An orthogonal (not normalised) rational basis of the null space of A or Aᵀ."""
        rows = [list(c) for c in zip(*self.rows, strict=True)] if transpose else self.rows
        basis = [[x.a for x in w] for w in nullspace([[Quadratic(x) for x in r] for r in rows])]
        orthogonal: list[list[Fraction]] = []
        for w in basis:
            for o in orthogonal:
                f = _dot(w, o) / _dot(o, o)
                w = [a - f * b for a, b in zip(w, o, strict=True)]
            orthogonal.append(w)
        return orthogonal


def _frac(x: Any) -> Fraction:
    return Fraction(int(x.p), int(x.q))


def _dot(x: list[Fraction], y: list[Fraction]) -> Fraction:
    return sum((a * b for a, b in zip(x, y, strict=True)), Fraction(0))


def _pipeline(base: _Rational, field: Field, reason: NotExact | None) -> Derivation:
    roots = field.eigenvalues(base.factors, base.gram)
    lams = tuple(x for x in roots for _ in range(x.mult))
    sigmas = tuple(field.sqrt(x) for x in lams)
    spaces = tuple(field.eigenspace(base.gram, x) for x in roots)
    vs = [v for s in spaces for v in s.vectors]
    us = [field.left(base.A, v, s) for v, s in zip(vs, sigmas, strict=True)]
    v_done = _complete(base, "v", field)
    u_done = _complete(base, "u", field)
    V = sympy.Matrix.hstack(*vs, *(field.lift_vector(x.q) for x in v_done.extensions))
    U = sympy.Matrix.hstack(*us, *(field.lift_vector(x.q) for x in u_done.extensions))
    k = min(base.m, base.n)
    S = sigmas + (sympy.Integer(0),) * (k - base.rank)
    Sigma = sympy.zeros(base.m, base.n)
    for i, s in enumerate(S):
        Sigma[i, i] = s
    check = field.check(base.A, U, Sigma, V)
    return Derivation(
        A=base.A,
        AtA=base.AtA,
        AAt=base.AAt,
        rank=base.rank,
        charpolys=base.charpolys,
        roots=tuple(roots),
        lams=lams,
        sigmas=sigmas,
        spaces=spaces,
        us=tuple(us),
        completions=(v_done, u_done),
        U=U,
        S=S,
        Sigma=Sigma,
        V=V,
        check=check,
        field=field,
        reason=reason,
    )


def _complete(base: _Rational, name: str, field: Field) -> Completion:
    """Gram–Schmidt on e₁, e₂, … against the columns found so far, computed exactly.

    Against the first r columns (an orthonormal basis of the row space of A, or of its column
    space), e_j − Σᵢ (cᵢᵀ e_j) cᵢ is the projection of e_j on the null space of A (of Aᵀ), which
    has a rational orthogonal basis; the columns added after that are rational multiples of
    rational vectors over a square root of a rational.
    """
    size = base.n if name == "v" else base.m
    null = base.null_basis(transpose=name == "u")
    added: list[list[Fraction]] = []
    extensions: list[Extension] = []
    for j in range(size):
        if len(added) == len(null):
            break
        w = [Fraction(0)] * size
        for c, sign in [(c, 1) for c in null] + [(c, -1) for c in added]:
            f = sign * c[j] / _dot(c, c)
            w = [a + f * b for a, b in zip(w, c, strict=True)]
        if not any(w):
            continue  # e_j is in the span of the columns so far
        norm = sympy.sqrt(sympy.Rational(_dot(w, w).numerator, _dot(w, w).denominator))
        exact_w = sympy.Matrix([sympy.Rational(x.numerator, x.denominator) for x in w])
        extensions.append(
            Extension(
                j + 1, base.rank + len(added), exact_w, base.rank + len(added) + 1, exact_w / norm
            )
        )
        added.append(w)
    return Completion(name, size, base.rank, tuple(extensions))
