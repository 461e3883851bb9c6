r"""Exact real numbers a + b√d and Gauss–Jordan elimination over them.

The exact field of :mod:`.fields` needs only these: the eigenvalues of a rational Gram matrix
whose characteristic polynomial has factors of degree at most 2 lie in Q or in one Q(√d), where
sums, products, quotients, zero tests and signs are exact; their square roots, where they
denest, are sums of square roots of rationals (sympy expressions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import mpmath
import sympy

__all__ = [
    "SHOWN_CHARS",
    "NotExact",
    "Quadratic",
    "canonical",
    "closed_roots",
    "nullspace",
    "rref",
    "sgn",
    "sqrt_expr",
]

SHOWN_CHARS = 60  # longer closed forms are too long to read and are left out of the prose
_SIGN_DPS = 3000  # the exact order of two numbers of different fields gives up past this


class NotExact(Exception):
    """A step has no closed form the exact field accepts.

    ``template`` says which and why, with ``$math$`` in the notation of :mod:`.narration` and
    ``{k}`` for the sympy value ``values[k]``.
    """

    def __init__(self, template: str, *values: Any) -> None:
        super().__init__(template.format(*values) if values else template)
        self.template = template
        self.values = values


@dataclass(frozen=True)
class Quadratic:
    """The real number a + b√d: rationals a, b and an integer d > 0 that is not a square.

    A rational is ``Quadratic(a)`` (b = 0). Sums and products stay in Q(√d), so equality and
    sign are decided exactly: a + b√d = 0 only for a = b = 0, since √d is irrational.
    """

    a: Fraction
    b: Fraction = Fraction(0)
    d: int = 0

    def _lift(self, y: Quadratic | Fraction | int) -> Quadratic:
        y = y if isinstance(y, Quadratic) else Quadratic(Fraction(y))
        if self.b and y.b and self.d != y.d:
            raise ValueError(f"√{self.d} and √{y.d} are in different fields")
        return y

    def _d(self, y: Quadratic) -> int:
        return self.d if self.b else y.d

    def __add__(self, y: Quadratic | Fraction | int) -> Quadratic:
        y = self._lift(y)
        return Quadratic(self.a + y.a, self.b + y.b, self._d(y))

    __radd__ = __add__

    def __neg__(self) -> Quadratic:
        return Quadratic(-self.a, -self.b, self.d)

    def __sub__(self, y: Quadratic | Fraction | int) -> Quadratic:
        return self + -self._lift(y)

    def __rsub__(self, y: Quadratic | Fraction | int) -> Quadratic:
        return self._lift(y) - self

    def __mul__(self, y: Quadratic | Fraction | int) -> Quadratic:
        y = self._lift(y)
        d = self._d(y)
        return Quadratic(self.a * y.a + self.b * y.b * d, self.a * y.b + self.b * y.a, d)

    __rmul__ = __mul__

    def __truediv__(self, y: Quadratic | Fraction | int) -> Quadratic:
        y = self._lift(y)
        norm = y.a * y.a - y.b * y.b * y.d  # non-zero unless y = 0: √d is irrational
        if norm == 0:
            raise ZeroDivisionError("division by zero in Q(√d)")
        return self * Quadratic(y.a / norm, -y.b / norm, y.d)

    def __rtruediv__(self, y: Quadratic | Fraction | int) -> Quadratic:
        return self._lift(y) / self

    def __bool__(self) -> bool:
        return bool(self.a or self.b)

    @property
    def is_rational(self) -> bool:
        return not self.b

    def sign(self) -> int:
        """−1, 0 or 1, exactly: compares a² with b²d when a and b√d have opposite signs."""
        sa, sb = sgn(self.a), sgn(self.b)
        if sb == 0 or sa == sb:
            return sa or sb
        if sa == 0:
            return sb
        return sa if self.a * self.a > self.b * self.b * self.d else sb

    def __lt__(self, y: Quadratic) -> bool:
        """Exact comparison of numbers in possibly different fields Q(√d) and Q(√e)."""
        if not (self.b and y.b) or self.d == y.d:
            return (self - y).sign() < 0
        return _sign_of(lambda: self.interval() - y.interval()) < 0

    def interval(self) -> Any:
        """An mpmath interval holding the number, at the current ``mpmath.iv`` precision."""
        iv = mpmath.iv
        value = iv.mpf(self.a.numerator) / self.a.denominator
        if self.b:
            value += iv.mpf(self.b.numerator) / self.b.denominator * iv.sqrt(self.d)
        return value

    def to_sympy(self) -> Any:
        a = sympy.Rational(self.a.numerator, self.a.denominator)
        if not self.b:
            return a
        return a + sympy.Rational(self.b.numerator, self.b.denominator) * sympy.sqrt(self.d)


def sgn(x: Fraction) -> int:
    """The sign of a rational: −1, 0 or 1."""
    return (x > 0) - (x < 0)


def _sign_of(interval: Callable[[], Any]) -> int:
    """The sign of a non-zero number given as an interval function, raising the precision until
    the interval excludes 0."""
    iv = mpmath.iv
    saved = iv.dps
    try:
        dps = 30
        while dps <= _SIGN_DPS:
            iv.dps = dps
            x = interval()
            if x.a > 0:
                return 1
            if x.b < 0:
                return -1
            dps *= 2
    finally:
        iv.dps = saved
    raise NotExact(f"two eigenvalues agree to more than {_SIGN_DPS} digits")


def rref(rows: Sequence[Sequence[Quadratic]]) -> tuple[list[list[Quadratic]], list[int]]:
    """Reduced row echelon form and pivot columns, by Gauss–Jordan with exact zero tests."""
    M = [list(r) for r in rows]
    pivots: list[int] = []
    n = len(M[0]) if M else 0
    for col in range(n):
        i = len(pivots)
        pivot = next((k for k in range(i, len(M)) if M[k][col]), None)
        if pivot is None:
            continue
        M[i], M[pivot] = M[pivot], M[i]
        p = M[i][col]
        M[i] = [x / p for x in M[i]]
        for k in range(len(M)):
            if k != i and M[k][col]:
                f = M[k][col]
                M[k] = [x - f * y for x, y in zip(M[k], M[i], strict=True)]
        pivots.append(col)
    return M, pivots


def nullspace(rows: Sequence[Sequence[Quadratic]]) -> list[list[Quadratic]]:
    """A basis of the null space read off the rref: one vector per free column."""
    R, pivots = rref(rows)
    n = len(rows[0])
    zero = Quadratic(Fraction(0))
    basis = []
    for free in (c for c in range(n) if c not in pivots):
        w = [zero] * n
        w[free] = Quadratic(Fraction(1))
        for i, p in enumerate(pivots):
            w[p] = -R[i][free]
        basis.append(w)
    return basis


def closed_roots(factor: sympy.Poly) -> list[Quadratic] | None:
    """The real roots of an irreducible factor of degree ≤ 2 over Q, ascending; else None."""
    coeffs = [Fraction(int(c.p), int(c.q)) for c in factor.all_coeffs()]
    if len(coeffs) == 2:
        return [Quadratic(-coeffs[1] / coeffs[0])]
    if len(coeffs) != 3:
        return None
    a, b, c = coeffs
    disc = b * b - 4 * a * c  # > 0 and not a square: the roots of the Gram matrix are real
    scale = disc.denominator**2  # √disc = √(disc·q²)/q with an integer under the root
    d = int(disc * scale)
    half = 1 / (2 * a) / math.isqrt(scale)
    lo, hi = Quadratic(-b / (2 * a), -abs(half), d), Quadratic(-b / (2 * a), abs(half), d)
    return [lo, hi]


def _rational_sqrt(x: Fraction) -> Fraction | None:
    p, q = math.isqrt(x.numerator), math.isqrt(x.denominator)
    return Fraction(p, q) if p * p == x.numerator and q * q == x.denominator else None


def sqrt_expr(x: Quadratic) -> Any:
    """√x in closed form for x > 0 in Q(√d): √(a + b√d) = √((a + c)/2) ± √((a − c)/2) with
    c = √(a² − b²d) when c is rational; :class:`NotExact` when √x is a nested radical."""
    if x.is_rational:
        return sympy.sqrt(sympy.Rational(x.a.numerator, x.a.denominator))
    c = _rational_sqrt(x.a * x.a - x.b * x.b * x.d) if x.a > 0 else None
    if c is None:
        root = sympy.sqrt(x.to_sympy(), evaluate=False)
        if len(str(root)) > SHOWN_CHARS:
            raise NotExact("a square root it needs cannot be written without nested radicals")
        raise NotExact("{0} cannot be written without nested radicals", root)
    hi, lo = (x.a + c) / 2, (x.a - c) / 2
    root = sympy.sqrt(sympy.Rational(hi.numerator, hi.denominator))
    return root + sgn(x.b) * sympy.sqrt(sympy.Rational(lo.numerator, lo.denominator))


def canonical(x: Any) -> Any:
    """A sum of rational multiples of distinct square roots: rationalised, expanded."""
    return sympy.expand(sympy.radsimp(sympy.expand(x)))
