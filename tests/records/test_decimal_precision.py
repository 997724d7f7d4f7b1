"""FHIR decimals keep their precision: ``1.50`` is stored, returned and exported as ``1.50``.

The precision of a FHIR decimal is significant (a lab value measured to two decimals, a dose
of ``0.010``). orjson alone would respell such numbers (``1.50`` -> ``1.5``); ``jsonio``
keeps their literals (see its docstring). Checked on the JSON layer itself and end to end:
create, read, search, history, JSON Patch, a transaction Bundle, and export then import into
another establishment, on both backends.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import orjson
import pytest
from fhir_helpers import OTHER_TENANT, Fhir
from synthea_store import service_caller

from hdsvault.records import bulk, jsonio
from hdsvault.records.errors import RecordError
from hdsvault.records.store import RecordStore
from hdsvault.tenants.service import add_tenant

LITERALS = ["1.50", "0.010", "2.0", "-0.0", "2.5E-7", "1.0e+2", "0.12345678901234567890", "3.14",
            "0.1", "7", "-12", "100", "0.5e-10"]  # fmt: skip


@pytest.mark.parametrize("literal", LITERALS)
def test_a_number_is_written_back_as_it_was_read(literal: str) -> None:
    doc = f'{{"a": {literal}, "b": [{literal}, {{"c": {literal}}}]}}'.encode()
    expected = f'{{"a":{literal},"b":[{literal},{{"c":{literal}}}]}}'.encode()
    assert jsonio.dumps(jsonio.parse_object(doc)) == expected
    assert jsonio.dumps(jsonio.loads(doc)) == expected
    value = jsonio.loads(doc)["a"]
    assert value == float(literal)  # searches and comparisons see the number's value
    for kept in (copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert jsonio.dumps([kept]) == f"[{literal}]".encode()


def test_documented_gaps_keep_the_value() -> None:
    """An exponent without a fraction, a 17-digit integer part: respelled, value kept."""
    assert jsonio.dumps(jsonio.loads(b"[1e3, 12345678901234567.5]")) == (
        b"[1000.0,1.2345678901234568e+16]"
    )


def test_only_respelled_decimals_leave_the_fast_path() -> None:
    value = jsonio.parse_object(b'{"a": 1.5, "b": 1.50, "c": "x, 1.50, y", "d": 4}')
    assert type(value["a"]) is float
    assert isinstance(value["b"], jsonio.ExactDecimal)
    assert value["c"] == "x, 1.50, y" and value["d"] == 4


def test_strictness_is_unchanged() -> None:
    for bad in (b'{"a": NaN}', b'{"a": 1.50,}', b'{"a": "\\ud800"}', b"[1.50]"):
        with pytest.raises(RecordError):
            jsonio.parse_object(bad)


def _observation(subject: str) -> str:
    return (
        '{"resourceType": "Observation", "status": "final",'
        ' "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},'
        f' "subject": {{"reference": "{subject}"}},'
        ' "valueQuantity": {"value": 1.50, "unit": "mmol/L",'
        ' "system": "http://unitsofmeasure.org", "code": "mmol/L"},'
        ' "referenceRange": [{"low": {"value": 0.010}, "high": {"value": 6.10}}]}'
    )


def test_decimals_survive_every_interaction(fhir: Fhir, tenant: str, tmp_path: Path) -> None:
    p = fhir.post("/Patient", {"resourceType": "Patient", "name": [{"family": "Exact"}]})
    subject = f"Patient/{p.json()['id']}"
    created = fhir.post("/Observation", _observation(subject))
    assert created.status_code == 201, created.text
    oid = created.json()["id"]
    for raw in (
        created.content,
        fhir.get(f"/Observation/{oid}").content,
        fhir.get(f"/Observation/{oid}/_history/1").content,
        fhir.get("/Observation", params={"subject": subject}).content,
    ):
        assert b'"value":1.50' in raw and b'"value":0.010' in raw and b'"value":6.10' in raw

    patched = fhir.client.patch(
        f"{fhir.base}/Observation/{oid}",
        content=b'[{"op": "replace", "path": "/valueQuantity/value", "value": 2.50}]',
        headers=fhir.headers({"Content-Type": "application/json-patch+json"}),
    )
    assert patched.status_code == 200, patched.text
    read = fhir.get(f"/Observation/{oid}").content
    assert b'"value":2.50' in read and b'"value":0.010' in read

    bundle = (
        '{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": '
        + _observation(subject)
        + ', "request": {"method": "POST", "url": "Observation"}}]}'
    )
    tx = fhir.post("", bundle)
    assert tx.status_code == 200, tx.text
    location = tx.json()["entry"][0]["response"]["location"]
    assert b'"value":1.50' in fhir.get("/" + location.split("/_history")[0]).content

    store = RecordStore(fhir.platform)
    report = bulk.export_tenant(store, service_caller(tenant), tmp_path / "export")
    exported = (tmp_path / "export" / "Observation.ndjson").read_bytes()
    assert exported.count(b'"value":1.50') == 1 and exported.count(b'"value":2.50') == 1
    add_tenant(fhir.platform, OTHER_TENANT, "Autre", by="test")
    imported = bulk.import_paths(store, service_caller(OTHER_TENANT), [tmp_path / "export"])
    assert not imported.errors and report.counts
    other = bulk.export_tenant(store, service_caller(OTHER_TENANT), tmp_path / "again")
    again = (tmp_path / "again" / "Observation.ndjson").read_bytes()
    assert other.counts == report.counts
    values = sorted(orjson.loads(line)["valueQuantity"]["value"] for line in again.splitlines())
    assert values == [1.5, 2.5]
    assert again.count(b'"value":1.50') == 1 and again.count(b'"value":2.50') == 1
    assert again.count(b'"value":0.010') == 2
