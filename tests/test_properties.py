"""The CI slice of the property-based reliability suite (``docs/reliability.md``).

Hypothesis draws `Case`s (shapes 1×1 to 12×9, batches, four dtypes, spectra with ties, near
ties, zeros, resolved small values and dynamic range, scales 1e±300) and ``_properties.evaluate``
classifies each against float64 central differences of a ``torch.linalg.svd`` reference, the
naive autograd reference at separated spectra, and the warning promises. ``HYPOTHESIS_PROFILE``
selects ``ci`` (the default: 25 derandomized examples per test) or ``fuzz``; ``make fuzz`` runs
the same cases at scale (``tests/fuzz_run.py``).

The regions where earlier versions returned silent wrong answers (resolved small σ, null-space
bases, second derivatives at ties and zeros, f(0) = ±inf, non-elementwise f, svds at k = min(m, n),
at extreme scales and on empty batches, low_rank above the numerical rank, resolved near ties of
small σ, second derivatives next to the zero threshold) have property tests of their own and one
minimal regression case each.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings

import _properties as P
import torchsvd
from _helpers import F64
from _properties import Case

SAFE_MODS = ("none", "ties", "near", "identity")  # no zero and no small singular value


def _assert_pass(case: Case) -> None:
    out = P.evaluate(case)
    assert out.cls == "pass", (
        f"{out.cls}: {out.detail}\n  replay: python tests/fuzz_run.py --replay '{case.to_json()}'"
    )


# ------------------------------------------------------------------ properties that hold today


@P.profile()
@given(P.cases(funcs=("polar",), empty=False))
def test_polar(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("svt", "clip_singular_values"), empty=False))
def test_svt_and_clip(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("svdvals",)))
def test_svdvals(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("svd_apply",), fnames=P.ODD + P.SQUARE + P.NONZERO_AT_0))
def test_svd_apply_finite_f(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("svd",), mods=SAFE_MODS))
def test_svd_full_rank(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("svdvals_hvp", "svd_apply_hvp"), mods=("none",), empty=False))
def test_second_derivatives_separated(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("low_rank",), mods=SAFE_MODS))
def test_low_rank_full_rank(case: Case) -> None:
    _assert_pass(case)


# ------------------------------------ regions where earlier versions returned wrong answers


@settings(P.profile(), max_examples=P.profile().max_examples * 4)
@given(P.cases(funcs=("svd",), mods=("zeros", "small", "numzero", "zero_matrix")))
def test_svd_singular_and_small(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("svdvals_hvp", "svd_apply_hvp"), empty=False))
def test_second_derivatives(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("svd_apply",), fnames=P.INF_AT_0, mods=("zeros", "zero_matrix")))
def test_svd_apply_infinite_at_zero(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("svd_apply",), fnames=P.NON_ELEMENTWISE, empty=False))
def test_svd_apply_rejects_non_elementwise(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("svds",)))
def test_svds(case: Case) -> None:
    _assert_pass(case)


@P.profile()
@given(P.cases(funcs=("low_rank",)))
def test_low_rank(case: Case) -> None:
    _assert_pass(case)


# ------------------------------------------------ minimal examples, one per earlier bug class


def _case(**kw: Any) -> Case:
    base: dict[str, Any] = {
        "func": "svd",
        "loss": "polar",
        "m": 3,
        "n": 3,
        "batch": (),
        "dtype": "float64",
        "rel": (1.0, 0.5, 0.25),
        "scale_exp": 0,
        "spread": 0,
        "seed": 0,
    }
    base.update(kw)
    return Case(**base)


GUARDS = {
    "polar-at-orthogonal": _case(rel=(1.0, 1.0, 1.0)),
    "polar-resolved-small-square": _case(rel=(1.0, 0.5, 1e-11)),
    "projector-tie-inside": _case(loss="projU", r=2, rel=(1.0, 1.0, 0.5)),
    "projector-tie-split-warns": _case(loss="projU", r=1, rel=(1.0, 1.0, 0.5)),
    "complement-projector-full": _case(loss="projU_full", m=5, n=3, r=2),
    "complex-phase-warns": _case(loss="raw", dtype="complex128"),
    "svd_apply-hvp-separated": _case(func="svd_apply_hvp", loss="lin", fname="cube"),
    "svds-k-above-rank-warns": _case(func="svds", loss="polar", m=5, n=4, r=3, rel=(1, 0.5, 0, 0)),
    "svd-empty-batch": _case(batch=(0,)),
    "svd_apply-empty-batch": _case(func="svd_apply", loss="lin", fname="tanh", batch=(0,)),
}

BUGS = {
    "resolved-small-range-projector": _case(m=5, loss="projU", r=3, rel=(1.0, 0.5, 1e-11)),
    "resolved-small-polar-tall": _case(m=4, rel=(1.0, 0.7, 2.4e-13)),
    "resolved-small-svd_apply-hvp": _case(
        func="svd_apply_hvp", loss="lin", fname="cube", m=2, rel=(1.0, 1e-12)
    ),
    "null-space-polar-1x1": _case(m=1, n=1, rel=(0.0,)),
    "null-space-polar": _case(rel=(1.0, 0.5, 0.0)),
    "null-space-range-projector": _case(m=5, loss="projU", r=3, rel=(1, 0.5, 0)),
    "null-space-overlap": _case(m=5, loss="overlap", r=3, rel=(1.0, 0.5, 0.0)),
    "svdvals-hvp-identity": _case(func="svdvals_hvp", loss="fS", rel=(1.0, 1.0, 1.0)),
    "svdvals-hvp-zero-wide": _case(func="svdvals_hvp", loss="fS", m=1, n=2, rel=(0.0,)),
    "svd_apply-hvp-identity": _case(
        func="svd_apply_hvp", loss="lin", fname="cube", rel=(1.0, 1.0, 1.0)
    ),
    "svd_apply-hvp-singular": _case(
        func="svd_apply_hvp", loss="lin", fname="atan", m=2, n=2, rel=(1.0, 0.0)
    ),
    "svd_apply-log-singular": _case(func="svd_apply", loss="lin", fname="log", rel=(1.0, 0.5, 0.0)),
    "svd_apply-inv-singular": _case(func="svd_apply", loss="lin", fname="inv", rel=(1.0, 0.5, 0.0)),
    "non-elementwise-first": _case(func="svd_apply", fname="nonelem_first"),
    "non-elementwise-max-large-scale": _case(func="svd_apply", fname="nonelem_max", scale_exp=10),
    "non-elementwise-cumsum-k2": _case(
        func="svd_apply", fname="nonelem_cumsum", m=2, n=2, rel=(1.0, 0.5)
    ),
    "non-elementwise-flip-odd-k": _case(func="svd_apply", fname="nonelem_flip"),
    "svds-k-equals-min": _case(func="svds", loss="projU", m=4, r=3),
    "svds-k-equals-min-square": _case(
        func="svds", loss="overlap", m=2, n=2, r=2, rel=(1.0, 0.001), seed=230
    ),
    "svds-scale-1e-170": _case(
        func="svds",
        loss="projU",
        m=5,
        n=4,
        r=2,
        rel=(1, 0.5, 0.25, 0.125),
        scale_exp=-170,
    ),
    "svds-scale-1e160": _case(
        func="svds",
        loss="projU",
        m=5,
        n=4,
        r=2,
        rel=(1, 0.5, 0.25, 0.125),
        scale_exp=160,
    ),
    "svds-empty-batch": _case(func="svds", loss="fS", r=1, batch=(0,)),
    "low_rank-full-rank-deficient-tall": _case(
        func="low_rank", loss="lin", m=3, n=2, r=2, rel=(1.0, 0.0)
    ),
    "low_rank-zero-tie": _case(func="low_rank", loss="lin", m=4, n=4, r=3, rel=(1, 1, 0, 0)),
    "low_rank-resolved-near-tie-of-small-values": _case(
        func="low_rank", loss="lin", r=2, rel=(1.0, 3.8e-10, 1.9e-10)
    ),
    "projector-resolved-near-tie": _case(loss="projU", r=1, rel=(1.0, 1 - 1e-10, 0.5)),
    "svd_apply-hvp-tiny-resolved": _case(
        func="svd_apply_hvp", loss="lin", fname="gauss_odd", rel=(1.0, 1e-14, 5e-15)
    ),
    "svd_apply-hvp-tiny-resolved-complex": _case(
        func="svd_apply_hvp", loss="lin", fname="cube", dtype="complex128", rel=(1.0, 1e-7, 1e-14)
    ),
    "svd_apply-hvp-tiny-resolved-tall": _case(
        func="svd_apply_hvp", loss="lin", fname="tanh", m=5, rel=(1.0, 1e-12, 3e-13)
    ),
    "range-projector-complex-resolved-small": _case(
        loss="projU", m=3, n=5, r=3, dtype="complex128", rel=(1.0, 1e-6, 1e-12), seed=3
    ),
    "svds-range-projector-complex-resolved-small": _case(
        func="svds", loss="projU", m=3, n=5, r=3, dtype="complex128", rel=(1.0, 1e-6, 1e-12), seed=3
    ),
    "non-elementwise-first-k4": _case(
        func="svd_apply", fname="nonelem_first", m=4, n=4, rel=(1.0, 0.5, 0.25, 0.125)
    ),
}


@pytest.mark.parametrize("case", list(GUARDS.values()), ids=list(GUARDS))
def test_guard(case: Case) -> None:
    _assert_pass(case)


@pytest.mark.parametrize("case", list(BUGS.values()), ids=list(BUGS))
def test_regression(case: Case) -> None:
    _assert_pass(case)


def test_svdvals_hessian_of_sum_of_squares_at_identity() -> None:
    # Σσ² = ‖A‖_F², so its Hessian is 2·I everywhere, at I(3) too, where all σ are tied.
    A = torch.eye(3, dtype=F64, requires_grad=True)
    E = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad((torchsvd.svdvals(A) ** 2).sum(), A, create_graph=True)
    (hv,) = torch.autograd.grad((g * E).sum(), A)
    torch.testing.assert_close(hv, 2 * E, atol=1e-10, rtol=0)


# ---------------------------------------------------------------- the oracles can fail


def test_oracle_flags_the_naive_composition(monkeypatch: pytest.MonkeyPatch) -> None:
    # PyTorch's backward at an orthogonal matrix: 1/(σ_j² − σ_i²) of rounding-level gaps.
    monkeypatch.setattr(torchsvd, "svd", torch.linalg.svd)
    assert P.evaluate(GUARDS["polar-at-orthogonal"]).cls in ("nan_inf", "disagree")


def test_oracle_flags_a_wrong_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torchsvd.polar
    monkeypatch.setattr(torchsvd, "polar", lambda A: real(A) + 1e-3 * (A - A.detach()))
    out = P.evaluate(_case(func="polar", loss="lin"))
    assert out.cls == "disagree", out


class _QuietSVD(torch.autograd.Function):
    """torchsvd.svd whose backward runs with its warnings silenced."""

    @staticmethod
    def forward(ctx: Any, A: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            X = A.detach().requires_grad_()
            out = _REAL_SVD(X)
        ctx.X, ctx.out = X, out
        return tuple(t.detach() for t in out)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (g,) = torch.autograd.grad(ctx.out, ctx.X, grads)
        return g


_REAL_SVD = torchsvd.svd


def test_oracle_flags_a_missing_and_a_spurious_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchsvd, "svd", lambda A, **kw: _QuietSVD.apply(A))
    assert P.evaluate(GUARDS["projector-tie-split-warns"]).cls == "missing_warning"
    monkeypatch.undo()
    real = torchsvd.svd

    def noisy(*args: Any, **kw: Any) -> Any:
        warnings.warn("test", torchsvd.DegenerateGradientWarning, stacklevel=2)
        return real(*args, **kw)

    monkeypatch.setattr(torchsvd, "svd", noisy)
    assert P.evaluate(GUARDS["projector-tie-inside"]).cls == "spurious_warning"


def test_oracle_flags_an_accepted_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torchsvd.svd_apply

    def elementwise_only(A: torch.Tensor, f: Any, df: Any = None) -> torch.Tensor:
        return real(A, lambda s: s)  # ignores f: a non-elementwise f is never seen

    monkeypatch.setattr(torchsvd, "svd_apply", elementwise_only)
    case = _case(func="svd_apply", loss="lin", fname="nonelem_mean", batch=(2,))
    assert P.evaluate(case).cls == "bad_input_accepted"
