"""Invariant 7 for the search package: hostile or malformed input never crashes it.

Extraction runs on every stored resource and the post-filter on every candidate, so both
must survive any JSON; the parser must turn any query string into a plan or a SearchError.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from search_helpers import HmacTokens

from hdsvault.records.search.errors import SearchError
from hdsvault.records.search.extract import extract
from hdsvault.records.search.query import parse_search
from hdsvault.records.search.tokens import index_inputs, index_tokens, pad_tokens

ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1.5,
    1e308,
    "",
    "x",
    "2020-13-45",
    "#",
    "Patient/",
    [],
    [None],
    {},
    {"reference": 5},
    {"coding": "x"},
    {"start": 2020},
    {"value": "NaN"},
    [[1]],
    {"low": {}},
    float("nan"),
    "9999-12-31T23:59:59Z",
    "0001-01-01",
    {"event": [None, 3, "2020"]},
]


def _mutate(x: Any, rnd: random.Random) -> Any:
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            out[k] = rnd.choice(ODD_VALUES) if rnd.random() < 0.15 else _mutate(v, rnd)
        return out
    if isinstance(x, list):
        return [_mutate(v, rnd) for v in x]
    return x


def test_mutated_synthea_resources_never_crash(
    synthea: list[dict[str, Any]], tokens: HmacTokens
) -> None:
    rnd = random.Random(3)
    for r in synthea[::40]:
        bad = _mutate(copy.deepcopy(r), rnd)
        bad["resourceType"] = r["resourceType"]
        values = extract(bad)
        index_inputs(r["resourceType"], values)
        for code in list(values)[:5]:
            plan = parse_search(r["resourceType"], [(code + ":missing", "false")])
            assert plan.matches(bad)


def test_non_resources() -> None:
    assert extract({}) == {}
    assert extract({"resourceType": 5}) == {}
    assert extract({"resourceType": "NoSuchType", "id": "x"}) == {}


def test_random_queries_parse_or_raise_search_error() -> None:
    rnd = random.Random(11)
    names = [
        "name",
        "birthdate",
        "code",
        "subject",
        "value-quantity",
        "_count",
        "_sort",
        "date",
        "identifier",
        "family:exact",
        "code:text",
        "subject.name",
        "_include",
        "x",
        "_id",
        "_lastUpdated",
        "component-code-value-quantity",
        "gender:not",
    ]
    chars = "ab|,$\\:.-01eg lt2020T:Z+é/"
    for _ in range(2000):
        rt = rnd.choice(["Patient", "Observation"])
        value = "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 12)))
        try:
            plan = parse_search(rt, [(rnd.choice(names), value)])
        except SearchError as e:
            assert str(e).startswith(e.param + ": ")
            continue
        plan.matches({"resourceType": rt})


def test_index_tokens_and_padding(tokens: HmacTokens) -> None:
    res = {"resourceType": "Patient", "gender": "male", "birthDate": "1970-01-01"}
    toks = index_tokens(res, tokens)
    assert len(toks) == len(index_inputs("Patient", extract(res)))
    padded = pad_tokens(toks, 16)
    assert toks <= padded and len(padded) % 16 == 0
    assert len(pad_tokens(set(), 16)) == 16
