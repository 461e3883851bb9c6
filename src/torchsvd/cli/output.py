"""Text output that never fails halfway: built whole, then written in the stream's encoding.

A character the encoding cannot show (σ, ‖, ₂ in cp1252, for example) is written as an ASCII
spelling (``sigma``, ``||``, ``2``) instead of raising ``UnicodeEncodeError`` after part of the
output is out.
"""

from __future__ import annotations

import codecs
import sys
import unicodedata
from typing import TextIO

__all__ = ["encodable", "stream_encoding", "write"]

_ASCII = {
    "σ": "sigma",
    "Σ": "Sigma",
    "κ": "kappa",
    "λ": "lambda",
    "‖": "||",
    "×": "x",
    "−": "-",
    "–": "-",
    "—": "-",
    "≈": "~",
    "≤": "<=",
    "≥": ">=",
    "≠": "!=",
    "√": "sqrt",
    "·": "*",
    "⁺": "^+",
    "ᵀ": "^T",
    "ᴴ": "^H",
    "⁻": "^-",
    "¹": "^1",
    "²": "^2",
    "³": "^3",
    "…": "...",
    "→": "->",
    "∈": " in ",
    "∘": "o",
}


def encodable(text: str, encoding: str) -> str:
    """``text`` with every character ``encoding`` cannot show replaced by an ASCII spelling.

    >>> encodable("σ_max = ‖A‖₂ = 5", "cp1252")
    'sigma_max = ||A||2 = 5'
    >>> encodable("σ_max", "utf-8")
    'σ_max'
    """
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        pass
    except LookupError:  # an encoding Python does not know: ASCII is safe
        encoding = "ascii"
    encoder = codecs.getincrementalencoder(encoding)("strict")
    out = []
    for ch in text:
        try:
            encoder.encode(ch)
            out.append(ch)
        except UnicodeEncodeError:
            spelled = _ASCII.get(ch)
            if spelled is None:
                # compatibility decomposition: ₂ → 2, ⁴ → 4, é → e + accent (accent dropped)
                spelled = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append(spelled or "?")
    return "".join(out)


def stream_encoding(stream: TextIO | None = None) -> str:
    """The encoding of ``stream`` (default stdout); UTF-8 where it does not say."""
    return getattr(sys.stdout if stream is None else stream, "encoding", None) or "utf-8"


def write(text: str, stream: TextIO | None = None) -> None:
    """Write ``text`` to ``stream`` (default stdout) in one call, in an encoding it can take."""
    stream = sys.stdout if stream is None else stream
    stream.write(encodable(text, stream_encoding(stream)))
    stream.flush()
