"""Input checks shared by the public wrappers: clear errors instead of asserts or NaN."""

from __future__ import annotations

import torch

__all__ = [
    "all_finite",
    "check_int",
    "check_matrix",
    "check_real",
    "compute_dtype",
    "eps",
    "is_transformed",
    "rank_rtol",
    "real_dtype",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_SUPPORTED = (torch.float32, torch.float64, torch.complex64, torch.complex128, *_LOW_PRECISION)


def is_transformed(x: torch.Tensor) -> bool:
    """True when ``x`` is traced (torch.compile) or wrapped by a torch.func transform.

    Data-dependent checks (``.item()``, ``bool(tensor)``) are impossible on such tensors, so the
    checks that need them are skipped there.
    """
    if torch.compiler.is_compiling():
        return True
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))


def all_finite(t: torch.Tensor) -> bool:
    """True when ``t`` has no NaN or infinite entry.

    A finite sum proves it (NaN and ±inf propagate through a sum) in one read of ``t``, without
    the boolean tensor ``isfinite`` allocates, which costs a sizeable part of a whole `svds` call
    on a large matrix (docs/performance.md). Only a sum that overflows or is not finite needs
    the element-wise check.
    """
    t = t.detach()
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_matrix(
    A: object, name: str = "A", *, allow_complex: bool = True, check_finite: bool = True
) -> torch.Tensor:
    """Validate a batch of matrices ``(..., m, n)`` and return it as a tensor.

    Raises
    ------
    TypeError
        ``A`` is not a tensor, or its dtype is integer, bool, or complex where not supported.
    ValueError
        ``A`` has fewer than two dimensions, or contains NaN or infinity.
    """
    if not isinstance(A, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (..., m, n), got {type(A).__name__}"
        )
    if A.dtype not in _SUPPORTED or (A.is_complex() and not allow_complex):
        kinds = "float16/bfloat16/float32/float64" + (
            "/complex64/complex128" if allow_complex else ""
        )
        raise TypeError(f"{name} must have a floating dtype ({kinds}), got {A.dtype}")
    if A.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (..., m, n), got shape {tuple(A.shape)}"
        )
    if check_finite and A.numel() > 0 and not is_transformed(A):
        if not all_finite(A):
            bad = "NaN" if bool(torch.isnan(A).any()) else "infinite"
            raise ValueError(
                f"{name} contains {bad} entries; the SVD of such a matrix is undefined"
            )
    return A


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the decomposition runs in: half and bfloat16 are computed in float32."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype of singular values and tolerances: float64 for complex128, and so on."""
    return dtype.to_real() if dtype.is_complex else dtype


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of the (real part of the) dtype."""
    return float(torch.finfo(real_dtype(dtype)).eps)


def rank_rtol(m: int, n: int, dtype: torch.dtype) -> float:
    """``max(m, n)·eps``: singular values at or below this times σ_max are numerically zero.

    The numerical-rank threshold of numpy, scipy and ``torch.linalg.matrix_rank``.
    """
    return max(m, n, 1) * eps(dtype)


def check_int(
    x: object, name: str, *, minimum: int | None = None, maximum: int | None = None, what: str = ""
) -> int:
    """``x`` as an int in ``[minimum, maximum]``; ``TypeError`` / ``ValueError`` naming it.

    ``what`` says where the bound comes from (e.g. ``"min(m, n) = 4 for a 4x6 matrix"``).
    """
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int, got {type(x).__name__} {x!r}")
    if (minimum is not None and x < minimum) or (maximum is not None and x > maximum):
        lo = "" if minimum is None else f"{minimum} <= "
        hi = "" if maximum is None else f" <= {maximum}"
        bound = f" ({what})" if what else ""
        raise ValueError(f"{name} must satisfy {lo}{name}{hi}{bound}, got {x}")
    return x


def check_real(
    x: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``x`` as a finite float in the interval given; ``TypeError`` / ``ValueError`` naming it.

    NaN and infinities are always rejected (a NaN tolerance would silently compare False).
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(x).__name__} {x!r}")
    value = float(x)
    bad = value != value or value in (float("inf"), float("-inf"))
    if low is not None:
        bad = bad or value < low or (low_open and value == low)
    if high is not None:
        bad = bad or value > high or (high_open and value == high)
    if bad:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be a finite float in {lo}, {hi}, got {x!r}")
    return value
