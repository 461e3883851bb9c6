"""Entry points of the optional parts of torchsvd, imported only when they are called.

The numerical core needs torch alone. The explainer (sympy) and the command line (numpy, scipy,
matplotlib, click, tqdm) are extras; calling them without their extra installed raises an
``ImportError`` that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchsvd.explainer import Explanation

__all__ = ["explain", "require"]


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (a part of torchsvd that needs an extra), naming the extra if it fails."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        missing = err.name or "a dependency"
        raise ImportError(
            f"{feature} needs the optional dependency {missing!r}; install it with "
            f"pip install 'torchsvd[{extra}]'"
        ) from err


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
    explainer = require("torchsvd.explainer", "explain", "torchsvd.explain")
    result: Explanation = explainer.explain(A, digits=digits)
    return result
