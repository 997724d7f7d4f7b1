"""DICOM attribute matching (PS3.4 C.2.2.2), applied to opened metadata.

Supported: universal (empty value or ``*``), single value, list of UIDs (``\\``-separated),
wildcards ``*`` and ``?`` on strings, ranges on dates/times (``A-B``, ``A-``, ``-B``).
Person names compare case- and accent-insensitively; other strings exactly (trailing
spaces ignored). A multi-valued attribute matches when any value does.
"""

from __future__ import annotations

import re
from functools import lru_cache

from hdsvault.imaging.dicomfile import Json, all_values
from hdsvault.imaging.normalize import fold, name_text

_RANGE_VRS = {"DA", "TM", "DT"}


@lru_cache(maxsize=512)
def _pattern(value: str, fold_case: bool) -> re.Pattern[str]:
    out = []
    for c in value:
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL if fold_case else re.DOTALL)


def _norm_time(v: str) -> str:
    return v.replace(":", "").replace("-", "").strip()


def _in_range(value: str, query: str, vr: str) -> bool:
    lo, _, hi = query.partition("-")
    if vr == "DA":
        v = value.replace(".", "").strip()[:8]
        lo, hi = lo.replace(".", "").strip(), hi.replace(".", "").strip()
    elif vr == "TM":
        v, lo, hi = _norm_time(value), _norm_time(lo), _norm_time(hi)
        # compare as fixed-width HHMMSS.ffffff so "10" means 10:00:00
        v, lo = v.ljust(6, "0"), lo.ljust(6, "0") if lo else lo
        hi = hi.ljust(6, "9") if hi else hi
    else:
        v = value.strip()
    return (not lo or v >= lo) and (not hi or v <= hi)


def matches(attrs: Json, tag: str, query: str, vr: str) -> bool:
    """Does the attribute ``tag`` of ``attrs`` match the query value ``query``?"""
    query = query.strip()
    if query in ("", "*"):
        return True
    values = all_values(attrs, tag)
    if not values:
        return False
    if vr == "UI":
        wanted = {u.strip() for u in query.split("\\")}
        return any(v.strip() in wanted for v in values)
    if vr in _RANGE_VRS and "-" in query and not ("*" in query or "?" in query):
        return any(_in_range(v, query, vr) for v in values)
    alternatives = query.split("\\")
    for q in alternatives:
        for v in values:
            if vr == "PN":
                wild = "*" in q or "?" in q
                if wild and _pattern(fold(q), True).fullmatch(name_text(v)):
                    return True
                if not wild and name_text(v) == name_text(q):
                    return True
            elif "*" in q or "?" in q:
                if _pattern(q, False).fullmatch(v.rstrip()):
                    return True
            elif v.rstrip() == q.rstrip():
                return True
    return False
