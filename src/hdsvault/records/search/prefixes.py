"""Ordered search values (date, number, quantity): prefixes, implicit ranges, exact tests.

Why in one place: each prefix needs two things that must agree, the *region* a matching
value must meet (turned into bucket tokens, a superset) and the *exact* FHIR test (the
post-filter). Both are written next to each other here, per prefix.

Dates (value ``[vlo, vhi)`` and search ``[qlo, qhi)``, implicit ranges from precision,
``None`` = open end), after FHIR R4 §3.1.1.4.2:

====  ==========================================  =====================
eq    search range contains the value's range      ``qlo<=vlo, vhi<=qhi``
ne    not eq                                       complement
gt    the value extends after the search range     ``vhi > qhi``
lt    the value extends before the search range    ``vlo < qlo``
ge    gt or eq;  le: lt or eq
sa    the value starts after the search range      ``vlo >= qhi``
eb    the value ends before the search range       ``vhi <= qlo``
ap    the ranges overlap once the search range is widened on each side by 10 % of the
      distance between now and the searched date
====  ==========================================  =====================

Numbers (value ``[lo, hi]``, a point for a plain number; search ``q`` with implicit range
``[q - h, q + h)`` where ``h`` is half a unit of its last digit: ``100`` -> [99.5, 100.5),
``1.50`` -> [1.495, 1.505), ``1e2`` -> [50, 150)): ``eq``/``ne`` use the implicit range,
``gt lt ge le sa eb`` compare with ``q`` exactly (R4 number table), ``ap`` accepts values
within 10 % of ``q`` (at least ``h``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation, localcontext

from hdsvault.records.search.dates import parse_date
from hdsvault.records.search.errors import SearchError

__all__ = [
    "PREFIXES",
    "DateQuery",
    "NumberQuery",
    "date_matches",
    "date_regions",
    "number_matches",
    "number_regions",
    "parse_date_query",
    "parse_number_query",
    "split_prefix",
]

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_EXACT = Context(prec=80)

Bound = int | None


def split_prefix(name: str, raw: str) -> tuple[str, str]:
    """``ge2020`` -> (``ge``, ``2020``); no prefix -> (``eq``, raw)."""
    head = raw[:2]
    if head in PREFIXES:
        rest = raw[2:]
        if not rest:
            raise SearchError(name, f"prefix {head!r} without a value")
        return head, rest
    return "eq", raw


# ------------------------------------------------------------------ dates


@dataclass(frozen=True, slots=True)
class DateQuery:
    """A parsed date search value: prefix and the implicit range ``[low, high)``."""

    prefix: str
    low: int
    high: int
    window: int = 0
    """For ``ap``: how far the range is widened on each side (microseconds)."""


def parse_date_query(name: str, raw: str, now: int) -> DateQuery:
    """Parse ``[prefix]date``; ``now`` (UTC microseconds) sizes the ``ap`` window."""
    prefix, text = split_prefix(name, raw)
    found = parse_date(text, True)
    if found is None:
        raise SearchError(
            name, f"{text!r} is not a date (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss])"
        )
    low, high = found
    window = abs(now - low) // 10 if prefix == "ap" else 0
    return DateQuery(prefix, low, high, window)


def date_regions(q: DateQuery) -> list[tuple[Bound, Bound]]:
    """Regions ``[low, high)`` one of which every matching value intersects."""
    p = q.prefix
    if p == "eq":
        return [(q.low, q.high)]
    if p == "ne":
        return [(None, q.low), (q.high, None)]
    if p in ("gt", "sa"):
        return [(q.high, None)]
    if p in ("lt", "eb"):
        return [(None, q.low)]
    if p == "ge":
        return [(q.low, None)]
    if p == "le":
        return [(None, q.high)]
    return [(q.low - q.window, q.high + q.window)]  # ap


def date_matches(q: DateQuery, vlo: Bound, vhi: Bound) -> bool:
    """The exact FHIR test of one value range against a date search (table above)."""
    p = q.prefix
    eq = vlo is not None and vhi is not None and q.low <= vlo and vhi <= q.high
    if p == "eq":
        return eq
    if p == "ne":
        return not eq
    gt = vhi is None or vhi > q.high
    lt = vlo is None or vlo < q.low
    if p == "gt":
        return gt
    if p == "lt":
        return lt
    if p == "ge":
        return gt or eq
    if p == "le":
        return lt or eq
    if p == "sa":
        return vlo is not None and vlo >= q.high
    if p == "eb":
        return vhi is not None and vhi <= q.low
    lo, hi = q.low - q.window, q.high + q.window  # ap: overlap
    return (vlo is None or vlo < hi) and (vhi is None or vhi > lo)


# ------------------------------------------------------------------ numbers

NBound = Decimal | None


@dataclass(frozen=True, slots=True)
class NumberQuery:
    """A parsed number search value."""

    prefix: str
    value: Decimal
    low: Decimal
    """Implicit range ``[low, high)`` from the precision of the written number."""
    high: Decimal
    ap_low: Decimal
    ap_high: Decimal


def parse_number_query(name: str, raw: str, prefix: str | None = None) -> NumberQuery:
    """Parse ``[prefix]number`` (or just the number when ``prefix`` is given)."""
    if prefix is None:
        prefix, text = split_prefix(name, raw)
    else:
        text = raw
    if not _NUMBER.fullmatch(text):
        raise SearchError(name, f"{text!r} is not a number")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise SearchError(name, f"{text!r} is not a number") from None
    if not d.is_finite() or abs(d.adjusted()) > 1000:
        raise SearchError(name, f"{text!r} is out of range")
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    with localcontext(_EXACT):
        half = Decimal(5).scaleb(exponent - 1)
        spread = max(abs(d) / 10, half)
        return NumberQuery(prefix, d, d - half, d + half, d - spread, d + spread)


def number_regions(q: NumberQuery) -> list[tuple[NBound, NBound]]:
    """Closed regions ``[low, high]`` one of which every matching value meets."""
    p = q.prefix
    if p == "eq":
        return [(q.low, q.high)]
    if p == "ne":
        return [(None, q.low), (q.high, None)]
    if p in ("gt", "sa", "ge"):
        return [(q.value, None)]
    if p in ("lt", "eb", "le"):
        return [(None, q.value)]
    return [(q.ap_low, q.ap_high)]  # ap


def number_matches(q: NumberQuery, lo: NBound, hi: NBound) -> bool:
    """The exact test of a value ``[lo, hi]`` (a point when equal) against a number search."""
    p = q.prefix
    eq = lo is not None and hi is not None and q.low <= lo and hi < q.high
    if p == "eq":
        return eq
    if p == "ne":
        return not eq
    if p == "gt":
        return hi is None or hi > q.value
    if p == "lt":
        return lo is None or lo < q.value
    if p == "ge":
        return hi is None or hi >= q.value
    if p == "le":
        return lo is None or lo <= q.value
    if p == "sa":
        return lo is not None and lo > q.value
    if p == "eb":
        return hi is not None and hi < q.value
    return (lo is None or lo <= q.ap_high) and (hi is None or hi >= q.ap_low)  # ap
