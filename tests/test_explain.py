"""explain: the SVD by hand, exact or in certified decimals; rendering; bounded, checked input."""

from __future__ import annotations

import re
import time
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchsvd.explainer import Explanation, explain, parse_matrix
from torchsvd.explainer.narration import math_tex, math_text
from torchsvd.explainer.quadratic import Quadratic

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
    # Exactly the matrices found by hand (signs included: v from AᵀA, first entry positive,
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
    assert "casus irreducibilis" in text and "VᵀV = I exactly" not in text


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


# --------------------------------------------------------------------------- exactness


def _reference_svdvals(rows: list[list[Fraction]], dps: int = 400) -> list[mpmath.mpf]:
    """Singular values by mpmath's SVD at ``dps`` digits: an independent reference."""
    with mpmath.workdps(dps):
        M = mpmath.matrix([[mpmath.mpf(x.numerator) / x.denominator for x in r] for r in rows])
        return sorted(mpmath.svd_r(M, compute_uv=False), reverse=True)


def _assert_svdvals_match(e: Explanation, rows: list[list[Fraction]]) -> None:
    ref = _reference_svdvals(rows)
    assert len(e.S) == min(len(rows), len(rows[0]))
    for s, r in zip(e.S, ref, strict=False):
        with mpmath.workdps(400):
            if r == 0 or s == 0:
                assert s == 0 and abs(r) < mpmath.mpf(10) ** -300 * ref[0]
            else:
                assert abs(mpmath.mpf(sympy.Float(s, 100)) / r - 1) < mpmath.mpf(10) ** -(
                    e.digits + 10
                )


@pytest.mark.parametrize("big", ["1e52", "1e60", "1e77", "1e99", "1e100"])
def test_huge_2x2_has_the_right_small_singular_value(big: str) -> None:
    # σ₁σ₂ = |det A| = big − 1 and σ₁ ≈ big: σ₂ ≈ 1. Fifty-digit eigenvalues of AᵀA (whose
    # entries are ~big²) gave σ₂ = 1.414 and "UΣVᵀ = A up to 0".
    A = f"{big} 1; 1 1"
    e = explain(A)
    _assert_svdvals_match(e, parse_matrix(A))
    assert float(e.S[1]) == pytest.approx(1.0, rel=1e-12)
    text = e.text()
    assert "σ₂ = √λ₂ ≈ 1.00000" in text
    assert "up to 0 " not in text and "up to 0." not in text
    errors = e.derivation.check.errors
    assert errors is not None and all(x > 0 for x in errors)  # exact residuals of decimals


@pytest.mark.parametrize(
    "A",
    [
        "100000000 1 0; 1 1 1; 0 1 1",  # was a 59-line mpmath traceback (nroots)
        "1e30 1 0; 1 1 1; 0 1 1",  # was "Invalid NaN comparison"
        "1e30 1 0 0; 1 1 1 0; 0 1 1 1; 0 0 1 1e-30",
        "1e100 1 0 0; 1 1 1 0; 0 1 1 1; 0 0 1 1",
        "1/3 1/7 1/11 1/13; 1/17 1/19 1/23 1/29; 1/31 1/37 1/41 1/43; 1/47 1/53 1/59 1/61",
        "1 0; 0 1.000000000000000000000000000000000000001",  # a near tie
        "12345678901234567890 98765432109876543210; 11111111111111111111 22222222222222222222",
    ],
)
def test_hard_matrices_are_right_and_fast(A: str) -> None:
    start = time.perf_counter()
    e = explain(A)
    e.text(), e.markdown(), e.latex()
    assert time.perf_counter() - start < 5
    _assert_svdvals_match(e, parse_matrix(A))
    U, S, Vh = e.to_torch()
    dense = torch.tensor([[float(x) for x in r] for r in parse_matrix(A)], dtype=torch.float64)
    torch.testing.assert_close(U.T @ U, torch.eye(U.shape[0], dtype=torch.float64))
    torch.testing.assert_close(Vh @ Vh.T, torch.eye(Vh.shape[0], dtype=torch.float64))
    Sigma = torch.zeros_like(dense)
    Sigma[range(len(S)), range(len(S))] = S
    torch.testing.assert_close(U @ Sigma @ Vh, dense, rtol=1e-12, atol=1e-12 * float(S[0]))
    _assert_vectors_match(e, parse_matrix(A))


def _assert_vectors_match(e: Explanation, rows: list[list[Fraction]]) -> None:
    """Projectors on the singular vectors of separated σ against mpmath's 400-digit SVD."""
    with mpmath.workdps(400):
        M = mpmath.matrix([[mpmath.mpf(x.numerator) / x.denominator for x in r] for r in rows])
        U, S, V = mpmath.svd_r(M)
        k = len(S)
        tol = mpmath.mpf(10) ** -(e.digits + 10)
        for i in range(k):
            if any(abs(S[i] - S[j]) < S[0] * mpmath.mpf(10) ** -100 for j in range(k) if j != i):
                continue  # a tie: the vectors are not unique
            for ours, ref in ((e.U[:, i], U[:, i]), (e.V[:, i], V[i, :].T)):
                x = [mpmath.mpf(sympy.Float(a, 200)) for a in ours]
                # |⟨x, ref⟩| = 1 for unit vectors spanning the same line
                assert abs(abs(mpmath.fsum(a * b for a, b in zip(x, ref, strict=True))) - 1) < tol


@pytest.mark.parametrize(
    ("A", "match"),
    [
        ("1e200 1; 1 1", r"at most 10\^100, got 201 and 1 digits at '1e200'"),
        ("1e999999999 0; 0 1", "has an exponent of 999999999"),
        ("1e-999999999 0; 0 1", "has an exponent of -999999999"),
        ("1" * 250, "is over 200 characters"),
        ("1e100 0; 0 1e-100", "over their common denominator are at most 10\\^100, got 201"),
        ([[1e-300, 1.0]], "got 1 and 301 digits at row 1, column 1"),
    ],
)
def test_too_large_entries_fail_fast_and_clearly(A: object, match: str) -> None:
    # "1e200 1; 1 1" was a 7,000-character sympy TypeError after 10 s; 1e999999999 hung.
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        explain(A)
    assert time.perf_counter() - start < 5


def test_precision_limit_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchsvd.explainer import fields

    monkeypatch.setattr(fields, "MAX_DPS", 100)  # 1e52 needs about 140 digits
    with pytest.raises(ValueError, match="needs more than 100 digits for this matrix"):
        explain("1e52 1; 1 1")


def test_exact_only_when_proven() -> None:
    e = explain("1e20 0 0; 0 1e20 0; 0 0 1")  # big, but rational singular values
    assert e.exact and e.S == (10**20, 10**20, 1)
    assert e.derivation.check.errors is None
    assert (
        "exactly: every entry of UΣVᵀ − A, UᵀU − I and VᵀV − I, rationalised and expanded, is 0"
        in " ".join(e.text().split())
    )
    dec = explain("1 1; 0 1")
    assert "VᵀV = I exactly" not in dec.text() and dec.derivation.check.errors is not None


def test_exact_results_are_exact_identities() -> None:
    # UΣVᵀ = A, UᵀU = I, VᵀV = I as sympy identities (no floats anywhere).
    for A in ("2 1 0; 1 3 1; 0 1 4", "1 0; 0 1; 1 1; 0 0", "1e20 1; 0 0"):
        e = explain(A)
        assert e.exact
        assert not any(x.has(sympy.Float) for x in (e.U, e.V, e.Sigma))
        _check_exact_svd(e)


def test_decimal_derivation_is_certified() -> None:
    # Each λᵢ lies in its rational interval, which is narrow; exact roots from sympy.
    A = "1 2 3 4; 2 3 4 5; 3 4 5 7; 1 1 1 1"
    e = explain(A, digits=8)
    d = e.derivation
    lam = sympy.Symbol("lambda")
    exact_roots = sorted(sympy.Poly(d.charpolys[0][0], lam).real_roots(), reverse=True)
    nonzero = [x for x in exact_roots if x != 0]
    assert len(d.roots) == len(nonzero) == 3
    for root, x in zip(d.roots, nonzero, strict=True):
        lo, hi = root.interval
        assert (
            sympy.Rational(lo.numerator, lo.denominator)
            < x
            < sympy.Rational(hi.numerator, hi.denominator)
        )
        assert (hi - lo) / lo < Fraction(1, 10 ** (8 + 17))
    assert "narrower than 10⁻²⁵λᵢ" in e.text()
    # The completion of V (rank 3 of 4) is exact even here: a rational null space.
    (ext,) = d.completions[0].extensions
    assert not ext.q.has(sympy.Float)
    assert sympy.simplify((d.A * ext.q).norm()) == 0 and sympy.simplify(ext.q.norm()) == 1


def test_decimal_digits_are_right() -> None:
    # The decimals shown agree with an independent 400-digit SVD to every digit but rounding.
    A = "1 1; 0 1"
    for digits in (3, 15, 40):
        e = explain(A, digits=digits)
        ref = _reference_svdvals(parse_matrix(A))
        shown = re.findall(r"σ₁ = √λ₁ ≈ (\S+)", e.text())[0]
        with mpmath.workdps(60):
            assert abs(mpmath.mpf(shown) - ref[0]) <= mpmath.mpf(10) ** (1 - digits)


def test_reasons_are_rendered_in_each_format() -> None:
    e = explain("1 1; 0 1")
    assert "because √(10 - 2√5) cannot be written without nested radicals" in e.text()
    assert r"because $\sqrt{10 - 2 \sqrt{5}}$ cannot be written" in e.latex()
    big = explain("1e52 1; 1 1")
    assert "a square root it needs cannot be written without nested radicals" in big.text()


def test_no_unicode_math_in_latex_and_no_private_references() -> None:
    for A in ("3 2 2; 2 3 -2", "1 1; 0 1", "1 2 3 4; 2 3 4 5; 3 4 5 7; 1 1 1 1", "1 0; 0 0; 1 1"):
        e = explain(A)
        for out in (e.latex(), e.markdown()):
            assert out.count("{") == out.count("}")
            for math in re.findall(r"\$\$?([^$]+)\$", out):
                assert not re.search("[σλΣᵀ√−₀-₉ᵢ⁰-⁹]", math), math
        for out in (e.text(), e.latex(), e.markdown()):
            assert "seed" not in out.lower()
        assert "\\" not in e.text()


def test_math_notation() -> None:
    assert math_text("det(λI − A^TA)") == "det(λI − AᵀA)"
    assert math_text("√{10}") == "√10" and math_text("√{a + b}") == "√(a + b)"
    assert math_tex("UΣV^T") == r"U\Sigma V^{T}"
    assert math_tex("√{λ_{i}}") == r"\sqrt{\lambda_{i}}"


def test_quadratic_numbers_are_exact() -> None:
    r5 = Quadratic(Fraction(0), Fraction(1), 5)
    x = Quadratic(Fraction(3, 2), Fraction(1, 2), 5)  # (3 + √5)/2
    assert not (x * (Fraction(3) - x) - 1)  # a root of λ² − 3λ + 1
    assert (r5 - Fraction(9, 4)).sign() == -1 and (r5 - Fraction(11, 5)).sign() == 1
    assert ((Fraction(1) + r5) / (Fraction(1) - r5) - (-Fraction(3, 2) - r5 / 2)).sign() == 0
    # numbers of different fields compared exactly: √2 + √3 < √10
    a = Quadratic(Fraction(0), Fraction(1), 2) + 0
    assert Quadratic(Fraction(1), Fraction(1), 3) < Quadratic(Fraction(0), Fraction(1), 8)
    assert not Quadratic(Fraction(0), Fraction(1), 8) < Quadratic(Fraction(1), Fraction(1), 3)
    assert a.sign() == 1


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.integers(1, 4).flatmap(
        lambda m: st.integers(1, 4).flatmap(
            lambda n: st.lists(
                st.lists(st.integers(-6, 6), min_size=n, max_size=n), min_size=m, max_size=m
            )
        )
    )
)
def test_property_small_integer_matrices(rows: list[list[int]]) -> None:
    e = explain(rows)
    dense = torch.tensor(rows, dtype=torch.float64)
    torch.testing.assert_close(
        torch.tensor([float(s) for s in e.S], dtype=torch.float64), torch.linalg.svdvals(dense)
    )
    if e.exact:
        _check_exact_svd(e)
    else:
        errors = e.derivation.check.errors
        assert errors is not None and max(errors) < Fraction(1, 10**30)
