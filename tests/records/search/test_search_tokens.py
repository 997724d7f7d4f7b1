"""Token search: the four [system]|[code] forms, :not, :text, :of-type, :missing."""

from __future__ import annotations

from typing import Any

import pytest
from search_helpers import HmacTokens, candidate, stored_tokens

from hdsvault.records.search.errors import SearchError
from hdsvault.records.search.query import parse_search
from hdsvault.records.search.tokens import index_inputs

LOINC = "http://loinc.org"
OBS: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {
        "coding": [
            {"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"},
            {"code": "local-sbp"},
        ],
        "text": "Pression artérielle systolique",
    },
}
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "gender": "female",
    "active": True,
    "identifier": [
        {
            "system": "urn:oid:1.2.250.1.213.1.4.8",
            "value": "1840575123456",
            "type": {
                "coding": [
                    {
                        "system": "http://interopsante.org/fhir/CodeSystem/fr-v2-0203",
                        "code": "INS-NIR",
                    }
                ],
                "text": "NIR",
            },
        },
        {"system": "http://hospital.example/mrn", "value": "MRN-42"},
    ],
    "telecom": [{"system": "phone", "value": "+33 1 23 45 67 89"}],
}


def answer(rt: str, pairs: list[tuple[str, str]], res: dict[str, Any], fn: HmacTokens) -> bool:
    """Exact answer of an AND of parameters; every exact match must be a candidate."""
    plan = parse_search(rt, pairs)
    exact = plan.matches(res)
    stored = stored_tokens(res, fn)
    db = all(candidate(p, stored, fn) for p in plan.params)
    if exact:
        assert db, ("false negative", pairs)
    return exact


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8480-6", True),
        (f"{LOINC}|8480-6", True),
        (f"{LOINC}|", True),
        ("|8480-6", False),  # it has a system
        ("|local-sbp", True),  # no system
        ("local-sbp", True),
        (f"{LOINC}|local-sbp", False),
        ("http://snomed.info/sct|", False),
        ("8480", False),
        ("8480-6,999", True),
        ("998,999", False),
    ],
)
def test_token_forms(value: str, expected: bool, tokens: HmacTokens) -> None:
    assert answer("Observation", [("code", value)], OBS, tokens) is expected


def test_each_form_is_one_token_equality() -> None:
    for value in ["8480-6", f"{LOINC}|8480-6", f"{LOINC}|", "|8480-6"]:
        plan = parse_search("Observation", [("code", value)]).params[0]
        assert [len(g) for g in plan.alternatives[0].groups] == [1]
    inputs = index_inputs("Observation", {"code": []})
    assert inputs == set()


def test_not(tokens: HmacTokens) -> None:
    assert answer("Patient", [("gender:not", "male")], PATIENT, tokens)
    assert not answer("Patient", [("gender:not", "female")], PATIENT, tokens)
    assert not answer("Patient", [("gender:not", "male,female")], PATIENT, tokens)
    no_gender = {"resourceType": "Patient"}
    assert answer("Patient", [("gender:not", "female")], no_gender, tokens)


def test_text(tokens: HmacTokens) -> None:
    assert answer("Observation", [("code:text", "systolic")], OBS, tokens)
    assert answer("Observation", [("code:text", "ARTERIELLE")], OBS, tokens)
    assert answer("Observation", [("code:text", "pression systolique")], OBS, tokens)
    assert not answer("Observation", [("code:text", "systol")], OBS, tokens)  # whole words
    assert answer("Patient", [("identifier:text", "nir")], PATIENT, tokens)


def test_identifier_and_of_type(tokens: HmacTokens) -> None:
    assert answer(
        "Patient", [("identifier", "urn:oid:1.2.250.1.213.1.4.8|1840575123456")], PATIENT, tokens
    )
    assert answer("Patient", [("identifier", "MRN-42")], PATIENT, tokens)
    assert not answer(
        "Patient", [("identifier", "urn:oid:1.2.250.1.213.1.4.8|MRN-42")], PATIENT, tokens
    )
    fr = "http://interopsante.org/fhir/CodeSystem/fr-v2-0203"
    assert answer(
        "Patient", [("identifier:of-type", f"{fr}|INS-NIR|1840575123456")], PATIENT, tokens
    )
    assert not answer("Patient", [("identifier:of-type", f"{fr}|INS-NIR|MRN-42")], PATIENT, tokens)
    with pytest.raises(SearchError, match=r"^identifier:of-type: "):
        parse_search("Patient", [("identifier:of-type", "INS-NIR|123")])


def test_boolean_and_contact_point(tokens: HmacTokens) -> None:
    assert answer("Patient", [("active", "true")], PATIENT, tokens)
    assert not answer("Patient", [("active", "false")], PATIENT, tokens)
    assert answer("Patient", [("phone", "+33 1 23 45 67 89")], PATIENT, tokens)
    assert answer("Patient", [("telecom", "+33 1 23 45 67 89")], PATIENT, tokens)


def test_missing(tokens: HmacTokens) -> None:
    assert answer("Patient", [("gender:missing", "false")], PATIENT, tokens)
    assert not answer("Patient", [("gender:missing", "true")], PATIENT, tokens)
    assert answer("Patient", [("birthdate:missing", "true")], PATIENT, tokens)
    with pytest.raises(SearchError, match=r"^gender:missing: "):
        parse_search("Patient", [("gender:missing", "yes")])


def test_and_across_parameters(tokens: HmacTokens) -> None:
    assert answer("Patient", [("gender", "female"), ("active", "true")], PATIENT, tokens)
    assert not answer("Patient", [("gender", "female"), ("active", "false")], PATIENT, tokens)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("code", "a|b|c"),
        ("code", "|"),
        ("code:in", "http://vs"),
        ("code:below", "x"),
        ("code:bogus", "x"),
        ("code:exact", "x"),
    ],
)
def test_bad_token_searches(name: str, value: str) -> None:
    with pytest.raises(SearchError) as e:
        parse_search("Observation", [(name, value)])
    assert e.value.param == name


def test_escaped_separators(tokens: HmacTokens) -> None:
    odd = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:x", "code": "a|b,c"}]},
    }
    assert answer("Observation", [("code", r"urn:x|a\|b\,c")], odd, tokens)
    assert answer("Observation", [("code", r"a\|b\,c")], odd, tokens)
