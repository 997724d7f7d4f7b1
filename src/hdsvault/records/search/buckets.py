"""Hierarchical buckets: range search over keyed (blind) tokens, with no false negatives.

Why: a blind index only answers "is this exact token present?", never "is the value < x?".
Ranges are therefore cut into aligned *buckets* at several granularities (year / month / day
for dates; order of magnitude / first digit / first two digits for numbers) and a range
query becomes the set of buckets that covers it; the post-filter then checks exactly.

Scheme (same for dates and numbers). The domain is a line of *finest buckets* (days; two
leading digits), grouped into coarser aligned buckets (months, years; first digit, decade).
A value's range is cut into the minimal set ``D`` of aligned buckets covering it (a whole
year is one bucket, not 365 days). The index stores:

- ``T(b)`` ("touches") for every ``b`` in ``D`` and every coarser bucket containing one;
- ``F(b)`` ("fully covers") for every coarse ``b`` in ``D``.

A query region ``R`` is cut the same way into ``C``; the query looks for ``T(c)`` for every
``c`` in ``C`` and ``F(a)`` for every coarser bucket ``a`` containing some ``c``. Proof of no
false negative: if the value and ``R`` share a point ``p``, then ``p`` lies in some ``d`` of
``D`` and some ``c`` of ``C``; aligned buckets containing a common point are nested, so either
``d`` is inside ``c`` (the value has ``T(c)``) or ``c`` is strictly inside ``d`` (the value
has ``F(d)``, and ``d`` contains ``c``). Both sides over-approximate (partial days, digits
beyond the second), which can only add candidates, which the post-filter removes.

Dates cover 1800-01-01 .. 2199-12-31 (UTC days); everything before is one ``before`` bucket,
after one ``after`` bucket. Values whose decomposition would exceed :data:`DATE_CAP`
buckets get special tokens instead (see :func:`date_index`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache

from hdsvault.records.search.dates import DAY_US, EPOCH_ORDINAL, year_start

__all__ = [
    "DATES",
    "DATE_CAP",
    "DATE_MAX_YEAR",
    "DATE_MIN_YEAR",
    "LONG",
    "NUMBERS",
    "NUMBER_EXP_MAX",
    "NUMBER_EXP_MIN",
    "BucketTokens",
    "Hierarchy",
    "date_cover",
    "date_index",
    "decompose",
    "number_cover",
    "number_index",
    "number_position",
]

Path = tuple[int | str, ...]

# ------------------------------------------------------------------ generic decomposition


@dataclass(frozen=True)
class Hierarchy:
    """Aligned buckets over integer *finest indices* (see the module docstring)."""

    path: Callable[[int], Path]
    """Path of the finest bucket of an index; its prefixes of length >= ``min_len`` are the
    coarser buckets containing it."""
    span: Callable[[Path], tuple[int, int]]
    """First and last finest index (inclusive) of a bucket."""
    min_len: Callable[[Path], int]


def decompose(h: Hierarchy, first: int, last: int, cap: int | None = None) -> list[Path] | None:
    """Minimal aligned buckets covering finest indices ``first..last``; None beyond ``cap``."""
    out: list[Path] = []
    cursor = first
    while cursor <= last:
        p = h.path(cursor)
        for n in range(h.min_len(p), len(p) + 1):
            lo, hi = h.span(p[:n])
            if lo == cursor and hi <= last:
                out.append(p[:n])
                cursor = hi + 1
                break
        if cap is not None and len(out) > cap:
            return None
    return out


@dataclass(frozen=True)
class BucketTokens:
    """Bucket labels a value is indexed under, or a query looks for, by token kind."""

    touch: frozenset[str]
    full: frozenset[str]
    extra: frozenset[tuple[str, str]] = frozenset()
    """Special tokens as (kind, label): ``("x", "long")``, ``("o", "2019")``..."""


def _label(p: Path) -> str:
    return ":".join(str(x) for x in p)


def _index_tokens(h: Hierarchy, buckets: Iterable[Path]) -> tuple[set[str], set[str]]:
    touch: set[str] = set()
    full: set[str] = set()
    for b in buckets:
        touch.update(_touch_labels(h, b))
        if len(b) < len(h.path(h.span(b)[0])):
            full.add(_label(b))
    return touch, full


@lru_cache(maxsize=1 << 14)
def _touch_labels(h: Hierarchy, b: Path) -> tuple[str, ...]:
    """Labels of ``b`` and of every coarser bucket containing it (cached: hot path)."""
    return tuple(_label(b[:n]) for n in range(h.min_len(b), len(b) + 1))


def _finest_range(h: Hierarchy, first: int, last: int, cap: int | None) -> list[Path] | None:
    """:func:`decompose`, short-circuited for a single finest bucket (most values)."""
    if first == last:
        return [h.path(first)]
    return decompose(h, first, last, cap)


def _query_tokens(h: Hierarchy, buckets: Iterable[Path]) -> tuple[set[str], set[str]]:
    touch: set[str] = set()
    full: set[str] = set()
    for b in buckets:
        touch.add(_label(b))
        for n in range(h.min_len(b), len(b)):
            full.add(_label(b[:n]))
    return touch, full


# ------------------------------------------------------------------ dates

DATE_MIN_YEAR = 1800
DATE_MAX_YEAR = 2199
DATE_CAP = 64
"""Most buckets a bounded date value is indexed under; beyond, it is a ``long`` value."""

_D_MIN = year_start(DATE_MIN_YEAR)
_D_MAX = year_start(DATE_MAX_YEAR + 1) - 1
_BEFORE = _D_MIN - 1
_AFTER = _D_MAX + 1


@lru_cache(maxsize=1 << 16)
def _date_path(day: int) -> Path:
    if day <= _BEFORE:
        return ("before",)
    if day >= _AFTER:
        return ("after",)
    d = date.fromordinal(day + EPOCH_ORDINAL)
    return (d.year, f"{d.month:02d}", f"{d.day:02d}")


@lru_cache(maxsize=1 << 12)
def _date_span(p: Path) -> tuple[int, int]:
    if p == ("before",):
        return _BEFORE, _BEFORE
    if p == ("after",):
        return _AFTER, _AFTER
    y = int(p[0])
    if len(p) == 1:
        return year_start(y), year_start(y + 1) - 1
    m = int(p[1])
    first = date(y, m, 1).toordinal() - EPOCH_ORDINAL
    if len(p) == 2:
        ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
        return first, date(ny, nm, 1).toordinal() - EPOCH_ORDINAL - 1
    d = first + int(p[2]) - 1
    return d, d


DATES = Hierarchy(path=_date_path, span=_date_span, min_len=lambda p: 1)


def _clamp_day(instant: int) -> int:
    return min(max(instant // DAY_US, _BEFORE), _AFTER)


def _year_of_day(day: int) -> int:
    if day <= _BEFORE:
        return DATE_MIN_YEAR - 1
    if day >= _AFTER:
        return DATE_MAX_YEAR + 1
    return date.fromordinal(day + EPOCH_ORDINAL).year


LONG = ("x", "long")


def _year_labels(year: int) -> tuple[str, str, str]:
    """A year, its decade and its century (``2019``, ``201x``, ``20xx``): the labels of the
    ``o`` / ``s`` tokens, so that a query's run of years needs few tokens."""
    return str(year), f"{year // 10}x", f"{year // 100}xx"


def _year_cover(first: int, last: int) -> list[str]:
    """Minimal aligned centuries, decades and years covering ``first..last``."""
    out: list[str] = []
    y = first
    while y <= last:
        if y % 100 == 0 and y + 99 <= last:
            out.append(f"{y // 100}xx")
            y += 100
        elif y % 10 == 0 and y + 9 <= last:
            out.append(f"{y // 10}x")
            y += 10
        else:
            out.append(str(y))
            y += 1
    return out


def day_span(low: int, high: int) -> tuple[int, int]:
    """The first and last (clamped) days of a bounded date value ``[low, high)``.

    They alone decide :func:`date_index` of a bounded value: two values with the same span
    (every instant of one day, say) get the same tokens, which lets the indexer share them.
    """
    return _clamp_day(low), _clamp_day(max(high, low + 1) - 1)


def date_index(low: int | None, high: int | None) -> BucketTokens:
    """Tokens of a date value ``[low, high)`` (None = open end).

    Special cases, each matched by a query-side counterpart in :func:`date_cover`:

    - open-ended (``Period`` without ``end``) starting in year Y: the buckets of the rest of
      year Y, plus ``o:Y`` ("runs from Y onwards", also by decade and century: ``o:201x``,
      ``o:20xx``) and the ``after`` bucket;
    - open-started (no ``start``) ending in year Y: the buckets of year Y up to the end,
      plus ``s:Y`` (and decade, century) and the ``before`` bucket;
    - more than :data:`DATE_CAP` buckets, or open on both ends: the single token ``x:long``,
      which every date query includes (such values are always candidates).
    """
    if low is None and high is None:
        return BucketTokens(frozenset(), frozenset(), frozenset({LONG}))
    extra: set[tuple[str, str]] = set()
    buckets: list[Path]
    if high is None:
        assert low is not None
        first = _clamp_day(low)
        if first <= _BEFORE:
            return BucketTokens(frozenset(), frozenset(), frozenset({LONG}))
        if first >= _AFTER:
            buckets = [("after",)]
        else:
            year = _year_of_day(first)
            last = min(year_start(year + 1) - 1, _D_MAX)
            buckets = [*(decompose(DATES, first, last) or []), ("after",)]
            extra.update(("o", label) for label in _year_labels(year))
    elif low is None:
        last = _clamp_day(high - 1)
        if last >= _AFTER:
            return BucketTokens(frozenset(), frozenset(), frozenset({LONG}))
        if last <= _BEFORE:
            buckets = [("before",)]
        else:
            year = _year_of_day(last)
            first = max(year_start(year), _D_MIN)
            buckets = [("before",), *(decompose(DATES, first, last) or [])]
            extra.update(("s", label) for label in _year_labels(year))
    else:
        found = _finest_range(DATES, *day_span(low, high), DATE_CAP)
        if found is None:
            return BucketTokens(frozenset(), frozenset(), frozenset({LONG}))
        buckets = found
    touch, full = _index_tokens(DATES, buckets)
    return BucketTokens(frozenset(touch), frozenset(full), frozenset(extra))


def date_cover(
    regions: Iterable[tuple[int | None, int | None]], open_values: bool = True
) -> BucketTokens:
    """Query tokens: a value intersecting one of the regions ``[low, high)`` has one of them.

    ``open_values=False`` leaves out the tokens that only find open-ended or open-started
    values (correct for ``eq``, which such values can never satisfy).
    """
    touch: set[str] = set()
    full: set[str] = set()
    extra: set[tuple[str, str]] = {LONG}
    for low, high in regions:
        first = _BEFORE if low is None else _clamp_day(low)
        last = _AFTER if high is None else _clamp_day(high - 1)
        if low is not None and high is not None and high <= low:
            continue
        t, f = _query_tokens(DATES, decompose(DATES, first, last) or [])
        touch |= t
        full |= f
        if open_values:
            # open-ended from year Y reaches every day from Y+1 on; open-started until Y
            # reaches every day before Y.
            last_open = min(_year_of_day(last), DATE_MAX_YEAR + 1) - 1
            extra.update(("o", label) for label in _year_cover(DATE_MIN_YEAR, last_open))
            first_open = max(_year_of_day(first) + 1, DATE_MIN_YEAR)
            extra.update(("s", label) for label in _year_cover(first_open, DATE_MAX_YEAR))
    return BucketTokens(frozenset(touch), frozenset(full), frozenset(extra))


# ------------------------------------------------------------------ numbers

NUMBER_EXP_MIN = -9
"""Magnitudes below 10**-9 share the ``0`` bucket with zero."""
NUMBER_EXP_MAX = 15
"""Magnitudes from 10**16 on share the ``+inf`` / ``-inf`` buckets."""

_PER_EXP = 90
_N_POS = (NUMBER_EXP_MAX - NUMBER_EXP_MIN + 1) * _PER_EXP
_N_MIN = -(_N_POS + 1)
_N_MAX = _N_POS + 1
_TINY = Decimal(10) ** NUMBER_EXP_MIN


@lru_cache(maxsize=1 << 12)
def _number_path(i: int) -> Path:
    if i == 0:
        return ("0",)
    if i >= _N_MAX:
        return ("+inf",)
    if i <= _N_MIN:
        return ("-inf",)
    k = abs(i) - 1
    exp = NUMBER_EXP_MIN + k // _PER_EXP
    mm = 10 + k % _PER_EXP
    return ("+" if i > 0 else "-", exp, mm // 10, mm % 10)


@lru_cache(maxsize=1 << 12)
def _number_span(p: Path) -> tuple[int, int]:
    if len(p) == 1:
        i = {"0": 0, "+inf": _N_MAX, "-inf": _N_MIN}[str(p[0])]
        return i, i
    base = (int(p[1]) - NUMBER_EXP_MIN) * _PER_EXP + 1
    if len(p) == 2:
        lo, hi = base, base + _PER_EXP - 1
    elif len(p) == 3:
        lo = base + (int(p[2]) - 1) * 10
        hi = lo + 9
    else:
        lo = hi = base + (int(p[2]) * 10 + int(p[3]) - 10)
    return (lo, hi) if p[0] == "+" else (-hi, -lo)


NUMBERS = Hierarchy(path=_number_path, span=_number_span, min_len=lambda p: 1 if len(p) == 1 else 2)


def number_position(x: Decimal) -> int:
    """Finest number bucket (an integer, ordered like the numbers) of ``x``."""
    if not x.is_finite():
        return _N_MAX if x > 0 else _N_MIN
    mag = abs(x)
    if mag < _TINY:
        return 0
    exp = mag.adjusted()
    if exp > NUMBER_EXP_MAX:
        return _N_MAX if x > 0 else _N_MIN
    mm = int(mag.scaleb(1 - exp))  # two leading digits, 10..99
    i = (exp - NUMBER_EXP_MIN) * _PER_EXP + (mm - 10) + 1
    return i if x > 0 else -i


def number_index(low: Decimal | None, high: Decimal | None) -> BucketTokens:
    """Tokens of a number value ``[low, high]`` (a point when equal; None = unbounded)."""
    first = _N_MIN if low is None else number_position(low)
    last = _N_MAX if high is None else number_position(high)
    if last < first:
        first, last = last, first
    touch, full = _index_tokens(NUMBERS, _finest_range(NUMBERS, first, last, None) or [])
    return BucketTokens(frozenset(touch), frozenset(full))


def number_cover(regions: Iterable[tuple[Decimal | None, Decimal | None]]) -> BucketTokens:
    """Query tokens for values meeting one of the closed regions ``[low, high]``."""
    touch: set[str] = set()
    full: set[str] = set()
    for low, high in regions:
        first = _N_MIN if low is None else number_position(low)
        last = _N_MAX if high is None else number_position(high)
        if last < first:
            continue
        t, f = _query_tokens(NUMBERS, decompose(NUMBERS, first, last) or [])
        touch |= t
        full |= f
    return BucketTokens(frozenset(touch), frozenset(full))
