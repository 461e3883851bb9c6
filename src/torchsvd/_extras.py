"""The entry point of the explainer, an optional part of torchsvd imported only when called.

The numerical core needs torch alone. The explainer (sympy) and the command line (numpy, scipy,
matplotlib, click, tqdm) are extras; calling them without their extra installed raises an
``ImportError`` that names the extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchsvd.explainer import Explanation

__all__ = ["explain"]


def explain(A: Any, *, digits: int = 6) -> Explanation:
    """Compute the SVD of a small matrix by hand, exactly, and explain each step.

    The explainer is an extra (``pip install 'torchsvd[explain]'``, which brings sympy); this
    function imports it on first use. See `torchsvd.explainer.explain` for the parameters and
    the result, and ``docs/toolkit.md``.

    Examples
    --------
    >>> import torchsvd
    >>> e = torchsvd.explain("3 0; 0 4")
    >>> [str(s) for s in e.S]
    ['4', '3']
    """
    try:
        from torchsvd.explainer import explain as explain_by_hand
    except ImportError as err:
        missing = err.name or "a dependency"
        raise ImportError(
            f"torchsvd.explain needs the optional dependency {missing!r}; install it with "
            "pip install 'torchsvd[explain]'"
        ) from err
    return explain_by_hand(A, digits=digits)
