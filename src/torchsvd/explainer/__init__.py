r"""The SVD of a small matrix by hand, step by step: :func:`explain`.

The derivation (:mod:`torchsvd.explainer.derivation`) computes the steps, exactly where closed
forms exist and otherwise in certified high-precision decimals
(:mod:`torchsvd.explainer.fields`); the narration (:mod:`torchsvd.explainer.narration`) writes
them as text, Markdown or LaTeX. Needs sympy (the ``explain`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy
import torch

from torchsvd.explainer.derivation import Derivation, derive
from torchsvd.explainer.narration import Step, narrate, render, title
from torchsvd.explainer.parsing import MAX_DIGITS, MAX_SIZE, as_rationals, parse_matrix

__all__ = ["MAX_DIGITS", "MAX_SIZE", "Explanation", "Step", "explain", "parse_matrix"]

_MAX_SHOWN = 50  # digits the decimals may be shown with


@dataclass(frozen=True)
class Explanation:
    """The SVD A = U Σ Vᵀ of a small matrix and the steps that compute it by hand.

    Attributes
    ----------
    A : sympy.Matrix, m×n, rational entries
    U : sympy.Matrix, m×m, orthogonal
    S : tuple of sympy numbers, the min(m, n) singular values, descending
    Sigma : sympy.Matrix, m×n, ``S`` on the diagonal
    V : sympy.Matrix, n×n, orthogonal; ``A == U * Sigma * V.T``
    exact : bool
        True when every entry is a closed form and the three identities were proven; False
        when steps 3–7 are certified high-precision decimals.
    rank : int
    steps : tuple of Step
    digits : int
        Significant digits shown for decimals.
    derivation : Derivation
        Every quantity of the steps, as computed.
    """

    A: sympy.Matrix
    U: sympy.Matrix
    S: tuple[sympy.Expr, ...]
    Sigma: sympy.Matrix
    V: sympy.Matrix
    exact: bool
    rank: int
    steps: tuple[Step, ...]
    digits: int
    derivation: Derivation

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        """Plain-text rendering (unicode, matrices drawn with sympy's pretty printer)."""
        return render(title(self.derivation), self.steps, self.digits, "text")

    def markdown(self) -> str:
        """Markdown with LaTeX math (``$…$`` inline, ``$$…$$`` display), as GitHub renders it."""
        return render(title(self.derivation), self.steps, self.digits, "markdown")

    def latex(self) -> str:
        """A LaTeX fragment (needs ``amsmath``): one ``\\subsection*`` per step."""
        return render(title(self.derivation), self.steps, self.digits, "latex")

    def to_torch(self, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
        """``(U, S, Vh)`` as tensors in the layout of :func:`torch.linalg.svd` (full matrices)."""

        def conv(M: Any) -> torch.Tensor:
            return torch.tensor([[float(x) for x in row] for row in M.tolist()], dtype=dtype)

        return conv(self.U), torch.tensor([float(s) for s in self.S], dtype=dtype), conv(self.V.T)


def explain(A: Any, *, digits: int = 6) -> Explanation:
    r"""Compute the SVD of a small real matrix by hand and explain each step.

    The textbook method (Strang 2016, ch. 7): the eigendecompositions of AᵀA and AAᵀ, their
    characteristic polynomials and roots λᵢ, σᵢ = √λᵢ, unit eigenvectors vᵢ, uᵢ = A vᵢ / σᵢ,
    completion of U and V to orthonormal bases by Gram–Schmidt on the standard basis, Σ, and
    the check A = UΣVᵀ.

    The entries are read as exact rationals and the work is exact where the squared singular
    values are rational or roots of rational quadratics and each square root denests
    (3 ± √3, 2√3, (1 + √5)/2): UΣVᵀ = A, UᵀU = I and VᵀV = I are then proven by expanding every
    entry to 0. Otherwise steps 3–5 and 7 are computed in binary arithmetic of enough digits
    for ``digits`` correct ones (more for spread-out or close singular values, up to
    ``fields.MAX_DPS``), the eigenvalues certified against the exact characteristic
    polynomial, the three identities checked exactly on the working values and their
    residuals shown; the explanation says which, and why.

    Parameters
    ----------
    A : matrix-like, shape ``(m, n)`` with ``1 <= m, n <= 4``
        A tensor, numpy array, nested list, sympy Matrix, or a string such as
        ``"3 2 2; 2 3 -2"`` (see :func:`parse_matrix`). Entries are made exact: integers and
        fractions as they are, floats through their shortest decimal (0.1 → 1/10). Numerators
        and denominators, also over the common denominator, are at most ``10**MAX_DIGITS``.
    digits : int
        Significant digits shown for decimals, 1 to 50.

    Returns
    -------
    Explanation
        ``.U``, ``.S``, ``.Sigma``, ``.V`` (sympy) with ``A == U Σ Vᵀ``; ``.text()``,
        ``.markdown()``, ``.latex()`` render the steps; ``str()`` is the text.

    Raises
    ------
    ValueError
        A dimension is 0 or larger than 4, an entry is not finite or too large, a string does
        not parse, or certifying the singular values would need more than ``fields.MAX_DPS``
        digits.
    TypeError
        Complex, boolean or non-numeric entries.

    Examples
    --------
    >>> from torchsvd.explainer import explain
    >>> e = explain("3 2 2; 2 3 -2")
    >>> e.S
    (5, 3)
    >>> e.V[:, 1].T  # (1, -1, 4)/√18
    Matrix([[sqrt(2)/6, -sqrt(2)/6, 2*sqrt(2)/3]])
    >>> e.U * e.Sigma * e.V.T == e.A
    True
    >>> print(e.text().splitlines()[0])
    SVD of a 2×3 matrix, step by step (exact)
    >>> explain("1 1; 0 1").exact  # the unit vectors would need √(10 − 2√5)
    False
    """
    if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= _MAX_SHOWN:
        raise ValueError(f"digits must be an int in [1, {_MAX_SHOWN}], got {digits!r}")
    d = derive(as_rationals(A), digits)
    return Explanation(
        A=d.A,
        U=d.U,
        S=d.S,
        Sigma=d.Sigma,
        V=d.V,
        exact=d.exact,
        rank=d.rank,
        steps=narrate(d),
        digits=digits,
        derivation=d,
    )
