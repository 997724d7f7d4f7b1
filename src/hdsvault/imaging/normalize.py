"""Normalisation shared by the blind index and the matcher (they must agree byte for byte).

Person names are matched case- and accent-insensitively, word by word (Orthanc's default,
and what French patient names need: ``Hélène`` = ``HELENE``). Dates are ``YYYYMMDD``.
"""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[\^=\s,]+")


def fold(text: str) -> str:
    """Upper case, accents removed, whitespace collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.upper().split())


def name_words(name: str) -> list[str]:
    """The words of a person name (``DUPONT^JEAN PIERRE`` -> DUPONT, JEAN, PIERRE)."""
    return [w for w in _SEPARATORS.split(fold(name)) if w]


def name_text(name: str) -> str:
    """A person name as one comparable string (components joined by ``^``)."""
    parts = [fold(p) for p in name.split("=")[0].split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)
