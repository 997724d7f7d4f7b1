"""French identifiers (INS NIR key, RPPS) and the AuditEvent view of the journal."""

from __future__ import annotations

import pytest
from fhir_helpers import TENANT, Fhir, assert_outcome, create, observation, patient, token_for

from hdsvault.access.roles import Role
from hdsvault.records.ins import nir_key, nir_problem

NIR = "urn:oid:1.2.250.1.213.1.4.8"


@pytest.mark.parametrize(
    ("first13", "key"),
    [
        ("2800575108002", 8),
        ("1850275123456", 25),
        ("185022A123456", 97 - 1850219123456 % 97),  # Corsica: 2A -> 19
        ("185022B123456", 97 - 1850218123456 % 97),  # Corsica: 2B -> 18
    ],
)
def test_nir_key(first13: str, key: int) -> None:
    assert nir_key(first13) == key
    assert nir_problem(f"{first13}{key:02d}") is None
    assert nir_problem(f"{first13}{(key % 97) + 1:02d}") is not None


def test_nir_format_problems() -> None:
    assert "15 characters" in (nir_problem("12345") or "")
    assert "format" in (nir_problem("9800575108002" + "08") or "")


def test_ins_checked_on_write(fhir: Fhir) -> None:
    good = patient(identifier=[{"system": NIR, "value": "280057510800208"}])
    pid = create(fhir, good)["id"]
    bad = patient(
        identifier=[
            {"system": "urn:other", "value": "x"},
            {"system": NIR, "value": "280057510800299"},
        ]
    )
    body = assert_outcome(fhir.post("/Patient", bad), 422, "Patient.identifier[1].value")
    assert "280057510800299" not in str(body)  # the number itself is not echoed
    upd = patient(id=pid, identifier=[{"system": NIR, "value": "28005751080020"}])
    assert_outcome(fhir.put(f"/Patient/{pid}", upd), 422, "15 characters")
    assert fhir.get(f"/Patient?identifier={NIR}|280057510800208").json()["total"] == 1


def test_rpps_practitioner_search(fhir: Fhir) -> None:
    rpps = "urn:oid:1.2.250.1.71.4.2.1"
    doc = create(
        fhir,
        {"resourceType": "Practitioner", "identifier": [{"system": rpps, "value": "810002345678"}]},
    )
    found = fhir.get(f"/Practitioner?identifier={rpps}|810002345678").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [doc["id"]]
    assert fhir.get(f"/Practitioner?identifier={rpps}|").json()["total"] == 1
    assert fhir.get(f"/Practitioner?identifier={rpps}|999").json()["total"] == 0


def test_audit_event_view_and_access_history(fhir: Fhir) -> None:
    pid = create(fhir, patient())["id"]
    create(fhir, observation(f"Patient/{pid}"))
    fhir.get(f"/Patient/{pid}")
    fhir.get(f"/Observation?subject=Patient/{pid}")
    clinician_sees = fhir.get("/AuditEvent")
    assert_outcome(clinician_sees, 403)
    dpo = token_for(fhir.platform, TENANT, Role.DPO)
    r = fhir.get(f"/AuditEvent?patient=Patient/{pid}", token=dpo)
    assert r.status_code == 200, r.text
    bundle = r.json()
    events = [e["resource"] for e in bundle["entry"]]
    subtypes = [ev["subtype"][0]["code"] for ev in events if "subtype" in ev]
    assert {"create", "read", "search-type"} <= set(subtypes)
    ev = events[0]
    assert ev["resourceType"] == "AuditEvent" and ev["recorded"].endswith("Z")
    assert ev["agent"][0]["who"]["identifier"]["value"].startswith("token:")
    assert any(e["what"].get("reference") == f"Patient/{pid}" for e in ev["entity"])
    assert fhir.get("/AuditEvent?action=C", token=dpo).json()["total"] >= 2
    assert fhir.get("/AuditEvent?date=ge2000-01-01&_count=1", token=dpo).json()["total"] >= 4
    assert fhir.get("/AuditEvent?date=lt2000-01-01", token=dpo).json()["total"] == 0
    agent = ev["agent"][0]["who"]["identifier"]["value"]
    assert fhir.get(f"/AuditEvent?agent={agent}", token=dpo).json()["total"] >= 4
    one = fhir.get(f"/AuditEvent/{ev['id']}", token=dpo)
    assert one.status_code == 200 and one.json()["id"] == ev["id"]
    assert_outcome(fhir.get("/AuditEvent/999999999", token=dpo), 404)
    assert_outcome(fhir.get("/AuditEvent?action=Z", token=dpo), 400)
    assert_outcome(fhir.get("/AuditEvent?date=yesterday", token=dpo), 400)
    who = fhir.get(f"/Patient/{pid}/$access-history", token=dpo).json()
    assert who["total"] >= 3
    # the DPO's own audit reads are journaled too (and show in the patient's history)
    again = fhir.get(f"/Patient/{pid}/$access-history", token=dpo).json()
    assert again["total"] > who["total"]
    assert any(
        e["resource"].get("subtype", [{}])[0].get("code") == "search-type"
        and e["resource"]["outcomeDesc"] == "fhir.audit"
        for e in again["entry"]
    )
