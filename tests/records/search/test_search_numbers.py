"""Number and quantity search: no false negatives over a grid, exact post-filter.

Oracle: FHIR R4 number table, with ``fractions.Fraction`` (independent of the package's
Decimal code): ``eq``/``ne`` use the implicit range of the written precision, the others
compare exactly; ``ap`` is within 10 % (at least the precision).
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Any

import pytest
from search_helpers import HmacTokens, candidate, stored_tokens

from hdsvault.records.search.errors import SearchError
from hdsvault.records.search.query import parse_search

PREFIXES = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


def parse(text: str) -> tuple[Fraction, Fraction]:
    """(value, half unit of the last written digit)."""
    mant, _, exp = text.lower().partition("e")
    e = int(exp) if exp else 0
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    value = Fraction(mant) * Fraction(10) ** e
    return value, Fraction(10) ** (e - decimals) / 2


Bound = Fraction | None


def oracle(prefix: str, query: str, lo: Bound, hi: Bound) -> bool:
    q, half = parse(query)
    contained = lo is not None and hi is not None and q - half <= lo and hi < q + half
    spread = max(abs(q) / 10, half)
    return {
        "eq": contained,
        "ne": not contained,
        "gt": hi is None or hi > q,
        "lt": lo is None or lo < q,
        "ge": hi is None or hi >= q,
        "le": lo is None or lo <= q,
        "sa": lo is not None and lo > q,
        "eb": hi is not None and hi < q,
        "ap": (lo is None or lo <= q + spread) and (hi is None or hi >= q - spread),
    }[prefix]


POINTS = [
    "-1000",
    "-99.5",
    "-1",
    "-0.001",
    "0",
    "1e-12",
    "0.5",
    "1",
    "9.99",
    "10",
    "99.4",
    "99.5",
    "99.95",
    "100",
    "100.4",
    "100.5",
    "101",
    "150",
    "5.25",
    "1e20",
    "-1e20",
    "0.000123",
    "123456789.125",
]
RANGES: list[tuple[str | None, str | None]] = [
    ("99", "101"),
    ("99.6", "100.4"),
    ("-5", "5"),
    (None, "100"),
    ("100", None),
    ("0.5", "0.5"),
    ("1e-3", "1e5"),
]
QUERIES = [
    "100",
    "100.0",
    "1e2",
    "-1",
    "0",
    "0.5",
    "99.5",
    "1.5e-10",
    "5.25",
    "-99.5",
    "1e20",
    "0.00012",
]


def risk(value: str | tuple[str | None, str | None]) -> dict[str, Any]:
    pred: dict[str, Any] = {}
    if isinstance(value, str):
        pred["probabilityDecimal"] = _json_number(value)
    else:
        rng: dict[str, Any] = {}
        if value[0] is not None:
            rng["low"] = {"value": _json_number(value[0])}
        if value[1] is not None:
            rng["high"] = {"value": _json_number(value[1])}
        pred["probabilityRange"] = rng
    return {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": "Patient/p"},
        "prediction": [pred],
    }


def _json_number(text: str) -> Any:
    from decimal import Decimal

    return Decimal(text)


def bounds(value: str | tuple[str | None, str | None]) -> tuple[Bound, Bound]:
    if isinstance(value, str):
        v = Fraction(value)
        return v, v
    lo = Fraction(value[0]) if value[0] is not None else None
    hi = Fraction(value[1]) if value[1] is not None else None
    return lo, hi


VALUES: list[str | tuple[str | None, str | None]] = [*POINTS, *RANGES]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_number_grid(prefix: str, tokens: HmacTokens) -> None:
    stored = [stored_tokens(risk(v), tokens) for v in VALUES]
    hits = 0
    for query in QUERIES:
        plan = parse_search("RiskAssessment", [("probability", prefix + query)]).params[0]
        for value, toks in zip(VALUES, stored, strict=True):
            expected = oracle(prefix, query, *bounds(value))
            assert plan.matches(risk(value)) == expected, (prefix, query, value)
            if expected:
                hits += 1
                assert candidate(plan, toks, tokens), ("false negative", prefix, query, value)
    assert hits > 0


def test_number_random(tokens: HmacTokens) -> None:
    """Random floats as JSON gives them (the decimal text is ``repr(float)``)."""
    rnd = random.Random(20260501)
    for _ in range(600):
        value = float(
            f"{rnd.randint(-9999, 9999)}.{rnd.randint(0, 999):03d}e{rnd.randint(-12, 12)}"
        )
        prefix = rnd.choice(PREFIXES)
        query = f"{rnd.randint(-999, 999)}.{rnd.randint(0, 99):02d}e{rnd.randint(-12, 12)}"
        if rnd.random() < 0.2:  # sometimes search the value itself, at its full precision
            query = repr(value)
        res = risk(repr(value))
        res["prediction"][0]["probabilityDecimal"] = value
        exact = Fraction(repr(value))
        plan = parse_search("RiskAssessment", [("probability", prefix + query)]).params[0]
        expected = oracle(prefix, query, exact, exact)
        assert plan.matches(res) == expected, (prefix, query, value)
        if expected:
            assert candidate(plan, stored_tokens(res, tokens), tokens), (prefix, query, value)


def observation(value: float, system: str | None, code: str | None, unit: str | None) -> Any:
    q: dict[str, Any] = {"value": value}
    for k, v in (("system", system), ("code", code), ("unit", unit)):
        if v is not None:
            q[k] = v
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": q,
    }


UCUM = "http://unitsofmeasure.org"


@pytest.mark.parametrize(
    ("query", "value", "expected"),
    [
        ("5.4|http://unitsofmeasure.org|mg", observation(5.4, UCUM, "mg", "mg"), True),
        ("5.4|http://unitsofmeasure.org|mg", observation(5.4, UCUM, "g", "g"), False),
        ("5.4|http://unitsofmeasure.org|mg", observation(5.4, None, "mg", "mg"), False),
        ("5.4||mg", observation(5.4, UCUM, "mg", "milligram"), True),
        ("5.4||milligram", observation(5.4, UCUM, "mg", "milligram"), True),
        ("5.4||mg", observation(5.4, None, None, "mg"), True),
        ("5.4", observation(5.4, UCUM, "mg", "mg"), True),
        ("5.4", observation(5.46, UCUM, "mg", "mg"), False),
        ("gt5|http://unitsofmeasure.org|mg", observation(5.4, UCUM, "mg", "mg"), True),
        ("lt5|http://unitsofmeasure.org|mg", observation(5.4, UCUM, "mg", "mg"), False),
        ("ap5|http://unitsofmeasure.org|mg", observation(5.4, UCUM, "mg", "mg"), True),
        ("ap5||kg", observation(5.4, UCUM, "mg", "mg"), False),
    ],
)
def test_quantity_units(query: str, value: Any, expected: bool, tokens: HmacTokens) -> None:
    plan = parse_search("Observation", [("value-quantity", query)]).params[0]
    assert plan.matches(value) is expected
    if expected:
        assert candidate(plan, stored_tokens(value, tokens), tokens)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_quantity_ranges(prefix: str, tokens: HmacTokens) -> None:
    def questionnaire(lo: str | None, hi: str | None) -> Any:
        rng: dict[str, Any] = {}
        if lo is not None:
            rng["low"] = {"value": float(lo), "system": UCUM, "code": "a"}
        if hi is not None:
            rng["high"] = {"value": float(hi), "system": UCUM, "code": "a"}
        return {
            "resourceType": "Questionnaire",
            "status": "active",
            "useContext": [{"code": {"code": "age"}, "valueRange": rng}],
        }

    for lo, hi in RANGES:
        res = questionnaire(lo, hi)
        toks = stored_tokens(res, tokens)
        for query in ["100", "0.5", "-1", "1e2"]:
            for unit in ("", "|http://unitsofmeasure.org|a"):
                plan = parse_search(
                    "Questionnaire", [("context-quantity", prefix + query + unit)]
                ).params[0]
                expected = oracle(prefix, query, *bounds((lo, hi)))
                assert plan.matches(res) == expected, (prefix, query, lo, hi)
                if expected:
                    assert candidate(plan, toks, tokens), (prefix, query, lo, hi)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("probability", "gt"),
        ("probability", "abc"),
        ("probability", "1,2,x"),
        ("probability", "1e99999"),
        ("probability", "0x10"),
    ],
)
def test_garbage_numbers(param: str, value: str) -> None:
    with pytest.raises(SearchError) as e:
        parse_search("RiskAssessment", [(param, value)])
    assert e.value.param == param


@pytest.mark.parametrize("value", ["5|mg", "5|a|b|c", "gt|http://u|mg", "5|http://u|"])
def test_garbage_quantities(value: str) -> None:
    with pytest.raises(SearchError) as e:
        parse_search("Observation", [("value-quantity", value)])
    assert e.value.param == "value-quantity"
