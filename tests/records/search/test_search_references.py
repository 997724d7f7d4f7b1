"""Reference search forms, :identifier, chaining parse/resolve, _include/_revinclude parse."""

from __future__ import annotations

from typing import Any

import pytest
from search_helpers import HmacTokens, candidate, stored_tokens

from hdsvault.records.search.chaining import Include
from hdsvault.records.search.errors import SearchError
from hdsvault.records.search.extract import extract
from hdsvault.records.search.query import parse_search
from hdsvault.records.search.tokens import index_inputs
from hdsvault.records.search.values import ReferenceValue

BASE = "https://fhir.example.org/fhir"


def obs(ref: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": ref,
        **extra,
    }


def answer(pairs: list[tuple[str, str]], res: dict[str, Any], fn: HmacTokens) -> bool:
    plan = parse_search(res["resourceType"], pairs, base_urls=[BASE])
    exact = plan.matches(res)
    if exact:
        inputs = index_inputs(res["resourceType"], extract(res, [BASE]))
        stored = {fn.token(i.field, i.value) for i in inputs}
        assert all(candidate(p, stored, fn) for p in plan.params), pairs
    return exact


RELATIVE = obs({"reference": "Patient/123"})
ABSOLUTE = obs({"reference": f"{BASE}/Patient/123"})
VERSIONED = obs({"reference": "Patient/123/_history/7"})
FOREIGN = obs({"reference": "https://other.example/fhir/Patient/123"})
CONTAINED = obs({"reference": "#p1"}, contained=[{"resourceType": "Patient", "id": "p1"}])
LOGICAL = obs({"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1840575"}})


@pytest.mark.parametrize("res", [RELATIVE, ABSOLUTE, VERSIONED])
@pytest.mark.parametrize(
    "query",
    [
        ("subject", "Patient/123"),
        ("subject", "123"),
        ("subject:Patient", "123"),
        ("patient", "123"),
        ("subject", f"{BASE}/Patient/123"),
        ("patient", "Patient/123"),
    ],
)
def test_local_reference_forms(res: Any, query: tuple[str, str], tokens: HmacTokens) -> None:
    assert answer([query], res, tokens)


def test_reference_normal_form() -> None:
    for res in (RELATIVE, ABSOLUTE, VERSIONED):
        (v,) = extract(res, [BASE])["subject"]
        assert isinstance(v, ReferenceValue)
        assert v.local == "Patient/123"
        assert v.type == "Patient"
    (v,) = extract(FOREIGN, [BASE])["subject"]
    assert isinstance(v, ReferenceValue)
    assert (v.local, v.url) == (None, "https://other.example/fhir/Patient/123")
    (v,) = extract(CONTAINED)["subject"]
    assert isinstance(v, ReferenceValue)
    assert (v.local, v.type) == (None, "Patient")
    assert "patient" in extract(CONTAINED)  # resolve() is Patient works on contained too


def test_reference_mismatches(tokens: HmacTokens) -> None:
    assert not answer([("subject", "Patient/124")], RELATIVE, tokens)
    assert not answer([("subject", "Group/123")], RELATIVE, tokens)
    assert not answer([("subject", "Patient/123")], FOREIGN, tokens)
    assert answer([("subject", "https://other.example/fhir/Patient/123")], FOREIGN, tokens)
    assert not answer([("subject:Group", "123")], RELATIVE, tokens)


def test_identifier_modifier(tokens: HmacTokens) -> None:
    assert answer([("subject:identifier", "urn:oid:1.2.250.1.213.1.4.8|1840575")], LOGICAL, tokens)
    assert answer([("subject:identifier", "1840575")], LOGICAL, tokens)
    assert not answer([("subject:identifier", "urn:x|1840575")], LOGICAL, tokens)
    assert not answer([("subject", "1840575")], LOGICAL, tokens)


def test_canonical_references(tokens: HmacTokens) -> None:
    qr = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": "http://acme.example/Questionnaire/phq9|2.0",
    }
    assert answer([("questionnaire", "http://acme.example/Questionnaire/phq9")], qr, tokens)
    assert answer([("questionnaire", "http://acme.example/Questionnaire/phq9|2.0")], qr, tokens)
    assert not answer([("questionnaire", "http://acme.example/Questionnaire/phq9|1.0")], qr, tokens)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("subject", "Patient/"),
        ("subject", "Foo/1"),
        ("subject", "Medication/1"),
        ("subject:Patient", "Group/1"),
        ("subject:Medication", "1"),
        ("subject", "a b"),
        ("subject:above", "Patient/1"),
        ("subject", "#p1"),
    ],
)
def test_bad_references(name: str, value: str) -> None:
    with pytest.raises(SearchError) as e:
        parse_search("Observation", [(name, value)])
    assert e.value.param == name


def test_chain_parse() -> None:
    plan = parse_search(
        "Observation", [("subject.identifier", "urn:x|42"), ("subject:Patient.name", "dupont")]
    )
    c1, c2 = plan.chains
    assert (c1.reference, c1.inner, c1.value) == ("subject", "identifier", "urn:x|42")
    assert set(c1.target_types) >= {"Patient", "Group", "Device", "Location"}
    assert (c2.reference, c2.target_types, c2.inner) == ("subject", ("Patient",), "name")
    assert c2.inner_requests() == [("Patient", [("name", "dupont")])]
    plan2 = parse_search("Observation", [("subject.name:exact", "Dupont")])
    (c3,) = plan2.chains
    assert c3.inner == "name:exact"
    assert c3.target_types == ("Patient", "Location")  # Group, Device have no 'name'
    with pytest.raises(SearchError, match=r"^subject\.birthdate: "):
        parse_search("Observation", [("subject.birthdate", "notadate")])


def test_chain_resolve(tokens: HmacTokens) -> None:
    plan = parse_search("Observation", [("subject:Patient.name", "dupont"), ("status", "final")])
    resolved = plan.resolve_chains([{"Patient": ["123", "456"]}])
    assert resolved.chains == ()
    res = RELATIVE
    assert resolved.matches(res)
    stored = stored_tokens(res, tokens)
    assert all(candidate(p, stored, tokens) for p in resolved.params)
    empty = plan.resolve_chains([{}])
    assert not empty.matches(res)


@pytest.mark.parametrize(
    "name",
    [
        "subject.foo",
        "status.code",
        "subject:Patient.name.family",
        "subject:Foo.name",
        "subject:Medication.code",
        "subject.",
    ],
)
def test_bad_chains(name: str) -> None:
    with pytest.raises(SearchError) as e:
        parse_search("Observation", [(name, "x")])
    assert e.value.param == name


def test_include_parse() -> None:
    plan = parse_search(
        "Observation",
        [
            ("_include", "Observation:subject"),
            ("_include", "Observation:subject:Patient"),
            ("_include:iterate", "Patient:organization"),
            ("_revinclude", "Provenance:target"),
            ("_include", "*"),
        ],
    )
    inc = plan.result.include
    assert inc[0] == Include("Observation", "subject", None, False, False)
    assert inc[1] == Include("Observation", "subject", "Patient", False, False)
    assert inc[2] == Include("Patient", "organization", None, False, True)
    assert inc[3] == Include("Observation", None, None, False, False)
    assert plan.result.revinclude == (Include("Provenance", "target", None, True, False),)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("_include", "Observation"),
        ("_include", "Observation:status"),
        ("_include", "Patient:organization"),
        ("_include", "Observation:subject:Medication"),
        ("_revinclude", "Encounter:patient"),
        ("_include:bogus", "Observation:subject"),
        ("_include", "Foo:bar"),
    ],
)
def test_bad_includes(name: str, value: str) -> None:
    with pytest.raises(SearchError) as e:
        parse_search("Observation", [(name, value)])
    assert e.value.param == name


def test_bundle_first_entry(tokens: HmacTokens) -> None:
    doc = {
        "resourceType": "Bundle",
        "type": "document",
        "identifier": {"value": "d1"},
        "entry": [
            {"resource": {"resourceType": "Composition", "id": "c1", "status": "final"}},
            {"resource": {"resourceType": "Patient", "id": "p1"}},
        ],
    }
    (v,) = extract(doc)["composition"]
    assert v == ReferenceValue(local="Composition/c1", type="Composition")
    assert answer([("composition", "Composition/c1")], doc, tokens)
    assert not answer([("composition", "Composition/p1")], doc, tokens)
