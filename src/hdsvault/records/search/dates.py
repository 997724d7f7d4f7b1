"""FHIR dates as half-open instant ranges ``[low, high)`` in UTC microseconds.

Why ranges: FHIR compares dates by their *implicit range*: ``2020`` is the whole year 2020,
``2020-03-15`` the whole day, ``2020-03-15T10:30:00Z`` one second. Search prefixes (``eq``,
``lt``, ``sa``...) are defined on those ranges, so both the indexed values and the searched
values become ranges, and every comparison here is exact integer arithmetic on microseconds
since 1970-01-01T00:00Z (``None`` stands for an open end: a Period without ``end``).

Time zones: a value with a time and an offset is converted to UTC; a value without a time
(``2020-03-15``) or without an offset is taken in UTC. This is a server choice the
specification allows ("the server's time zone"); documented in ``docs/search-leakage.md``.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

__all__ = [
    "DAY_US",
    "EPOCH_ORDINAL",
    "DateRange",
    "day_of",
    "format_instant",
    "parse_date",
    "year_start",
]

DAY_US = 86_400_000_000
SECOND_US = 1_000_000
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

DateRange = tuple[int | None, int | None]
"""``(low, high)``: microseconds since the epoch, low inclusive, high exclusive."""

_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def _days(y: int, m: int, d: int) -> int:
    return date(y, m, d).toordinal() - EPOCH_ORDINAL


def year_start(year: int) -> int:
    """Day number (days since the epoch) of January 1st of ``year``."""
    return _days(year, 1, 1)


def day_of(instant: int) -> int:
    """Day number of an instant (floor division: correct before 1970 too)."""
    return instant // DAY_US


@lru_cache(maxsize=1 << 16)
def parse_date(text: str, allow_partial_time: bool = False) -> tuple[int, int] | None:
    """``[low, high)`` of a FHIR date, dateTime or instant; None if it is not one.

    ``allow_partial_time`` accepts ``2020-03-15T10:30`` (minute precision) and times without
    a zone, which search URLs use but resources may not.
    """
    m = _DATE.fullmatch(text.strip())
    if m is None:
        return None
    ys, ms, ds, hs, mins, ss, frac, zone = m.groups()
    try:
        y = int(ys)
        if y < 1:
            return None
        if ms is None:
            return _days(y, 1, 1) * DAY_US, _days(y + 1, 1, 1) * DAY_US
        mo = int(ms)
        if ds is None:
            if not 1 <= mo <= 12:
                return None
            ny, nm = (y + 1, 1) if mo == 12 else (y, mo + 1)
            return _days(y, mo, 1) * DAY_US, _days(ny, nm, 1) * DAY_US
        day = _days(y, mo, int(ds))
        if hs is None:
            return day * DAY_US, (day + 1) * DAY_US
    except ValueError:  # day 31 of April, year 10000...
        return None
    if ss is None and not allow_partial_time:
        return None
    if zone is None and not allow_partial_time:
        return None
    h, mi, s = int(hs), int(mins), int(ss or 0)
    if h > 23 or mi > 59 or s > 60:
        return None
    low = day * DAY_US + ((h * 60 + mi) * 60 + min(s, 59)) * SECOND_US
    if frac:
        digits = frac[:6]
        low += int(digits.ljust(6, "0"))
        step = 10 ** (6 - len(digits))
    else:
        step = SECOND_US if ss is not None else 60 * SECOND_US
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        oh, om = int(zone[1:3]), int(zone[4:6])
        if oh > 14 or om > 59:
            return None
        low -= sign * (oh * 60 + om) * 60 * SECOND_US
    return low, low + step


def format_instant(instant: int) -> str:
    """ISO 8601 UTC text of an instant (messages and debugging)."""
    day, rest = divmod(instant, DAY_US)
    d = date.fromordinal(day + EPOCH_ORDINAL)
    secs, us = divmod(rest, SECOND_US)
    hh, rem = divmod(secs, 3600)
    mm, ss = divmod(rem, 60)
    return f"{d.isoformat()}T{hh:02d}:{mm:02d}:{ss:02d}.{us:06d}Z"
