"""String normalisation for search: what "case and accent insensitive" means here.

Why one function for both sides: the index stores keyed prefixes of the normalised value and
the query looks up the normalised term; if the two normalisations ever differed by one code
point, a stored value would silently become unfindable.

``normalise``: casefold (``ß`` -> ``ss``), Unicode NFKD (``ﬁ`` -> ``fi``, ``é`` -> ``e`` +
combining accent), drop combining marks, collapse runs of white space to one space, strip.
Then only the first :data:`MAX_WORDS` words are kept (``searchable``): long free texts are
searchable by their beginning only, and the post-filter applies the same cut so that tokens
and the exact check always agree.

A *word* is a maximal run of letters and digits (``[^\\W_]+``); ``Martin-Dupont`` has two.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = [
    "MAX_WORDS",
    "PREFIX_CAP",
    "TRIGRAM_CAP",
    "matches_contains",
    "matches_start",
    "normalise",
    "searchable",
    "trigrams",
    "word_starts",
    "words",
]

PREFIX_CAP = 24
"""Longest prefix indexed for a word (longer search words are looked up by their first 24
characters, then checked exactly by the post-filter)."""

MAX_WORDS = 32
"""Words of a value that string search reaches (the rest is ignored, on both sides)."""

TRIGRAM_CAP = 64
"""Characters of a normalised value indexed as trigrams for ``:contains``."""

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[^\W_]+")


@lru_cache(maxsize=1 << 15)
def normalise(text: str) -> str:
    """Casefolded, accent-free, white-space-collapsed form of ``text``."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    if not folded.isascii():
        folded = "".join(c for c in folded if not unicodedata.combining(c))
    return _SPACE.sub(" ", folded).strip()


@lru_cache(maxsize=1 << 15)
def searchable(text: str) -> str:
    """``normalise(text)`` cut after its :data:`MAX_WORDS`-th word."""
    norm = normalise(text)
    for i, m in enumerate(_WORD.finditer(norm)):
        if i == MAX_WORDS - 1:
            return norm[: m.end()]
    return norm


def words(norm: str) -> list[str]:
    """The words of an already normalised text."""
    return _WORD.findall(norm)


def word_starts(norm: str) -> list[int]:
    """Offsets where a match may begin: 0 and the start of every word."""
    starts = [m.start() for m in _WORD.finditer(norm)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return starts


def trigrams(norm: str) -> set[str]:
    """Distinct 3-character substrings of the first :data:`TRIGRAM_CAP` characters."""
    cut = norm[:TRIGRAM_CAP]
    return {cut[i : i + 3] for i in range(len(cut) - 2)}


def matches_start(norm_value: str, norm_term: str) -> bool:
    """FHIR string default match, at word granularity: the term starts the value, or starts
    one of its words (``berg`` finds ``van der Berg``, ``dupont`` finds ``Martin-Dupont``)."""
    if not norm_term:
        return False
    return any(norm_value.startswith(norm_term, s) for s in word_starts(norm_value))


def matches_contains(norm_value: str, norm_term: str) -> bool:
    """``:contains`` within the trigram-indexed part of the value."""
    return bool(norm_term) and norm_term in norm_value[:TRIGRAM_CAP]
