r"""The arithmetic of the derivation: exact (rationals and square roots) or decimal (certified).

The derivation (:mod:`.derivation`) is one pipeline that asks a field for each non-rational
step: the roots λ of the characteristic polynomial, σ = √λ, the eigenspace of AᵀA for λ, and
u = Av/σ. :class:`ExactField` answers in closed form, with exact zero tests, and raises
:class:`~.quadratic.NotExact` where a closed form would need more than square roots of
quadratic numbers (an irreducible cubic, a nested radical such as √(5 − √5));
:class:`DecimalField` answers in high-precision binary floating point whose precision is chosen
from the spread and the gaps of the eigenvalues, and certifies the eigenvalues by sign changes
of the exact polynomial.

Everything that is rational whatever the field (the Gram matrices, their characteristic
polynomials, the rank, the null spaces that complete U and V) is computed exactly, once, by the
derivation itself.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import mpmath
import sympy

from torchsvd.explainer.quadratic import (
    SHOWN_CHARS,
    NotExact,
    Quadratic,
    canonical,
    closed_roots,
    nullspace,
    rref,
    sgn,
    sqrt_expr,
)

__all__ = [
    "MAX_DPS",
    "WIDTH",
    "Check",
    "DecimalField",
    "Eigenspace",
    "ExactField",
    "Field",
    "PrecisionTooLow",
    "Root",
]

MAX_DPS = 3000  # decimal digits of the working precision, at most
WIDTH = 17  # the certified intervals are narrower than 10^-(digits + WIDTH)·λ
_GUARD = 30  # digits of the working precision beyond the shown ones and the conditioning


class PrecisionTooLow(Exception):
    """The decimal check failed at this precision; the derivation retries with more digits."""


# --------------------------------------------------------------------------- the fields


@dataclass(frozen=True)
class Root:
    """One distinct non-zero eigenvalue λ of AᵀA (a squared singular value).

    ``exact`` is its closed form (a sympy number) where it has one, ``value`` the number the
    derivation computes with (the closed form, or a decimal), ``interval`` a rational interval
    certified to hold it (decimal field only).
    """

    exact: Any
    value: Any
    mult: int
    interval: tuple[Fraction, Fraction] | None = None
    data: Any = None  # what the field keeps for its eigenspace


@dataclass(frozen=True)
class Eigenspace:
    """The unit eigenvectors of AᵀA for one λ; with the exact field, how they were found."""

    shifted: Any  # AᵀA − λI (exact field), else None
    reduced: Any  # its reduced row echelon form
    spanning: tuple[Any, ...]  # a basis of its null space read off ``reduced``
    vectors: tuple[Any, ...]  # orthonormal, first non-zero entry positive


@dataclass(frozen=True)
class Check:
    """How UΣVᵀ = A, UᵀU = I and VᵀV = I were verified.

    ``errors`` is None when each entry of the three differences expands to exactly 0; otherwise
    it holds the largest entry of each, computed exactly from the working values.
    """

    errors: tuple[Fraction, Fraction, Fraction] | None


def _primitive(w: list[Quadratic]) -> list[Quadratic]:
    """Scale to integer coordinates (coprime when rational), first non-zero entry positive."""
    dens = [x.a.denominator for x in w] + [x.b.denominator for x in w]
    scale = Fraction(math.lcm(*dens))
    if all(x.is_rational for x in w):
        g = math.gcd(*(int(x.a * scale) for x in w))
        scale /= g or 1
    first = next(x for x in w if x)
    return [x * (scale if first.sign() > 0 else -scale) for x in w]


def _dot(x: Sequence[Quadratic], y: Sequence[Quadratic]) -> Quadratic:
    return sum((a * b for a, b in zip(x, y, strict=True)), Quadratic(Fraction(0)))


class ExactField:
    """Closed forms: rationals and square roots, zero tests and signs decided exactly."""

    exact = True
    rel = "="
    dps = 0  # no working precision: nothing is rounded

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def eigenvalues(
        self, factors: list[tuple[sympy.Poly, int]], gram: list[list[Fraction]]
    ) -> list[Root]:
        roots = []
        for factor, mult in factors:
            closed = closed_roots(factor)
            if closed is None:
                why = (
                    "whose three real roots cannot be written with real radicals (the casus "
                    "irreducibilis)"
                    if factor.degree() == 3
                    else "and closed forms are written here only for factors of degree 1 and 2"
                )
                raise NotExact(
                    f"$det(λI − A^TA)$ has an irreducible factor of degree {factor.degree()}, {why}"
                )
            roots += [Root(x.to_sympy(), x, mult) for x in closed]
        roots.sort(key=lambda r: _Desc(r.value))
        return roots

    def sqrt(self, lam: Root) -> Any:
        return sqrt_expr(lam.value)

    def eigenspace(self, gram: list[list[Fraction]], lam: Root) -> Eigenspace:
        n = len(gram)
        x = lam.value
        shifted = [
            [Quadratic(gram[i][j]) - (x if i == j else 0) for j in range(n)] for i in range(n)
        ]
        reduced, _ = rref(shifted)
        spanning = [_primitive(w) for w in nullspace(shifted)]
        if len(spanning) != lam.mult:  # pragma: no cover - exact arithmetic: it cannot differ
            raise NotExact("the eigenspace has the wrong dimension")
        orthogonal: list[list[Quadratic]] = []
        for w in spanning:  # Gram–Schmidt, without normalising: it stays in Q(√d)
            for o in orthogonal:
                f = _dot(w, o) / _dot(o, o)
                w = [a - f * b for a, b in zip(w, o, strict=True)]
            orthogonal.append(w)
        vectors = []
        for w in orthogonal:
            norm = sqrt_expr(_dot(w, w))
            vectors.append(sympy.Matrix([canonical(a.to_sympy() / norm) for a in w]))

        def matrix(rows: list[list[Quadratic]]) -> Any:
            return sympy.Matrix([[a.to_sympy() for a in r] for r in rows])

        return Eigenspace(
            matrix(shifted),
            matrix(reduced),
            tuple(sympy.Matrix([a.to_sympy() for a in w]) for w in spanning),
            tuple(vectors),
        )

    def left(self, A: Any, v: Any, sigma: Any) -> Any:
        return (A * v / sigma).applyfunc(canonical)

    def lift_vector(self, x: Any) -> Any:
        return x

    def check(self, A: Any, U: Any, Sigma: Any, V: Any) -> Check:
        m, n = A.shape
        for difference in (U * Sigma * V.T - A, U.T * U - sympy.eye(m), V.T * V - sympy.eye(n)):
            if not difference.applyfunc(canonical).is_zero_matrix:
                raise NotExact("sympy could not expand $UΣV^T − A$, $U^TU − I$ and $V^TV − I$ to 0")
        return Check(None)


class _Desc:
    """Sort key: descending by the exact order of Quadratic numbers."""

    def __init__(self, x: Quadratic) -> None:
        self.x = x

    def __lt__(self, other: _Desc) -> bool:
        return other.x < self.x


def _mpf(x: Fraction) -> Any:
    return mpmath.mpf(x.numerator) / x.denominator


def _fraction(x: Any) -> Fraction:
    """An mpmath or sympy binary float as the exact fraction it is (no rounding: its raw
    sign, mantissa and exponent)."""
    sign, man, exp, _ = x._mpf_
    return (-1) ** sign * Fraction(man) * Fraction(2) ** exp


def _log10(x: Fraction) -> float:
    return (math.log10(x.numerator) if x.numerator else -math.inf) - math.log10(x.denominator)


class DecimalField:
    """Binary floating point with ``dps`` decimal digits, many more than are shown.

    The eigenvalues come from mpmath's Jacobi method on AᵀA and are certified against the exact
    polynomial: each lies in a disjoint rational interval at whose ends exactly one irreducible
    factor of det(λI − AᵀA) changes sign, as many intervals per factor as its degree (so each
    holds exactly one root, of that factor's multiplicity). The precision is raised until that
    holds and covers the spread λ₁/λ_r and the smallest gap, which bound the error of the
    eigenvectors and of u = Av/σ.
    """

    exact = False
    rel = "≈"

    def __init__(self, digits: int, dps: int | None = None) -> None:
        self.digits = digits
        self.dps = dps or 0

    def eigenvalues(
        self, factors: list[tuple[sympy.Poly, int]], gram: list[list[Fraction]]
    ) -> list[Root]:
        lam1 = sum((gram[i][i] for i in range(len(gram))), Fraction(0))  # ≥ λ₁
        product = Fraction(1)
        r = 0
        for factor, mult in factors:
            c = factor.all_coeffs()
            product *= (
                abs(Fraction(int(c[-1].p), int(c[-1].q)) / Fraction(int(c[0].p), int(c[0].q)))
                ** mult
            )
            r += factor.degree() * mult
        lam_r = product / lam1 ** (r - 1)  # ≤ λ_r: the product of the others is ≤ λ₁^(r−1)
        spread = math.ceil(_log10(lam1 / lam_r))
        self.dps = max(self.dps, self.digits + _GUARD + spread)
        while True:
            if self.dps > MAX_DPS:
                raise ValueError(
                    f"explain needs more than {MAX_DPS} digits for this matrix: its singular "
                    "values are too far apart or too close together to be certified; use "
                    "torchsvd.svd for a floating-point SVD"
                )
            roots, gap = self._certify(factors, gram, r, lam1)
            if roots is None:  # two eigenvalues not yet told apart: more digits
                self.dps *= 2
                continue
            need = self.digits + _GUARD + math.ceil(_log10(lam1 / gap))
            if self.dps >= need:
                return roots
            self.dps = need

    def _certify(
        self,
        factors: list[tuple[sympy.Poly, int]],
        gram: list[list[Fraction]],
        r: int,
        lam1: Fraction,
    ) -> tuple[list[Root] | None, Fraction]:
        n = len(gram)
        with mpmath.workdps(self.dps):
            evals, evecs = mpmath.eigsy(mpmath.matrix([[_mpf(x) for x in row] for row in gram]))
            order = sorted(range(n), key=lambda i: -evals[i])[:r]
            tol = _mpf(lam1) * mpmath.mpf(10) ** (12 - self.dps)
            clusters: list[list[int]] = []
            for i in order:
                if clusters and evals[clusters[-1][-1]] - evals[i] <= tol:
                    clusters[-1].append(i)
                else:
                    clusters.append([i])
            intervals = []
            for c in clusters:
                lo, hi = evals[c[-1]] - tol, evals[c[0]] + tol
                intervals.append((_fraction(lo), _fraction(hi)))
        sqf = [(sympy.Poly(f, domain="QQ"), k) for f, k in factors]
        roots: list[Root] = []
        for (lo, hi), cluster in zip(intervals, clusters, strict=True):
            changes = [(f, k) for f, k in sqf if sgn(_eval(f, lo)) * sgn(_eval(f, hi)) < 0]
            narrow = hi - lo < lo / 10 ** (self.digits + WIDTH)  # as the explanation says
            if lo <= 0 or not narrow or len(changes) != 1 or changes[0][1] != len(cluster):
                return None, Fraction(0)
            roots.append(
                Root(None, _mid(lo, hi), len(cluster), (lo, hi), (cluster, evecs, changes[0][0]))
            )
        per_factor: dict[int, int] = {}
        for root in roots:
            per_factor[id(root.data[2])] = per_factor.get(id(root.data[2]), 0) + 1
        if any(per_factor.get(id(f), 0) != f.degree() for f, _ in sqf):
            return None, Fraction(0)
        if any(a[0] <= b[1] for a, b in itertools.pairwise(intervals)):
            return None, Fraction(0)
        gaps = [a[0] - b[1] for a, b in itertools.pairwise(intervals)]
        if r < n:
            gaps.append(intervals[-1][0])  # the distance to the eigenvalue 0
        return self._closed(roots, sqf), min(gaps, default=lam1)

    def _closed(self, roots: list[Root], sqf: list[tuple[sympy.Poly, int]]) -> list[Root]:
        """Attach closed forms to the roots of factors of degree ≤ 2, matched by order (those
        short enough to read)."""
        out = list(roots)
        for f, _ in sqf:
            closed = closed_roots(f)
            if closed is None or any(len(str(x.to_sympy())) > SHOWN_CHARS for x in closed):
                continue
            mine = sorted(
                (i for i, x in enumerate(roots) if x.data[2] is f), key=lambda i: roots[i].value
            )
            for i, x in zip(mine, closed, strict=True):
                out[i] = Root(
                    x.to_sympy(), roots[i].value, roots[i].mult, roots[i].interval, roots[i].data
                )
        with mpmath.workdps(self.dps):
            return [
                Root(x.exact, sympy.Float(_mpf(x.value), self.dps), x.mult, x.interval, x.data)
                for x in out
            ]

    def sqrt(self, lam: Root) -> Any:
        with mpmath.workdps(self.dps):
            return sympy.Float(mpmath.sqrt(_mpf(_fraction_of(lam.value))), self.dps)

    def eigenspace(self, gram: list[list[Fraction]], lam: Root) -> Eigenspace:
        cluster, evecs, _ = lam.data
        vectors = []
        with mpmath.workdps(self.dps):
            small = mpmath.mpf(10) ** -(self.digits + _GUARD // 2)
            for i in cluster:
                v = [evecs[r, i] for r in range(evecs.rows)]
                first = next(x for x in v if abs(x) > small)
                vectors.append(
                    sympy.Matrix([sympy.Float(-x if first < 0 else x, self.dps) for x in v])
                )
        return Eigenspace(None, None, (), tuple(vectors))

    def left(self, A: Any, v: Any, sigma: Any) -> Any:
        with mpmath.workdps(self.dps):
            return sympy.Matrix(
                [
                    sympy.Float(
                        mpmath.fsum(
                            _mpf(_fraction_of(A[i, j])) * _mpf(_fraction_of(v[j]))
                            for j in range(A.shape[1])
                        )
                        / _mpf(_fraction_of(sigma)),
                        self.dps,
                    )
                    for i in range(A.shape[0])
                ]
            )

    def lift_vector(self, x: Any) -> Any:
        return x.applyfunc(lambda a: sympy.Float(a.evalf(self.dps + 5), self.dps))

    def check(self, A: Any, U: Any, Sigma: Any, V: Any) -> Check:
        m, n = A.shape

        def exact(M: Any) -> list[list[Fraction]]:
            return [[_fraction_of(x) for x in M.row(i)] for i in range(M.rows)]

        a, u, s, v = exact(A), exact(U), exact(Sigma), exact(V)
        us = _matmul(u, s)
        rec = _matmul(us, _transpose(v))
        errors = (
            _maxabs(rec, a),
            _maxabs(_matmul(_transpose(u), u), _eye(m)),
            _maxabs(_matmul(_transpose(v), v), _eye(n)),
        )
        sigmas = [s[i][i] for i in range(min(m, n)) if s[i][i]]
        tol = Fraction(1, 10 ** (self.digits + _GUARD // 3))
        if errors[0] > (min(sigmas) if sigmas else 1) * tol or max(errors[1:]) > tol:
            raise PrecisionTooLow
        return Check(errors)


def _fraction_of(x: Any) -> Fraction:
    if isinstance(x, sympy.Rational):
        return Fraction(int(x.p), int(x.q))
    return _fraction(x)


def _eval(f: sympy.Poly, x: Fraction) -> Fraction:
    out = Fraction(0)
    for c in f.all_coeffs():  # Horner, exactly
        out = out * x + Fraction(int(c.p), int(c.q))
    return out


def _mid(lo: Fraction, hi: Fraction) -> Fraction:
    return (lo + hi) / 2


def _matmul(x: list[list[Fraction]], y: list[list[Fraction]]) -> list[list[Fraction]]:
    return [
        [
            sum((a * b for a, b in zip(row, col, strict=True)), Fraction(0))
            for col in zip(*y, strict=True)
        ]
        for row in x
    ]


def _transpose(x: list[list[Fraction]]) -> list[list[Fraction]]:
    return [list(c) for c in zip(*x, strict=True)]


def _eye(n: int) -> list[list[Fraction]]:
    return [[Fraction(int(i == j)) for j in range(n)] for i in range(n)]


def _maxabs(x: list[list[Fraction]], y: list[list[Fraction]]) -> Fraction:
    return max(
        (abs(a - b) for r, s in zip(x, y, strict=True) for a, b in zip(r, s, strict=True)),
        default=Fraction(0),
    )


Field = ExactField | DecimalField
