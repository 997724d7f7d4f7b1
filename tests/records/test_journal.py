"""Every read, write and search leaves a journal entry; a failed write leaves none."""

from __future__ import annotations

import json
from typing import Any

from fhir_helpers import TENANT, Fhir, create, observation, patient, token_for
from sqlalchemy import select

from hdsvault.access.roles import Role
from hdsvault.db.schema import journal_entries
from hdsvault.journal import service as journal
from hdsvault.journal.group_commit import JournalUnavailable


def entries(fhir: Fhir, since: int = 0) -> list[Any]:
    with fhir.platform.engine.connect() as conn:
        return list(
            conn.execute(
                select(journal_entries)
                .where(journal_entries.c.log_id == TENANT, journal_entries.c.id > since)
                .order_by(journal_entries.c.id)
            )
        )


def last_id(fhir: Fhir) -> int:
    rows = entries(fhir)
    return rows[-1].id if rows else 0


def test_each_interaction_is_journaled(fhir: Fhir) -> None:
    mark = last_id(fhir)
    pid = create(fhir, patient())["id"]
    (e,) = entries(fhir, mark)
    assert (e.event_type, e.category, e.action, e.outcome) == (
        "fhir.create",
        "modification",
        "C",
        "0",
    )
    assert e.patient == f"Patient/{pid}" and json.loads(e.objects) == [f"Patient/{pid}"]
    assert e.actor.startswith("token:") and e.actor_role == "clinician" and e.request_id

    mark = last_id(fhir)
    fhir.get(f"/Patient/{pid}")
    (e,) = entries(fhir, mark)
    assert (e.event_type, e.category, e.action) == ("fhir.read", "access", "R")
    assert e.patient == f"Patient/{pid}"

    mark = last_id(fhir)
    oid = create(fhir, observation(f"Patient/{pid}"))["id"]
    fhir.put(f"/Patient/{pid}", patient("Martin", id=pid))
    fhir.patch(f"/Patient/{pid}", [{"op": "add", "path": "/active", "value": True}])
    fhir.get(f"/Observation/{oid}/_history/1")
    fhir.get(f"/Patient/{pid}/_history")
    fhir.delete(f"/Observation/{oid}")
    kinds = [r.event_type for r in entries(fhir, mark)]
    assert kinds == [
        "fhir.create",
        "fhir.update",
        "fhir.patch",
        "fhir.vread",
        "fhir.history",
        "fhir.delete",
    ]
    obs_entry = entries(fhir, mark)[0]
    assert obs_entry.patient == f"Patient/{pid}"  # an Observation concerns its subject
    assert entries(fhir, mark)[-1].patient == f"Patient/{pid}"  # so does its deletion

    # a search: parameters sealed, results named
    mark = last_id(fhir)
    fhir.get("/Patient?name=martin")
    (e,) = entries(fhir, mark)
    assert e.event_type == "fhir.search" and e.action == "E"
    assert json.loads(e.objects) == [f"Patient/{pid}"]
    assert e.detail_sealed and b"martin" not in e.detail_sealed
    # an empty search is journaled too
    mark = last_id(fhir)
    fhir.get("/Patient?name=nobody")
    (e,) = entries(fhir, mark)
    assert e.event_type == "fhir.search" and json.loads(e.objects) == []


def test_failures_and_denials(fhir: Fhir) -> None:
    mark = last_id(fhir)
    fhir.post("/Patient", patient(gender="robot"))  # refused write: no entry
    fhir.post("/Patient", b"{broken")
    assert entries(fhir, mark) == []
    fhir.get("/Patient/not-there")  # a probe is an access attempt
    (e,) = entries(fhir, mark)
    assert e.event_type == "fhir.read" and e.outcome == "4"
    mark = last_id(fhir)
    nurse_dpo = token_for(fhir.platform, TENANT, Role.DPO)
    assert fhir.get("/Patient", token=nurse_dpo).status_code == 403
    denied = entries(fhir, mark)
    assert len(denied) == 1 and denied[0].event_type.startswith("access.denied")


def test_journal_verifies_after_activity(fhir: Fhir) -> None:
    pid = create(fhir, patient())["id"]
    fhir.get(f"/Patient/{pid}")
    fhir.get("/Patient?name=dup")
    fhir.post(
        "",
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:x",
                    "resource": patient(),
                    "request": {"method": "POST", "url": "Patient"},
                },
            ],
        },
    )
    journal.integrate(fhir.platform)
    report = journal.verify(fhir.platform)
    assert report.ok, report


def test_a_page_of_several_patients_is_journaled_per_patient_before_it_is_returned(
    fhir: Fhir, monkeypatch: Any
) -> None:
    pids = [create(fhir, patient("Page"))["id"] for _ in range(3)]
    for pid in pids:
        create(fhir, observation(f"Patient/{pid}", code="29463-7"))
    mark = last_id(fhir)
    assert fhir.get("/Observation?code=29463-7").status_code == 200
    found = entries(fhir, mark)
    assert sorted(e.patient for e in found) == sorted(f"Patient/{p}" for p in pids)
    assert len({e.request_id for e in found}) == 1  # one request, one batch

    # Invariant 2: when the trace cannot be made durable, the page is not returned.
    writer = fhir.platform.durable_journal()

    class Failing:
        def wait(self, timeout: float | None = 30.0) -> None:
            raise JournalUnavailable("the journal's disk is gone")

    monkeypatch.setattr(writer, "submit", lambda batch: Failing())
    refused = fhir.get("/Observation?code=29463-7")
    assert refused.status_code == 503, (refused.status_code, refused.text[:300])
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert "Page" not in refused.text
