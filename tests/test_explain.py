"""explain: the exact SVD by hand (seed 001), its fallback to decimals, rendering, bad input."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy
import torch

from torchsvd.explainer import Explanation, explain, parse_matrix

SEED001 = "3 2 2; 2 3 -2"


def _is_zero(M: sympy.Matrix) -> bool:
    return M.applyfunc(sympy.simplify).is_zero_matrix


def _check_exact_svd(e: Explanation) -> None:
    m, n = e.A.shape
    assert _is_zero(e.U * e.Sigma * e.V.T - e.A)
    assert _is_zero(e.U.T * e.U - sympy.eye(m))
    assert _is_zero(e.V.T * e.V - sympy.eye(n))


def test_seed001_exact_values_and_vectors() -> None:
    e = explain(SEED001)
    assert e.exact and e.rank == 2
    assert e.S == (5, 3)
    r2, r18 = 1 / sympy.sqrt(2), 1 / sympy.sqrt(18)
    third = sympy.Rational(1, 3)
    # Exactly the matrices of seed 001 (signs included: v from AᵀA, first entry positive,
    # u = Av/σ, v₃ by Gram–Schmidt on e₁).
    U_seed = sympy.Matrix([[r2, r2], [r2, -r2]])
    V_seed = sympy.Matrix([[r2, r18, 2 * third], [r2, -r18, -2 * third], [0, 4 * r18, -third]])
    assert _is_zero(e.U - U_seed)
    assert _is_zero(e.V - V_seed)
    assert e.Sigma == sympy.Matrix([[5, 0, 0], [0, 3, 0]])
    assert e.U * e.Sigma * e.V.T == e.A  # no simplification needed
    text = e.text()
    for piece in ("λ⋅(λ - 25)⋅(λ - 9)", "σ₁ = √λ₁ = 5", "(1, -1, 4)ᵀ", "v₃", "exactly"):
        assert piece in text, piece


@pytest.mark.parametrize(
    "A",
    [
        "3 1 1; -1 3 1",  # σ = 2√3, √10
        "2 1 0; 1 3 1; 0 1 4",  # 3 ± √3 and 3
        "1 2 3; 2 4 6",  # rank 1, two completions of V, one of U
        "3 4; -4 3",  # σ = 5, 5: a repeated eigenvalue
        "1 1 1 1; 1 1 1 1",  # rank 1, 2×4
        "1 0; 0 1; 1 1; 0 0",  # tall 4×2
        "0 0; 0 0",  # zero matrix
        "7",  # 1×1
        "1/2 0.25; 0.25 0.5",  # decimals and fractions, made exact: σ = 3/4, 1/4
    ],
)
def test_exact_svd_holds_and_matches_torch(A: str) -> None:
    e = explain(A)
    assert e.exact
    _check_exact_svd(e)
    dense = torch.tensor([[float(x) for x in row] for row in e.A.tolist()], dtype=torch.float64)
    U, S, Vh = e.to_torch()
    torch.testing.assert_close(S, torch.linalg.svdvals(dense))
    torch.testing.assert_close(U @ torch.tensor(np.array(e.Sigma, dtype=float)) @ Vh, dense)


def test_repeated_singular_value_is_orthonormalised() -> None:
    e = explain("3 4; -4 3")
    assert e.S == (5, 5)
    assert "multiplicity 2" in e.text()


def test_irreducible_cubic_falls_back_to_decimals() -> None:
    # det(λI − AᵀA) = λ(λ³ − 187λ² + 166λ − 18): three real roots of an irreducible cubic
    # need complex radicals, so the vectors are computed in 50-digit arithmetic.
    A = "1 2 3 4; 2 3 4 5; 3 4 5 7; 1 1 1 1"
    e = explain(A, digits=8)
    assert not e.exact and e.rank == 3
    dense = torch.tensor([[float(x) for x in r] for r in parse_matrix(A)], dtype=torch.float64)
    U, S, Vh = e.to_torch()
    torch.testing.assert_close(S, torch.linalg.svdvals(dense), atol=1e-12, rtol=0)
    torch.testing.assert_close(U.T @ U, torch.eye(4, dtype=torch.float64), atol=1e-14, rtol=0)
    torch.testing.assert_close(
        U @ torch.tensor(np.array(e.Sigma, dtype=float)) @ Vh, dense, atol=1e-12, rtol=0
    )
    assert float(max(abs(x) for x in e.U * e.Sigma * e.V.T - e.A)) < 1e-40
    text = e.text()
    assert "decimals to 8 digits" in text and "13.642161" in text
    assert "λ₁ ≈ 186.10857" in text


def test_nested_radicals_fall_back_to_decimals() -> None:
    # λ = (3 ± √5)/2 are exact, but v₁ ∝ (√5 − 1, 2) has norm √(10 − 2√5): the vectors are
    # shown as decimals, the roots stay exact.
    e = explain("1 1; 0 1")
    assert not e.exact
    text = e.text()
    assert "nested radicals" in text and "√5" in text and "v₁ ≈ [0.525731  0.850651]ᵀ" in text
    assert float(e.S[0]) == pytest.approx((1 + 5**0.5) / 2, rel=1e-15)


def test_inputs_are_made_exact() -> None:
    ref = explain(SEED001).A
    for A in (
        torch.tensor([[3, 2, 2], [2, 3, -2]]),
        torch.tensor([[3.0, 2.0, 2.0], [2.0, 3.0, -2.0]], dtype=torch.float32),
        np.array([[3, 2, 2], [2, 3, -2]], dtype=np.int16),
        [[3, 2, 2], [2, 3, -2]],
        [[Fraction(3), 2.0, "2"], [2, 3, -2]],
        sympy.Matrix([[3, 2, 2], [2, 3, -2]]),
        "[[3, 2, 2], [2, 3, -2]]",
        "[3 2 2\n 2 3 -2]",
    ):
        assert explain(A).A == ref
    # float32 0.1 is 0.1, not 0.100000001490116…
    assert explain(torch.tensor([[0.1]], dtype=torch.float32)).A[0, 0] == sympy.Rational(1, 10)
    assert explain([[0.1, 1e-3]]).A == sympy.Matrix(
        [[sympy.Rational(1, 10), sympy.Rational(1, 1000)]]
    )


def test_renderings() -> None:
    e = explain("1 2 3; 2 4 6")
    md, tex, text = e.markdown(), e.latex(), str(e)
    assert text == e.text()
    assert md.startswith("## SVD of a $2\\times 3$ matrix") and "$$" in md
    assert "### Step 7. Result: $A = U\\Sigma V^{T}$" in md
    assert tex.count("\\[") == tex.count("\\]") > 5
    assert tex.count("{") == tex.count("}")
    assert "\\sigma_{1} = \\sqrt{\\lambda_{1}} = \\sqrt{70}" in tex
    # plain text has no LaTeX, and every step is there
    assert "\\" not in text
    assert [f"Step {k}." in text for k in range(1, 8)] == [True] * 7
    dec = explain("1 2 3 4; 2 3 4 5; 3 4 5 7; 1 1 1 1")
    assert "\\approx" in dec.latex() and "≈" in dec.text()


@pytest.mark.parametrize(
    ("A", "exc", "match"),
    [
        ("3 2 3; 8 8 2; 8 7 4; 1 8 7; 6 4 7", ValueError, r"up to 4×4 \(at least 1×1\), got 5×3"),
        (torch.zeros(0, 2), ValueError, "got 0×2"),
        ("1 2; 3 x", ValueError, r"'x' \(row 2, column 2\) is not a number"),
        ("1 2; 3", ValueError, "row 2 has 1 entries but row 1 has 2"),
        ("1/0 2", ValueError, r"'1/0' \(row 1, column 1\) divides by zero"),
        ("", ValueError, "no entries"),
        ("1 2;; 3 4", ValueError, "row 2 is empty"),
        ("[[1, 2], [3]]", ValueError, "row 2 has 1 entries"),
        ("[[1, 2], [3, 4]", ValueError, "not a nested list"),
        (torch.eye(2, dtype=torch.complex64), TypeError, "real matrix"),
        ([[float("nan"), 1.0]], ValueError, "finite entries, got nan at row 1, column 1"),
        ([[True, False]], TypeError, "bool"),
        (sympy.Matrix([[sympy.sqrt(2)]]), TypeError, "rational or decimal entries, got sqrt"),
        (np.ones((2, 2, 2)), ValueError, "2-D matrix"),
        ([[1, 2], [3]], ValueError, "ragged"),
        (42, TypeError, "got int"),
    ],
)
def test_bad_input(A: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        explain(A)


def test_bad_digits() -> None:
    with pytest.raises(ValueError, match="digits must be an int in"):
        explain("1", digits=0)
