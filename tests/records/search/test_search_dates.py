"""Date search: for every prefix and precision, tokens never miss and the filter is exact.

The oracle below re-derives FHIR R4 date semantics with ``datetime`` (implicit ranges from
precision, §3.1.1.4.2 prefix table) independently of the package's integer arithmetic.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from search_helpers import HmacTokens, candidate, stored_tokens

from hdsvault.records.search.errors import SearchError
from hdsvault.records.search.query import parse_search

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PREFIXES = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


def oracle_range(text: str) -> tuple[datetime, datetime]:
    """[low, high) of a FHIR date/dateTime, by precision (no zone = UTC)."""
    if len(text) == 4:
        y = int(text)
        return datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC)
    if len(text) == 7:
        y, m = int(text[:4]), int(text[5:7])
        nxt = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
        return datetime(y, m, 1, tzinfo=UTC), nxt
    if len(text) == 10:
        d = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return d, d + timedelta(days=1)
    d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    time_part = text.split("T")[1]
    step = timedelta(minutes=1) if time_part.count(":") == 1 else timedelta(seconds=1)
    if "." in time_part:
        digits = len(time_part.split(".")[1].rstrip("Z").split("+")[0].split("-")[0])
        step = timedelta(microseconds=10 ** (6 - digits))
    return d.astimezone(UTC), d.astimezone(UTC) + step


Bound = datetime | None


def oracle_value(value: Any) -> tuple[Bound, Bound]:
    if isinstance(value, str):
        return oracle_range(value)
    start = oracle_range(value["start"])[0] if "start" in value else None
    end = oracle_range(value["end"])[1] if "end" in value else None
    return start, end


def oracle(prefix: str, query: str, vlo: Bound, vhi: Bound) -> bool:
    """FHIR R4 prefix table on ranges; None is an open end (ongoing / unknown start)."""
    qlo, qhi = oracle_range(query)
    contained = vlo is not None and vhi is not None and qlo <= vlo and vhi <= qhi
    after = vhi is None or vhi > qhi  # the range above the search value intersects
    before = vlo is None or vlo < qlo  # the range below the search value intersects
    return {
        "eq": contained,
        "ne": not contained,
        "gt": after,
        "lt": before,
        "ge": after or contained,
        "le": before or contained,
        "sa": vlo is not None and vlo >= qhi,
        "eb": vhi is not None and vhi <= qlo,
        "ap": _ap(qlo, qhi, vlo, vhi),
    }[prefix]


def _ap(qlo: datetime, qhi: datetime, vlo: Bound, vhi: Bound) -> bool:
    w = abs(NOW - qlo) / 10
    w = timedelta(microseconds=w // timedelta(microseconds=1))
    lo, hi = qlo - w, qhi + w
    return (vlo is None or vlo < hi) and (vhi is None or vhi > lo)


POINTS = [
    "1799-12-31",
    "1800",
    "1950-06-01",
    "2019",
    "2019-12-31",
    "2020",
    "2020-02",
    "2020-03",
    "2020-03-14",
    "2020-03-15",
    "2020-03-16",
    "2020-03-31",
    "2020-03-15T00:00:00Z",
    "2020-03-15T10:30:00+02:00",
    "2020-03-15T23:59:59Z",
    "2020-03-15T23:30:00-05:00",
    "2020-12-31T23:59:59.999Z",
    "2199-12-31",
    "2200-01-01",
    "2024-06-01T12:00:00Z",
]
PERIODS = [
    {"start": "2020-03-01", "end": "2020-04-15"},
    {"start": "2020-03-15T10:00:00Z", "end": "2020-03-15T11:00:00Z"},
    {"start": "2020-03-15T10:00:00Z"},
    {"start": "2019-07-14"},
    {"start": "2021"},
    {"end": "2020-03-15"},
    {"end": "2019-02"},
    {"start": "2010", "end": "2030"},
    {"start": "1700-01-01", "end": "2020"},
    {"start": "1750"},
    {"end": "2250"},
    {"start": "2020-01-02", "end": "2020-12-30"},
    {"start": "2020", "end": "2020"},
]
QUERIES = [
    "1799",
    "2019",
    "2020",
    "2020-03",
    "2020-03-15",
    "2020-03-16",
    "2020-03-15T10:30",
    "2020-03-15T10:30:00Z",
    "2020-03-15T12:00:00+02:00",
    "2021-01-01",
    "2199",
    "2200-05",
    "2024-06-01",
]


def observation(value: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "code": {"text": "x"},
    }
    if isinstance(value, str):
        res["effectiveDateTime"] = value
    else:
        res["effectivePeriod"] = value
    return res


VALUES = POINTS + PERIODS


@pytest.mark.parametrize("prefix", PREFIXES)
def test_no_false_negative_and_exact(prefix: str, tokens: HmacTokens) -> None:
    stored = [stored_tokens(observation(v), tokens) for v in VALUES]
    checked = hits = extra = 0
    for query in QUERIES:
        plan = parse_search("Observation", [("date", prefix + query)], now=NOW).params[0]
        for value, toks in zip(VALUES, stored, strict=True):
            res = observation(value)
            expected = oracle(prefix, query, *oracle_value(value))
            assert plan.matches(res) == expected, (prefix, query, value)
            is_candidate = candidate(plan, toks, tokens)
            if expected:
                assert is_candidate, ("false negative", prefix, query, value)
            checked += 1
            hits += expected
            extra += is_candidate and not expected
    assert checked == len(QUERIES) * len(VALUES)
    assert 0 < hits < checked
    # candidates are a superset, but not everything: buckets must still narrow the search
    assert extra < 0.5 * (checked - hits), (prefix, extra)


def test_precision_narrows_candidates(tokens: HmacTokens) -> None:
    plan = parse_search("Patient", [("birthdate", "1970-01-01")]).params[0]
    same = {"resourceType": "Patient", "birthDate": "1970-01-01"}
    other_day = {"resourceType": "Patient", "birthDate": "1970-01-02"}
    other_year = {"resourceType": "Patient", "birthDate": "1985-03-02"}
    assert candidate(plan, stored_tokens(same, tokens), tokens)
    assert not candidate(plan, stored_tokens(other_day, tokens), tokens)
    assert not candidate(plan, stored_tokens(other_year, tokens), tokens)


def test_timing_and_instant_values(tokens: HmacTokens) -> None:
    timing = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "effectiveTiming": {"event": ["2021-05-01T08:00:00Z", "2021-05-03T08:00:00Z"]},
    }
    instant = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "effectiveInstant": "2021-05-02T08:00:00.123Z",
    }
    for q, want_timing, want_instant in [
        ("2021-05-02", False, True),
        ("ap2021-05-02", True, True),
        ("gt2021-05-02", True, False),
        ("2021-05", True, True),
    ]:
        plan = parse_search("Observation", [("date", q)], now=NOW).params[0]
        assert plan.matches(timing) is want_timing, q
        assert plan.matches(instant) is want_instant, q
        for res, want in ((timing, want_timing), (instant, want_instant)):
            if want:
                assert candidate(plan, stored_tokens(res, tokens), tokens), q


def test_long_and_open_values_stay_small(tokens: HmacTokens) -> None:
    from hdsvault.records.search.buckets import date_index
    from hdsvault.records.search.dates import parse_date

    lo = parse_date("1950-06-15")
    assert lo is not None
    open_ended = date_index(lo[0], None)
    assert len(open_ended.touch) + len(open_ended.full) + len(open_ended.extra) < 64
    hi = parse_date("2020-01-01")
    assert hi is not None
    long = date_index(lo[0], hi[1])
    assert long.extra == frozenset({("x", "long")})


@pytest.mark.parametrize(
    "value",
    [
        "notadate",
        "2020-13",
        "2020-02-30",
        "20",
        "2020-03-15T25:00",
        "gt",
        "ap",
        "2020/03/15",
        "eq",
        "xx2020",
    ],
)
def test_garbage_dates_name_the_parameter(value: str) -> None:
    with pytest.raises(SearchError) as e:
        parse_search("Patient", [("birthdate", value)])
    assert e.value.param == "birthdate"
    assert str(e.value).startswith("birthdate: ")


def test_all_prefix_precision_combinations_parse() -> None:
    for prefix, q in itertools.product(PREFIXES, QUERIES):
        plan = parse_search("Encounter", [("date", prefix + q)], now=NOW)
        assert plan.params[0].alternatives[0].prefix == prefix


def test_bounded_values_share_tokens_by_day_span() -> None:
    """The indexer's per-day-span cache gives each bounded value its own date_index tokens.

    Instants, day boundaries, sub-day ranges, multi-day and multi-year ranges, empty and
    reversed ranges, and values clamped to the ``before``/``after`` buckets.
    """
    from hdsvault.records.search.buckets import date_index
    from hdsvault.records.search.dates import DAY_US
    from hdsvault.records.search.tokens import bucket_inputs, value_inputs
    from hdsvault.records.search.values import DateValue

    def us(d: datetime) -> int:
        return int((d - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))

    base = us(datetime(2020, 3, 15, tzinfo=UTC))
    lows = [base, base - 1, base + 1, base + DAY_US - 1, base + 37 * 60_000_000]
    widths = [0, 1, 1_000_000, DAY_US - 1, DAY_US, DAY_US + 1, 40 * DAY_US, 3 * 366 * DAY_US]
    cases = [(lo, lo + w) for lo in lows for w in widths] + [
        (base, base - DAY_US),  # reversed
        (us(datetime(1700, 1, 1, tzinfo=UTC)), us(datetime(1700, 1, 2, tzinfo=UTC))),
        (us(datetime(1799, 12, 31, tzinfo=UTC)), us(datetime(1800, 1, 2, tzinfo=UTC))),
        (us(datetime(2199, 12, 31, tzinfo=UTC)), us(datetime(2200, 1, 2, tzinfo=UTC))),
        (us(datetime(2300, 5, 1, tzinfo=UTC)), us(datetime(2300, 5, 1, 1, tzinfo=UTC))),
    ]
    for low, high in cases:
        expected = bucket_inputs("Observation.date", date_index(low, high), "date")
        assert value_inputs("Observation.date", DateValue(low, high)) == expected, (low, high)
