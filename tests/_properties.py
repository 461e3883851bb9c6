"""Cases, oracles and the classifier of the property-based reliability suite.

Shared by ``tests/test_properties.py`` (a small derandomized slice in ``make test``) and
``tests/fuzz_run.py`` (``make fuzz``). ``docs/reliability.md`` states what is promised and how
each promise is checked; in short:

- a `Case` is a small, fully explicit description (function, loss, shape, dtype, relative
  spectrum, scale, seed): ``Case(**json)`` rebuilds it, so a printed case is a reproducer;
- the matrix is ``matrix_with_singular_values`` of the spectrum; every loss is gauge invariant or
  is expected to warn, and is normalized by the scale ``c`` of its matrix so that it and its
  derivatives are O(1/gap) whatever ``c`` is;
- the oracle is a reference forward (``torch.linalg.svd`` in float64, never torchsvd) and
  central differences of it along random directions, Richardson-extrapolated, with a step of 1%
  of the gap that the loss's smoothness depends on (second derivatives: mixed differences);
- `expectation` decides from the singular values of the stored matrix whether the loss has a
  derivative (compare), depends on a free choice (a `DegenerateGradientWarning` is required), is
  in a band around a threshold (either is accepted), or is bad input (an error is required);
- `evaluate` classifies the case into one of `CLASSES`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

import torchsvd
from _helpers import inner, weights
from torchsvd.testing import matrix_with_singular_values

settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a failure is reported, not shrunk
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    max_examples=500,
    derandomize=False,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def profile() -> settings:
    """The settings selected by ``HYPOTHESIS_PROFILE`` (``ci`` unless set to ``fuzz``).

    Applied per test rather than loaded globally, so the other test files keep their own.
    """
    return settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


CLASSES = (
    "pass",
    "nan_inf",
    "disagree",
    "missing_warning",
    "spurious_warning",
    "exception",
    "bad_input_accepted",
)

DTYPES = {
    "float64": torch.float64,
    "complex128": torch.complex128,
    "float32": torch.float32,
    "complex64": torch.complex64,
}

# Functions of σ for svd_apply. Each is scale aware (c is the matrix's scale).
ODD = ("tanh", "sinh", "cube", "gauss_odd", "atan", "identity")  # odd, analytic: smooth everywhere
SQUARE = ("square",)  # f(0) = 0, C¹ at 0: a derivative at zeros, no second one
NONZERO_AT_0 = ("gauss", "recip")  # analytic, f(0) != 0: undefined at a singular A
INF_AT_0 = ("log", "inv")  # f(0) = ±inf
NON_ELEMENTWISE = ("nonelem_first", "nonelem_max", "nonelem_cumsum", "nonelem_mean", "nonelem_flip")
FNAMES = ODD + SQUARE + NONZERO_AT_0 + INF_AT_0 + NON_ELEMENTWISE

FUNCS = (
    "svd",
    "svdvals",
    "svd_apply",
    "polar",
    "svt",
    "clip_singular_values",
    "low_rank",
    "svds",
    "svdvals_hvp",
    "svd_apply_hvp",
)
SVD_LOSSES = ("fS", "polar", "projU", "projV", "projU_full", "overlap", "raw")
SVDS_LOSSES = ("fS", "polar", "projU", "overlap")


@dataclass(frozen=True)
class Case:
    """One fuzz case; ``rel`` is the singular values relative to σ_max, descending."""

    func: str
    loss: str
    m: int
    n: int
    batch: tuple[int, ...]
    dtype: str
    rel: tuple[float, ...]
    scale_exp: int
    spread: int
    seed: int
    r: int = 1
    fname: str = ""
    kinks: tuple[float, ...] = ()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @staticmethod
    def from_json(text: str) -> Case:
        d = json.loads(text)
        d["batch"], d["rel"], d["kinks"] = tuple(d["batch"]), tuple(d["rel"]), tuple(d["kinks"])
        return Case(**d)


@dataclass(frozen=True)
class Outcome:
    cls: str
    detail: str = ""


# ----------------------------------------------------------------------------------- strategies

MODS = ("none", "ties", "near", "zeros", "small", "numzero", "dynamic", "identity", "zero_matrix")


@st.composite
def relative_spectra(draw: Any, k: int, mods: tuple[str, ...] = MODS) -> tuple[float, ...]:
    """k descending values in [0, 1] with max 1 (or all 0): ties of every multiplicity, near ties
    (relative gap 1e-15…1e-3), exact and numerical zeros, resolved small values, dynamic range."""
    ratios = draw(st.lists(st.floats(0.3, 0.9), min_size=k, max_size=k))
    s = [1.0]
    for q in ratios[: k - 1]:
        s.append(s[-1] * q)
    for mod in draw(st.lists(st.sampled_from(mods), min_size=1, max_size=2)):
        i = draw(st.integers(0, max(k - 1, 0)))
        if mod == "ties" and k > 1:
            mult = draw(st.integers(2, k))
            i = min(i, k - mult)
            s[i : i + mult] = [s[i]] * mult
        elif mod == "near" and k > 1:
            i = min(i, k - 2)
            e = draw(st.integers(3, 15))
            s[i + 1] = s[i] * (1 - 10.0**-e)
        elif mod == "zeros":
            s[i:] = [0.0] * (k - i)
        elif mod == "small" and k > 1:
            e = draw(st.integers(2, 13))
            i = max(i, 1)
            s[i:] = [10.0**-e * x for x in s[i:]]
        elif mod == "numzero" and k > 1:
            e = draw(st.integers(14, 300))
            i = max(i, 1)
            tie = draw(st.booleans())
            s[i:] = [10.0**-e * (1.0 if tie else 0.5**j) for j in range(k - i)]
        elif mod == "dynamic" and k > 1:
            d = draw(st.sampled_from([1, 3, 8, 12, 14, 30, 150]))
            s = [10.0 ** (-d * j / (k - 1)) for j in range(k)]
        elif mod == "identity":
            s = [1.0] * k
        elif mod == "zero_matrix":
            s = [0.0] * k
    s = sorted(s, reverse=True)
    top = s[0] if s else 0.0
    return tuple(x / top for x in s) if top > 0 else tuple(s)


def _exp_range(dtype: str, second_order: bool) -> tuple[int, int]:
    """Scales 10^e whose true derivatives are representable: a gradient w.r.t. A scales as
    1/(c·gap) (gaps down to 1e-14), a Hessian as 1/c²."""
    if dtype in ("float64", "complex128"):
        return (-150, 150) if second_order else (-280, 300)
    return (-15, 15) if second_order else (-30, 30)


def _scale_exps(dtype: str, second_order: bool = False) -> st.SearchStrategy[int]:
    lo, hi = _exp_range(dtype, second_order)
    return st.one_of(st.just(0), st.integers(-3, 3), st.integers(lo, hi))


@st.composite
def cases(
    draw: Any,
    funcs: tuple[str, ...] = FUNCS,
    dtypes: tuple[str, ...] = tuple(DTYPES),
    max_m: int = 12,
    max_n: int = 9,
    empty: bool = True,
    fnames: tuple[str, ...] = FNAMES,
    mods: tuple[str, ...] = MODS,
) -> Case:
    """A `Case`; hypothesis shrinks it towards small, float64, unit-scale, simple spectra."""
    func = draw(st.sampled_from(funcs))
    dtype = draw(st.sampled_from(dtypes))
    m = draw(st.integers(1, max_m))
    n = draw(st.integers(1, max_n))
    k = min(m, n)
    batches: list[tuple[int, ...]] = [(), (2,), (3,), (2, 2)] + ([(0,)] if empty else [])
    batch = draw(st.sampled_from(batches))
    rel = draw(relative_spectra(k, mods))
    scale_exp = draw(_scale_exps(dtype, func.endswith("_hvp")))
    # svd_apply's f is one scalar function for the whole batch, so its scale is one number.
    spread_ok = batch and batch[0] > 1 and func not in ("svd_apply", "svd_apply_hvp")
    spread = draw(st.sampled_from([0, 1, 4])) if spread_ok else 0
    seed = draw(st.integers(0, 2**16))
    loss, r, fname, kinks = "", 1, "", ()
    if func == "svd":
        losses = SVD_LOSSES if DTYPES[dtype].is_complex else SVD_LOSSES[:-1]
        loss = draw(st.sampled_from(losses))
        r = draw(st.integers(1, k))
    elif func in ("svdvals", "svdvals_hvp"):
        loss = "fS"
    elif func == "svds":
        loss = draw(st.sampled_from(SVDS_LOSSES))
        r = draw(st.integers(1, k))
    elif func == "low_rank":
        loss = "lin"
        r = draw(st.integers(1, k))
    elif func in ("svd_apply", "polar", "svt", "clip_singular_values", "svd_apply_hvp"):
        loss = "lin"
        if func == "svd_apply":
            fname = draw(st.sampled_from(fnames))
            if fname in NON_ELEMENTWISE and k == 1:
                fname = "nonelem_mean"  # the others act elementwise on one singular value
        elif func == "svd_apply_hvp":
            fname = draw(st.sampled_from([x for x in fnames if x in ODD] or ODD))
        elif func == "svt":
            kinks = (draw(st.sampled_from([0.0, 0.05, 0.2, 0.5, 0.75, 1.5])),)
        elif func == "clip_singular_values":
            lo = draw(st.sampled_from([0.0, 0.1, 0.3, 0.6]))
            hi = draw(st.sampled_from([0.2, 0.45, 0.8, 2.0]))
            kinks = (min(lo, hi), max(lo, hi))
    exp = scale_exp
    if spread:
        lo, hi = _exp_range(dtype, func.endswith("_hvp"))
        exp = max(lo + spread * 6, min(hi - spread * 6, exp))
    return Case(func, loss, m, n, batch, dtype, rel, exp, spread, seed, r, fname, kinks)


# ------------------------------------------------------------------------------- matrix setup


@dataclass
class Setup:
    A: torch.Tensor  # the input, in the case's dtype
    A64: torch.Tensor  # the same matrix, exactly, in float64/complex128: the reference point
    c: torch.Tensor  # per-matrix scale (*batch, 1, 1), float64
    dirs: tuple[torch.Tensor, torch.Tensor]  # unit directions (in units of c), complex for complex
    W: torch.Tensor  # unit-norm cotangent-like weights of the output
    W2: torch.Tensor
    x: torch.Tensor  # unit vectors for the overlap loss
    y: torch.Tensor


def scales(case: Case) -> torch.Tensor:
    b = case.batch
    if not b:
        return torch.tensor([[10.0**case.scale_exp]], dtype=torch.float64)
    idx = torch.arange(math.prod(b), dtype=torch.float64).reshape(*b, 1, 1)
    return 10.0 ** (case.scale_exp + case.spread * (idx - idx.mean()).round())


def _unit(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm() if t.numel() else t


def setup(case: Case) -> Setup:
    dtype = DTYPES[case.dtype]
    wide = torch.complex128 if dtype.is_complex else torch.float64
    c = scales(case)
    s = torch.tensor(case.rel, dtype=torch.float64)
    base = matrix_with_singular_values(
        s, case.m, case.n, batch=case.batch, dtype=wide, seed=case.seed
    )
    A = (base * c.to(wide)).to(dtype)
    A64 = A.to(wide)
    shape = tuple(A.shape)
    dirs = (_unit(weights(shape, wide, case.seed + 1)), _unit(weights(shape, wide, case.seed + 2)))
    k = min(case.m, case.n)
    W = _unit(weights(shape, wide, case.seed + 3))
    W2 = _unit(weights(shape, wide, case.seed + 4))
    if case.func == "svd" and case.loss in ("projU", "projU_full"):
        W = _unit(weights((*case.batch, case.m, case.m), wide, case.seed + 3))
    elif case.loss == "projV":
        W = _unit(weights((*case.batch, case.n, case.n), wide, case.seed + 3))
    elif case.func == "svds" and case.loss == "projU":
        W = _unit(weights((*case.batch, case.m, case.m), wide, case.seed + 3))
    elif case.loss == "raw":
        W = _unit(weights((*case.batch, case.m, k), wide, case.seed + 3))
        W2 = _unit(weights((*case.batch, k, case.n), wide, case.seed + 4))
    x = _unit(weights((*case.batch, case.m), wide, case.seed + 5))
    y = _unit(weights((*case.batch, case.n), wide, case.seed + 6))
    return Setup(A, A64, c, dirs, W, W2, x, y)


# ----------------------------------------------------------------------------------- the losses


def f_of(name: str, c: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The scalar function ``name`` at scale c."""
    table: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "tanh": lambda s: c * torch.tanh(s / c),
        "sinh": lambda s: c * torch.sinh(s / c),
        "cube": lambda s: s * (s / c) ** 2,
        "gauss_odd": lambda s: s * torch.exp(-((s / c) ** 2)),
        "atan": lambda s: c * torch.atan(s / c),
        "identity": lambda s: s,
        "square": lambda s: s * (s / c),
        "gauss": lambda s: c * torch.exp(-((s / c) ** 2)),
        "recip": lambda s: c / (1 + s / c),
        "log": lambda s: c * torch.log(s / c),
        "inv": lambda s: c / (s / c),
        "nonelem_first": lambda s: s * (s[..., :1] / c),
        "nonelem_max": lambda s: c * (s / s.amax(-1, keepdim=True)),
        "nonelem_cumsum": lambda s: torch.cumsum(s, -1),
        "nonelem_mean": lambda s: s * (s.mean() / c),
        "nonelem_flip": lambda s: s.flip(-1),
    }
    return table[name]


def _phi(x: torch.Tensor) -> torch.Tensor:
    # Analytic in x², so Σφ(σ_i) is a smooth spectral function everywhere (Lewis & Sendov 2001).
    return torch.log1p(x * x) + 0.5 * x * x


def _usv_loss(case: Case, st_: Setup, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> Any:
    """A loss of (reduced or full) U, S, Vh, normalized by the scale; the same code serves the
    library's outputs and the reference's."""
    c = st_.c.to(S.dtype)
    k, r = S.shape[-1], case.r
    loss = case.loss
    if loss == "fS":
        return _phi(S / c[..., 0]).sum()
    if loss == "polar":
        return inner(st_.W.to(U.dtype), U[..., :k] @ Vh[..., :k, :])
    if loss == "projU":
        Ur = U[..., :r]
        return inner(st_.W.to(U.dtype), Ur @ Ur.mH)
    if loss == "projV":
        Vr = Vh[..., :r, :].mH
        return inner(st_.W.to(U.dtype), Vr @ Vr.mH)
    if loss == "projU_full":  # the complement U[:, r:] of a full U, or I − U_r U_rᴴ
        if U.shape[-1] == U.shape[-2]:
            Uc = U[..., r:]
            P = Uc @ Uc.mH
        else:
            Ur = U[..., :r]
            P = torch.eye(U.shape[-2], dtype=U.dtype) - Ur @ Ur.mH
        return inner(st_.W.to(U.dtype), P)
    if loss == "overlap":
        i = r - 1
        ux = (U[..., :, i].conj() * st_.x.to(U.dtype)).sum(-1)
        vy = (Vh[..., i, :] * st_.y.to(U.dtype)).sum(-1)
        return (ux.abs() ** 2 + vy.abs() ** 2).sum()
    if loss == "raw":
        return inner(st_.W.to(U.dtype), U[..., :k]) + inner(st_.W2.to(U.dtype), Vh[..., :k, :])
    raise ValueError(f"unknown loss {loss!r}")


def _zero_tol(case: Case, dtype: torch.dtype) -> float:
    return max(case.m, case.n) * torchsvd._validate.eps(dtype)


def library_loss(case: Case, st_: Setup, A: torch.Tensor) -> torch.Tensor:
    """The case's loss through torchsvd."""
    func = case.func
    c = st_.c
    if func == "svd":
        full = case.loss == "projU_full"
        U, S, Vh = torchsvd.svd(A, full_matrices=full)
        return _usv_loss(case, st_, U, S, Vh)
    if func in ("svdvals", "svdvals_hvp"):
        S = torchsvd.svdvals(A)
        return _phi(S / c[..., 0].to(S.dtype)).sum()
    if func == "svds":
        U, S, Vh = torchsvd.svds(A, case.r)
        return _usv_loss(case, st_, U, S, Vh)
    real = torchsvd._validate.real_dtype(A.dtype)
    cr = c[..., 0].to(real)
    if func in ("svd_apply", "svd_apply_hvp"):
        F = torchsvd.svd_apply(A, f_of(case.fname, 10.0**case.scale_exp))
    elif func == "polar":
        return inner(st_.W.to(A.dtype), torchsvd.polar(A))
    elif func == "svt":
        F = torchsvd.svt(A, case.kinks[0] * cr.reshape(case.batch))
    elif func == "clip_singular_values":
        lo, hi = case.kinks
        F = torchsvd.clip_singular_values(
            A, lo * cr.reshape(case.batch), hi * cr.reshape(case.batch)
        )
    elif func == "low_rank":
        F = torchsvd.low_rank(A, case.r)
    else:
        raise ValueError(f"unknown function {func!r}")
    return inner(st_.W.to(F.dtype), F / c.to(F.dtype))


def _ref_f(case: Case, S: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """f of the reference singular values (float64), as each function defines it."""
    if case.func in ("svd_apply", "svd_apply_hvp"):
        return f_of(case.fname, 10.0**case.scale_exp)(S)
    if case.func == "polar":
        return torch.ones_like(S) * c
    if case.func == "svt":
        return torch.clamp_min(S - case.kinks[0] * c, 0)
    if case.func == "clip_singular_values":
        return torch.clamp(S, case.kinks[0] * c, case.kinks[1] * c)
    if case.func == "low_rank":
        keep = torch.arange(S.shape[-1]) < case.r
        return S * keep
    raise ValueError(case.func)


def reference_loss(case: Case, st_: Setup, A: torch.Tensor) -> torch.Tensor:
    """The case's loss from ``torch.linalg.svd`` in float64/complex128 (``A`` in that dtype).

    Differentiable with PyTorch's own SVD backward: the naive reference at separated spectra.
    """
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    c = st_.c
    if case.func in ("svd", "svdvals", "svdvals_hvp"):
        return _usv_loss(case, st_, U, S, Vh)
    if case.func == "svds":
        r = case.r
        return _usv_loss(case, st_, U[..., :r], S[..., :r], Vh[..., :r, :])
    # Spectral functions: numerically zero singular values are dropped (f(0) != 0 is undefined
    # there; the documented result omits them).
    zero = (S <= _zero_tol(case, DTYPES[case.dtype]) * S[..., :1]).detach()
    fS = torch.where(zero, 0.0, _ref_f(case, torch.where(zero, 1.0, S), c[..., 0]))
    F = (U * fS.unsqueeze(-2).to(U.dtype)) @ Vh
    return inner(st_.W, F / c.to(F.dtype))


# --------------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Expect:
    """What the case must do: ``diff`` (compare with differences, no warning), ``nondiff``
    (warning required), ``either`` (a warning, or no warning and agreement), ``finite`` (only
    finiteness), ``finite_nowarn`` (finite and no warning), ``error`` (ValueError/TypeError),
    ``finite_or_error`` (either).
    ``g`` is the relative gap the loss's smoothness depends on; ``forward`` whether the forward
    value is defined (and checked)."""

    status: str
    g: float = 1.0
    forward: bool = True
    separated: bool = False  # every gap and every σ resolved: the naive reference applies
    naive_gap: float = 1.0  # the smallest relative gap, which PyTorch's backward divides by
    inner_gap: float = 1.0  # the smallest gap the SVD backward divides by (above √eps)


BAND = 30.0  # factor around each threshold in which either behaviour is accepted


def _thresholds(case: Case) -> tuple[float, float]:
    e = torchsvd._validate.eps(DTYPES[case.dtype])
    return e**0.5, max(case.m, case.n) * e  # tie (√eps, the svd backward's), zero (rank)


# A pair closer than the tie threshold is still differentiated where its gap is resolved: above
# RESOLVED times the zero threshold (the computed singular values of an exact tie differ by up
# to about the zero threshold). svds does not resolve near ties (its vectors are accurate to
# its tolerance only).
RESOLVED = 100.0


def _tie_level(case: Case) -> float:
    """The gap relative to σ_max at which the library stops differentiating a pair."""
    tt, zt = _thresholds(case)
    return tt if case.func == "svds" else RESOLVED * zt


def _zero_status(x: float, zt: float) -> str:
    # Rounding leaves a zero singular value at about eps·σ_max, below max(m, n)·eps/2 but
    # for the smallest shapes: the band below the threshold is narrow.
    if x <= zt / 2:
        return "tie"
    if x > zt * BAND:
        return "sep"
    return "band"


def _pair(a: float, b: float | None, tt: float, zt: float) -> tuple[str, float]:
    """Status of the pair σ_a ≥ σ_b (b None: an implicit zero of a rectangular side), with the
    tie level ``tt`` (`_tie_level`) and the zero threshold ``zt``."""
    if b is None:
        return _zero_status(a, zt), a
    gap = a - b
    if gap > tt * BAND:
        return "sep", gap
    za, zb = _zero_status(a, zt), _zero_status(b, zt)
    if gap <= tt / BAND and "band" not in (za, zb) and not (za == "sep" and zb == "tie"):
        return "tie", gap
    # Near the tie threshold, near the zero threshold, or a resolved small σ next to a zero
    # (a rank question or a tie?): either behaviour is accepted.
    return "band", gap


def _combine(items: list[tuple[str, float]]) -> Expect:
    if not items:
        return Expect("diff", 1.0)
    sts = [s for s, _ in items]
    # The step must resolve a band gap too, for when the library treats it as separated.
    g = min([1.0] + [x for s, x in items if s != "tie" and x > 0])
    if "tie" in sts:
        return Expect("nondiff", g, forward=False)
    if "band" in sts:
        return Expect("either", g)
    return Expect("diff", g)


def _neighbours(s: list[float], i: int, side: int, tt: float, zt: float) -> list[tuple[str, float]]:
    """Pairs around σ_i (0-based) on a side with ``side`` rows (implicit zeros beyond k)."""
    k = len(s)
    out = []
    if i > 0:
        out.append(_pair(s[i - 1], s[i], tt, zt))
    if i + 1 < k:
        out.append(_pair(s[i], s[i + 1], tt, zt))
    elif side > k:
        out.append(_pair(s[i], None, tt, zt))
    return out


def _boundary(s: list[float], r: int, side: int, tt: float, zt: float) -> list[tuple[str, float]]:
    """The pair that a top-r subspace on a side with ``side`` rows depends on."""
    k = len(s)
    if r < k:
        return [_pair(s[r - 1], s[r], tt, zt)]
    return [_pair(s[k - 1], None, tt, zt)] if side > k else []


def _expect_one(case: Case, s: list[float]) -> Expect:
    zt = _thresholds(case)[1]
    tt = _tie_level(case)
    m, n, k, r = case.m, case.n, len(s), case.r
    f, loss = case.func, case.loss
    zeros = [_zero_status(x, zt) for x in s]
    all_resolved = all(z == "sep" for z in zeros)
    if f in ("svdvals", "svdvals_hvp") or (f == "svd" and loss == "fS"):
        return Expect("diff")
    if f == "svd" and loss == "raw":
        return Expect("nondiff", forward=False)  # depends on the complex phases
    if (f == "svd" and loss == "polar") or f == "polar":
        e = _combine([(z, x) for z, x in zip(zeros, s, strict=True)])
        if f == "polar" and e.status == "nondiff":
            return Expect("nondiff", forward="band" not in zeros)  # documented partial isometry
        return e
    if f == "svd" and loss in ("projU", "projU_full"):
        return _combine(_boundary(s, r, m, tt, zt))
    if f == "svd" and loss == "projV":
        return _combine(_boundary(s, r, n, tt, zt))
    if f in ("svd", "svds") and loss == "overlap":
        return _combine(_neighbours(s, r - 1, m, tt, zt) + _neighbours(s, r - 1, n, tt, zt))
    if f == "svds":
        if loss == "fS":
            e = _combine(_boundary(s, r, 0, tt, zt))
            return e if e.status == "diff" else Expect("finite_nowarn")
        if loss == "projU":
            return _combine(_boundary(s, r, m, tt, zt))
        items = _boundary(s, r, m, tt, zt) + _boundary(s, r, n, tt, zt)
        items.append((zeros[r - 1], s[r - 1]))
        return _combine(items)
    if f == "low_rank":
        return _combine(_boundary(s, r, 0, tt, zt))
    if f == "svd_apply" and case.fname in NON_ELEMENTWISE:
        # With one singular value per matrix only a reduction over the batch mixes entries.
        if k > 1 or math.prod(case.batch) > 1:
            return Expect("error")
        return Expect("diff" if all_resolved else "finite")  # σ²/c: C¹ only at 0
    # The spectral functions.
    g = 1.0
    kinks = [x for x in case.kinks if x > 0]
    if kinks and s:
        g = min(abs(x - t) for x in s for t in kinks)
        if g <= 1e-6:
            return Expect("finite")
    undefined_at_0 = (f == "svd_apply" and case.fname in NONZERO_AT_0 + INF_AT_0) or (
        f == "clip_singular_values" and case.kinks[0] > 0
    )
    if undefined_at_0 and not all_resolved:
        if "tie" in zeros:
            return Expect("nondiff", forward="band" not in zeros)
        return Expect("finite")
    if f == "svd_apply" and case.fname in SQUARE and not all_resolved:
        return Expect("finite")  # C¹ only: differences are O(h) off at a zero singular value
    if undefined_at_0 and s:
        g = min(g, min(s))  # f(σ)/σ and (f_i + f_j)/(σ_i + σ_j) vary on the scale of σ_min
    return Expect("diff", g)


def expectation(case: Case, A64: torch.Tensor) -> Expect:
    """The combined expectation over the batch, from the stored matrices' singular values."""
    S = torch.linalg.svdvals(A64).reshape(-1, min(case.m, case.n))
    same = torch.allclose(S, S.flatten()[:1].expand_as(S), rtol=_thresholds(case)[0], atol=0)
    if case.fname == "nonelem_mean" and same:
        # σ·mean(σ)/c equals the elementwise σ²/c (to √eps) when every singular value of the
        # batch is the same: no probe of f at this input can tell them apart, so both an error
        # and a finite result are correct.
        return Expect("finite_or_error")
    worst = {"diff": 0, "either": 1, "finite_nowarn": 2, "finite": 3, "nondiff": 4, "error": 5}
    worst["finite_or_error"] = 3
    best: Expect | None = None
    tt, zt = _thresholds(case)
    separated = True
    inner_gap = naive_gap = 1.0
    for row in S:
        top = float(row[0]) if row.numel() else 0.0
        rel = [float(x) / top if top > 0 else 0.0 for x in row]
        separated = separated and all(_zero_status(x, zt) == "sep" for x in rel)
        # Resolved near ties included: PyTorch's backward keeps their terms too, with the
        # rounding of every numerator divided by the smallest gap (naive_gap, in the tolerance).
        pairs = [_pair(a, b, _tie_level(case), zt)[0] for a, b in itertools.pairwise(rel)]
        separated = separated and all(p == "sep" for p in pairs)
        gaps = [a - b for a, b in itertools.pairwise(rel) if a - b > tt]
        inner_gap = min([inner_gap, *gaps])
        naive_gap = min([naive_gap, *(a - b for a, b in itertools.pairwise(rel))])
        e = _expect_one(case, rel)
        if best is None or worst[e.status] > worst[best.status]:
            best = Expect(e.status, min(e.g, best.g if best else 1.0), e.forward)
        else:
            best = Expect(best.status, min(e.g, best.g), best.forward and e.forward)
    best = best or Expect("diff")
    return dataclasses.replace(
        best, separated=separated, inner_gap=inner_gap, naive_gap=max(naive_gap, 1e-300)
    )


# ---------------------------------------------------------------------------------- the oracles


def _directional(
    fun: Callable[[torch.Tensor], float], A: torch.Tensor, D: torch.Tensor, h: float
) -> tuple[float, float]:
    """Richardson-extrapolated central difference of fun along D, and its error estimate."""

    def central(t: float) -> float:
        return (fun(A + t * D) - fun(A - t * D)) / (2 * t)

    d1, d2 = central(h), central(h / 2)
    rich = (4 * d2 - d1) / 3
    return rich, abs(rich - d2)


def _mixed(
    fun: Callable[[torch.Tensor], float],
    A: torch.Tensor,
    D1: torch.Tensor,
    D2: torch.Tensor,
    h: float,
) -> tuple[float, float]:
    """Richardson-extrapolated mixed second difference D1ᵀ H D2, and its error estimate."""

    def second(t: float) -> float:
        pp = fun(A + t * D1 + t * D2)
        pm = fun(A + t * D1 - t * D2)
        mp = fun(A - t * D1 + t * D2)
        mm = fun(A - t * D1 - t * D2)
        return (pp - pm - mp + mm) / (4 * t * t)

    d1, d2 = second(h), second(h / 2)
    rich = (4 * d2 - d1) / 3
    return rich, abs(rich - d2)


def _has_nonfinite(*ts: torch.Tensor | None) -> bool:
    return any(t is not None and not bool(torch.isfinite(t).all()) for t in ts)


def _empty(case: Case) -> Outcome:
    """Empty batches: the right shapes, and a zero gradient of A's shape, no exception."""
    st_ = setup(case)
    A = st_.A.clone().requires_grad_()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            L = library_loss(case, st_, A)
            (G,) = torch.autograd.grad(L, A, allow_unused=True, materialize_grads=True)
    except Exception as err:
        return Outcome("exception", f"empty batch: {type(err).__name__}: {err}")
    if G.shape != A.shape:
        return Outcome("disagree", f"empty batch: gradient shape {tuple(G.shape)}")
    return Outcome("pass")


def evaluate(case: Case) -> Outcome:
    """Run the case through torchsvd and classify it (one of `CLASSES`)."""
    if 0 in case.batch:
        return _empty(case)
    st_ = setup(case)
    exp = expectation(case, st_.A64)
    hvp = case.func.endswith("_hvp")
    dtype = DTYPES[case.dtype]
    A = st_.A.clone().requires_grad_()
    c = st_.c.to(st_.A64.dtype)
    dirs = tuple(D * c for D in st_.dirs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            L = library_loss(case, st_, A)
            (G,) = torch.autograd.grad(L, A, create_graph=hvp)
            H = None
            if hvp:
                (H,) = torch.autograd.grad(inner(G, dirs[1].to(G.dtype)), A)
        except (ValueError, TypeError) as err:
            if exp.status in ("error", "finite_or_error"):
                return Outcome("pass")
            return Outcome("exception", f"{type(err).__name__}: {err}")
        except Exception as err:
            return Outcome("exception", f"{type(err).__name__}: {err}")
    if exp.status == "error":
        return Outcome("bad_input_accepted", f"svd_apply accepted f={case.fname}")
    warned = [
        str(w.message)[:60]
        for w in caught
        if issubclass(w.category, torchsvd.DegenerateGradientWarning)
    ]
    if _has_nonfinite(L.detach(), G, H):
        return Outcome(
            "nan_inf", f"loss {float(L.detach()):.3g}, gradient finite: {not _has_nonfinite(G)}"
        )
    if exp.status == "nondiff" and not warned:
        return Outcome("missing_warning", "the loss depends on a free choice")
    if exp.status == "finite_nowarn" and warned:
        return Outcome("spurious_warning", warned[0])
    if exp.status == "diff" and warned:
        return Outcome("spurious_warning", warned[0])
    finite = ("finite", "finite_nowarn", "finite_or_error")
    if exp.status in finite or (exp.status == "either" and warned):
        return Outcome("pass")
    return _compare(case, st_, exp, float(L.detach()), G, H, dirs, dtype)


def _naive_directional(
    case: Case, st_: Setup, dirs: tuple[torch.Tensor, ...]
) -> list[float] | None:
    """Directional derivatives by autograd through ``torch.linalg.svd`` (PyTorch's backward),
    at the normalized matrix A/c so that its σ_j² − σ_i² cannot overflow; None if not finite."""
    unit = dataclasses.replace(st_, c=torch.ones_like(st_.c))
    X = (st_.A64 / st_.c.to(st_.A64.dtype)).requires_grad_()
    # Every f of svd_apply is c·f₁(σ/c), so F(A)/c = F₁(A/c): f at scale 1 on A/c.
    (G,) = torch.autograd.grad(reference_loss(dataclasses.replace(case, scale_exp=0), unit, X), X)
    if _has_nonfinite(G):
        return None
    return [float(inner(G, D / st_.c.to(D.dtype))) for D in dirs]


def _compare(
    case: Case,
    st_: Setup,
    exp: Expect,
    L: float,
    G: torch.Tensor,
    H: torch.Tensor | None,
    dirs: tuple[torch.Tensor, ...],
    dtype: torch.dtype,
) -> Outcome:
    e_lib = torchsvd._validate.eps(dtype)
    e64 = torchsvd._validate.eps(torch.float64)
    single = e_lib > 1e-10
    g = max(exp.g, 1e-300)
    iterative = 0.0
    if case.func == "svds":
        from torchsvd._topk import default_tol

        iterative = 1e2 * default_tol(dtype) / g

    def ref(X: torch.Tensor) -> float:
        with torch.no_grad():
            return float(reference_loss(case, st_, X))

    L_ref = ref(st_.A64)
    fwd_tol = max(1.0, abs(L_ref)) * ((1e-4 if single else 1e-10) + 1e2 * e_lib / g + iterative)
    if exp.forward and not abs(L - L_ref) <= fwd_tol:
        return Outcome("disagree", f"forward: loss {L:.10g}, reference {L_ref:.10g}")
    if exp.status == "nondiff":
        return Outcome("pass")
    h = 1e-2 * min(g, 0.1)
    d_ref, errs = zip(*(_directional(ref, st_.A64, D, h) for D in dirs), strict=True)
    d_lib = [float(inner(G.detach().to(D.dtype), D)) for D in dirs]
    scale = max([1.0] + [abs(x) for x in d_ref])
    base = 3e-4 if single else 1e-6
    # The SVD backward divides rounding-level numerators of an invariant loss by every gap
    # above its tie threshold, inside the loss's blocks too: eps/gap, at most √eps by design.
    masked = 30 * e_lib / exp.inner_gap if case.func in ("svd", "low_rank", "svds") else 0.0
    lib_err = scale * (base + 1e2 * e_lib / g + iterative + masked)
    # Rounding of the differences themselves: the reference SVD is exact for a matrix within
    # about max(m, n)·eps·‖A‖ of A, a change of the loss of up to that times its gradient;
    # divided by the step and amplified 3× by the extrapolation (large where f′ is, 1/σ at a
    # tiny σ, say).
    steep = max(abs(x) for x in d_ref)
    rounding = 3 * max(case.m, case.n) * e64 * float(st_.c.max()) * steep / h
    for dl, dr, er in zip(d_lib, d_ref, errs, strict=True):
        tol = lib_err + 3 * er + 1e3 * e64 / (g * g) + rounding
        if not abs(dl - dr) <= tol:
            return Outcome(
                "disagree",
                f"gradient: directional derivative {dl:.10g}, differences {dr:.10g} "
                f"(tol {tol:.2g}, gap {exp.g:.2g})",
            )
    if exp.separated:
        naive = _naive_directional(case, st_, dirs)
        naive_tol = lib_err + scale * 30 * e64 / exp.naive_gap
        if naive is not None:
            for dl, dn in zip(d_lib, naive, strict=True):
                if not abs(dl - dn) <= naive_tol:
                    return Outcome(
                        "disagree",
                        f"gradient: directional derivative {dl:.10g}, naive autograd {dn:.10g} "
                        f"(tol {naive_tol:.2g}, gap {exp.g:.2g})",
                    )
    if H is not None:
        h2 = 1e-2
        d2, er2 = _mixed(ref, st_.A64, dirs[0], dirs[1], h2)
        dl2 = float(inner(H.detach().to(dirs[0].dtype), dirs[0]))
        tol = max(1.0, abs(d2)) * ((1e-3 if single else 1e-6) + 1e3 * e_lib) + 3 * er2
        tol += 1e2 * e64 / h2**2
        if not abs(dl2 - d2) <= tol:
            return Outcome(
                "disagree",
                f"second derivative: {dl2:.10g}, mixed differences {d2:.10g} (tol {tol:.2g})",
            )
    return Outcome("pass")
