"""Request parsing: unknown parameters, strictness, result parameters, clear columns, errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from search_helpers import HmacTokens, candidate, stored_tokens

from hdsvault.records.search.errors import SearchError
from hdsvault.records.search.extract import extract
from hdsvault.records.search.query import parse_search
from hdsvault.records.search.tokens import IndexOptions, index_inputs


def test_unknown_parameters_are_collected_or_rejected() -> None:
    plan = parse_search("Patient", [("foo", "1"), ("gender", "male"), ("bar:exact", "2")])
    assert plan.unknown == ("foo", "bar:exact")
    assert [p.code for p in plan.params] == ["gender"]
    with pytest.raises(SearchError) as e:
        parse_search("Patient", [("gender", "male"), ("foo", "1")], strict=True)
    assert e.value.param == "foo"


def test_result_parameters_are_separated() -> None:
    plan = parse_search(
        "Patient",
        [
            ("_count", "20"),
            ("_sort", "-birthdate,family,_lastUpdated"),
            ("_summary", "count"),
            ("_elements", "name,birthDate"),
            ("_total", "accurate"),
            ("_format", "json"),
            ("name", "dup"),
        ],
    )
    r = plan.result
    assert r.count == 20
    assert r.sort == (("birthdate", True), ("family", False), ("_lastUpdated", False))
    assert (r.summary, r.total, r.format) == ("count", "accurate", "json")
    assert r.elements == ("name", "birthDate")
    assert [p.code for p in plan.params] == ["name"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("_count", "-1"),
        ("_count", "abc"),
        ("_count", ""),
        ("_count", "1e3"),
        ("_sort", "nosuch"),
        ("_summary", "maybe"),
        ("_total", "all"),
        ("_elements", "name;drop"),
        ("_count:exact", "1"),
    ],
)
def test_bad_result_parameters(name: str, value: str) -> None:
    with pytest.raises(SearchError) as e:
        parse_search("Patient", [(name, value)])
    assert e.value.param == name
    assert str(e.value).startswith(name + ": ")


def test_count_given_twice() -> None:
    with pytest.raises(SearchError, match=r"^_count: given more than once"):
        parse_search("Patient", [("_count", "1"), ("_count", "2")])


def test_id_and_last_updated_are_clear_filters() -> None:
    plan = parse_search(
        "Patient",
        [("_id", "a1,b-2"), ("_lastUpdated", "ge2024-01-01"), ("_lastUpdated", "lt2024-02")],
    )
    assert plan.ids == (("a1", "b-2"),)
    assert plan.params == ()
    f1, f2 = plan.last_updated
    jan15 = int(datetime(2024, 1, 15, tzinfo=UTC).timestamp() * 1_000_000)
    dec31 = int(datetime(2023, 12, 31, 23, 59, tzinfo=UTC).timestamp() * 1_000_000)
    assert f1.matches(jan15) and f2.matches(jan15)
    assert not f1.matches(dec31)
    with pytest.raises(SearchError, match=r"^_id: "):
        parse_search("Patient", [("_id", "a b")])
    with pytest.raises(SearchError, match=r"^_lastUpdated: "):
        parse_search("Patient", [("_lastUpdated", "yesterday")])


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("birthdate", "notadate", "not a date"),
        ("birthdate", "gt", "without a value"),
        ("_count", "-1", "non-negative"),
        ("_has", "Observation:patient:code=1", "_has"),
        ("_text", "cancer", "not supported"),
        ("_content", "x", "not supported"),
        ("_query", "x", "not supported"),
        ("_filter", "x", "not supported"),
        ("near", "1|2|3|km", "not supported"),
        ("name:bogus", "x", "unknown modifier"),
    ],
)
def test_errors_name_the_parameter(name: str, value: str, words: str) -> None:
    rt = "Location" if name == "near" else "Patient"
    with pytest.raises(SearchError) as e:
        parse_search(rt, [(name, value)])
    assert e.value.param == name
    assert words in str(e.value)
    assert isinstance(e.value, ValueError)


def test_unknown_resource_type() -> None:
    with pytest.raises(SearchError):
        parse_search("Foo", [])


def test_common_parameters_everywhere(tokens: HmacTokens) -> None:
    res = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "meta": {
            "tag": [{"system": "urn:t", "code": "vip"}],
            "profile": ["http://example.org/StructureDefinition/enc|1.0"],
            "security": [{"system": "urn:s", "code": "R"}],
        },
    }
    for pairs in (
        [("_tag", "urn:t|vip")],
        [("_security", "R")],
        [("_profile", "http://example.org/StructureDefinition/enc")],
        [("_tag:not", "urn:t|other")],
    ):
        plan = parse_search("Encounter", pairs)
        assert plan.matches(res), pairs
        stored = stored_tokens(res, tokens)
        assert all(candidate(p, stored, tokens) for p in plan.params), pairs


def test_composite(tokens: HmacTokens) -> None:
    bp = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {
                    "value": 120,
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {
                    "value": 80,
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
        ],
    }
    stored = stored_tokens(bp, tokens)

    def check(value: str) -> bool:
        plan = parse_search("Observation", [("component-code-value-quantity", value)])
        exact = plan.matches(bp)
        if exact:
            assert candidate(plan.params[0], stored, tokens)
        return exact

    assert check("http://loinc.org|8480-6$gt100")
    assert check("8462-4$lt90")
    # both components exist, but not in the same element: no match
    assert not check("http://loinc.org|8462-4$gt100")
    assert not check("8480-6$lt100")
    with pytest.raises(SearchError, match=r"^component-code-value-quantity: .*'\$'"):
        parse_search("Observation", [("component-code-value-quantity", "8480-6")])
    with pytest.raises(SearchError, match=r"^component-code-value-quantity: "):
        parse_search("Observation", [("component-code-value-quantity", "a$1,b$2")])


def test_repeated_parameters_are_anded() -> None:
    plan = parse_search("Patient", [("name", "jean"), ("name", "dup")])
    assert len(plan.params) == 2
    res = {"resourceType": "Patient", "name": [{"family": "Dupont", "given": ["Jean"]}]}
    assert plan.matches(res)
    res2 = {"resourceType": "Patient", "name": [{"family": "Durand", "given": ["Jean"]}]}
    assert not plan.matches(res2)


def test_unindexed_parameters(tokens: HmacTokens) -> None:
    opts = IndexOptions(unindexed=frozenset({"Patient.gender"}))
    res = {"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01"}
    fields = {i.field for i in index_inputs("Patient", extract(res), opts)}
    assert not any(f.startswith("Patient.gender") for f in fields)
    assert "Patient.birthdate#d" in fields
    with pytest.raises(SearchError, match=r"^gender: not indexed"):
        parse_search("Patient", [("gender", "female")], options=opts)
    plan = parse_search("Patient", [("gender:not", "male"), ("birthdate", "1970")], options=opts)
    gender, birthdate = plan.params
    assert not gender.indexed and birthdate.indexed
    assert plan.matches(res)
    assert not plan.matches({**res, "gender": "male"})


def test_unindexed_token_groups_accept_every_row(tokens: HmacTokens) -> None:
    opts = IndexOptions(unindexed=frozenset({"Patient.gender"}))
    for value in ("gender", "gender:not"):
        plan = parse_search("Patient", [(value, "male"), ("birthdate", "1970")], options=opts)
        assert candidate(plan.params[0], set(), tokens)
