"""The ``torchsvd`` command line (also ``python -m torchsvd``): compress, info, explain, demo.

The command line needs the ``cli`` extra (numpy, scipy, matplotlib, click, tqdm, and sympy for
``explain`` and ``demo``); the library itself needs none of them. Without one of them, `main`
prints one line naming the extra to install and exits with status 1.

Errors in the input (a missing or unreadable file, a malformed matrix, a rank out of range, an
output directory that cannot be written) end the command with one line on stderr,
``torchsvd: error: <what was wrong>``, exit status 1 (2 for a wrong option or argument), and no
output file: everything is written to temporary files that are renamed only when the command
succeeds (:class:`torchsvd.cli.io.OutputDir`).
"""

from __future__ import annotations

import sys

__all__ = ["EXTRA_MODULES", "main", "missing_extra"]

# The third-party modules of the ``cli`` extra, by import name.
EXTRA_MODULES = ("numpy", "scipy", "matplotlib", "click", "tqdm", "sympy", "PIL")


def missing_extra(exc: ImportError) -> str | None:
    """The one-line message for an ``ImportError`` of a module of the extra, else None."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name not in EXTRA_MODULES:
        return None
    return (
        f"the torchsvd command line needs the Python package {name!r}, which is not installed; "
        "install the command line's dependencies with: pip install 'torchsvd[cli]'"
    )


def main() -> None:
    """Console-script entry point (``torchsvd = "torchsvd.cli:main"``)."""
    try:
        from torchsvd.cli.commands import cli
    except ImportError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        sys.stderr.write(f"torchsvd: error: {message}\n")
        sys.exit(1)
    cli.main(prog_name="torchsvd")
