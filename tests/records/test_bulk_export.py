"""FHIR Bulk Data ``$export``: kick-off, status, manifest, download, cancel, expiry, refusals.

Run on SQLite and PostgreSQL through the real application. The TestClient runs the job
(a background task) before the kick-off call returns, so the status is final at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from fhir_helpers import TENANT, Fhir, assert_outcome, observation, patient, token_for
from sqlalchemy import select, update

from hdsvault.access.roles import Role
from hdsvault.blobs import open_blob_store
from hdsvault.db.schema import bulk_exports, journal_entries
from hdsvault.records import bulk_export
from hdsvault.records.model import now
from hdsvault.records.store import RecordStore

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
MARKER = "Zyxwbulkexportmarker"


@pytest.fixture
def service(fhir: Fhir) -> str:
    return token_for(fhir.platform, TENANT, Role.SERVICE)


def _record(fhir: Fhir) -> dict[str, Any]:
    ids: dict[str, Any] = {"Patient": [], "Observation": []}
    for i in range(3):
        r = fhir.post("/Patient", patient(family=f"{MARKER}{i}"))
        assert r.status_code == 201, r.text
        ids["Patient"].append(r.json()["id"])
    for pid in ids["Patient"][:2]:
        r = fhir.post("/Observation", observation(f"Patient/{pid}"))
        assert r.status_code == 201, r.text
        ids["Observation"].append(r.json()["id"])
    return ids


def _kick_off(fhir: Fhir, token: str, query: str = "") -> str:
    r = fhir.get(f"/$export{query}", headers=ASYNC, token=token)
    assert r.status_code == 202, r.text
    location = r.headers["Content-Location"]
    assert "/$export-status/" in location
    return location.rsplit("/", 1)[1]


def _manifest(fhir: Fhir, token: str, job: str) -> dict[str, Any]:
    r = fhir.get(f"/$export-status/{job}", token=token)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _parts(fhir: Fhir, job: str) -> list[dict[str, Any]]:
    """The job's sealed parts as the database lists them."""
    with fhir.platform.engine.connect() as conn:
        text = conn.execute(
            select(bulk_exports.c.parts).where(bulk_exports.c.id == job)
        ).scalar_one()
    parts: list[dict[str, Any]] = orjson.loads(text)
    return parts


def _download(fhir: Fhir, token: str, url: str) -> list[dict[str, Any]]:
    path = url.split(f"/fhir/{TENANT}", 1)[1]
    r = fhir.get(path, token=token)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in r.content.splitlines() if line]


def test_export_round_trip_manifest_and_files(fhir: Fhir, service: str) -> None:
    ids = _record(fhir)
    job = _kick_off(fhir, service)
    manifest = _manifest(fhir, service, job)
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/$export")
    assert manifest["error"] == []
    by_type = {o["type"]: o for o in manifest["output"]}
    assert set(by_type) == {"Patient", "Observation"}
    for rt, expected in ids.items():
        assert by_type[rt]["count"] == len(expected)
        got = _download(fhir, service, by_type[rt]["url"])
        assert sorted(r["id"] for r in got) == sorted(expected)
        assert all(r["resourceType"] == rt for r in got)


def test_type_and_since_filters(fhir: Fhir, service: str) -> None:
    _record(fhir)
    job = _kick_off(fhir, service, "?_type=Observation")
    assert [o["type"] for o in _manifest(fhir, service, job)["output"]] == ["Observation"]
    later = (now() + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    job = _kick_off(fhir, service, f"?_since={later.replace('+', '%2B')}")
    assert _manifest(fhir, service, job)["output"] == []


def test_parts_are_sealed_and_a_tampered_part_is_refused(fhir: Fhir, service: str) -> None:
    _record(fhir)
    job = _kick_off(fhir, service, "?_type=Patient")
    parts = _parts(fhir, job)
    blobs = open_blob_store(fhir.platform.settings, fhir.platform.engine)
    sealed = blobs.get(parts[0]["blob_key"])
    assert MARKER.encode() not in sealed
    blobs.put(parts[0]["blob_key"], sealed[:-1] + bytes([sealed[-1] ^ 1]))
    url = _manifest(fhir, service, job)["output"][0]["url"]
    r = fhir.get(url.split(f"/fhir/{TENANT}", 1)[1], token=service)
    assert r.status_code == 500
    assert MARKER not in r.text
    assert r.json()["resourceType"] == "OperationOutcome"


def test_download_is_journaled_before_the_data_leaves(fhir: Fhir, service: str) -> None:
    _record(fhir)
    job = _kick_off(fhir, service, "?_type=Patient")
    url = _manifest(fhir, service, job)["output"][0]["url"]
    name = url.rsplit("/", 1)[1]
    _download(fhir, service, url)
    with fhir.platform.engine.connect() as conn:
        rows = conn.execute(
            select(journal_entries.c.objects, journal_entries.c.patient).where(
                journal_entries.c.event_type == "fhir.export"
            )
        ).all()
    objects = [orjson.loads(o) for o, _ in rows]
    assert [f"BulkExport/{job}", f"Binary/{name}"] in objects  # the download
    assert [f"BulkExport/{job}"] in objects  # the kick-off
    assert sum(1 for _, p in rows if p) == 3  # one access entry per exported patient


def test_only_the_requester_sees_the_job(fhir: Fhir, service: str) -> None:
    _record(fhir)
    job = _kick_off(fhir, service)
    other = token_for(fhir.platform, TENANT, Role.SERVICE)
    assert_outcome(fhir.get(f"/$export-status/{job}", token=other), 404)
    url = _manifest(fhir, service, job)["output"][0]["url"]
    assert_outcome(fhir.get(url.split(f"/fhir/{TENANT}", 1)[1], token=other), 404)


def test_cancel_deletes_the_files(fhir: Fhir, service: str) -> None:
    _record(fhir)
    job = _kick_off(fhir, service)
    parts = _parts(fhir, job)
    assert fhir.delete(f"/$export-status/{job}", token=service).status_code == 202
    blobs = open_blob_store(fhir.platform.settings, fhir.platform.engine)
    assert parts and not any(blobs.exists(p["blob_key"]) for p in parts)
    assert_outcome(fhir.get(f"/$export-status/{job}", token=service), 404, "cancelled")


def test_expired_jobs_are_gone_and_purged(fhir: Fhir, service: str) -> None:
    _record(fhir)
    job = _kick_off(fhir, service)
    with fhir.platform.engine.begin() as conn:
        conn.execute(
            update(bulk_exports)
            .where(bulk_exports.c.id == job)
            .values(expires_at=now() - timedelta(seconds=1))
        )
    assert_outcome(fhir.get(f"/$export-status/{job}", token=service), 410)
    store = RecordStore(fhir.platform)
    blobs = open_blob_store(fhir.platform.settings, fhir.platform.engine)
    assert bulk_export.expire(store, blobs) == 1
    assert not list(blobs.iter_keys(f"{TENANT}/bulk-export/{job}"))


def test_a_job_whose_worker_died_reads_as_failed(fhir: Fhir, service: str) -> None:
    _record(fhir)
    job = _kick_off(fhir, service)
    with fhir.platform.engine.begin() as conn:
        conn.execute(
            update(bulk_exports)
            .where(bulk_exports.c.id == job)
            .values(status="running", heartbeat_at=now() - bulk_export.STALE_AFTER * 2)
        )
    r = fhir.get(f"/$export-status/{job}", token=service)
    assert r.status_code == 500
    assert "stopped" in r.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("query", "headers", "status", "fragment"),
    [
        ("", {}, 400, "respond-async"),
        ("?_typeFilter=Patient%3Fname%3Dx", ASYNC, 400, "_typeFilter"),
        ("?_type=NotAType", ASYNC, 400, "_type"),
        ("?_since=yesterday", ASYNC, 400, "_since"),
        ("?_outputFormat=text/csv", ASYNC, 400, "_outputFormat"),
    ],
)
def test_bad_kick_off_gets_an_outcome(
    fhir: Fhir, service: str, query: str, headers: dict[str, str], status: int, fragment: str
) -> None:
    assert_outcome(fhir.get(f"/$export{query}", headers=headers, token=service), status, fragment)
    with fhir.platform.engine.connect() as conn:
        assert conn.execute(select(bulk_exports.c.id)).first() is None


def test_clinicians_may_not_export_and_the_refusal_is_journaled(fhir: Fhir) -> None:
    assert_outcome(fhir.get("/$export", headers=ASYNC), 403)
    with fhir.platform.engine.connect() as conn:
        denied = conn.execute(
            select(journal_entries.c.event_type).where(journal_entries.c.outcome == "4")
        ).all()
        assert conn.execute(select(bulk_exports.c.id)).first() is None
    assert len(denied) == 1


def test_capability_statement_lists_export(fhir: Fhir) -> None:
    body = fhir.get("/metadata").json()
    operations = {o["name"]: o["definition"] for o in body["rest"][0]["operation"]}
    bulk = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"
    assert operations["export"] == f"{bulk}/export"
    assert operations["patient-export"] == f"{bulk}/patient-export"


def test_a_real_client_polls_until_the_manifest(live_server: Any) -> None:
    """Under uvicorn the job runs after the 202: the client polls as the IG describes."""
    import time

    import httpx

    auth = {"Authorization": f"Bearer {live_server.token}"}
    service_token = token_for(live_server.platform, TENANT, Role.SERVICE)
    httpx.post(
        f"{live_server.url}/Patient",
        json=patient(family=MARKER),
        headers={**auth, "Content-Type": "application/fhir+json"},
    ).raise_for_status()
    headers = {"Authorization": f"Bearer {service_token}"}
    kick = httpx.get(f"{live_server.url}/$export", headers={**headers, **ASYNC})
    assert kick.status_code == 202
    status_url = kick.headers["Content-Location"]
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(status_url, headers=headers)
        if r.status_code != 202:
            break
        assert "Retry-After" in r.headers and "X-Progress" in r.headers
        assert time.monotonic() < deadline, "the export never completed"
        time.sleep(0.05)
    assert r.status_code == 200, r.text
    (output,) = r.json()["output"]
    ndjson = httpx.get(output["url"], headers=headers)
    assert ndjson.status_code == 200
    assert MARKER in ndjson.text


def test_patient_level_export_keeps_the_compartments_only(fhir: Fhir, service: str) -> None:
    ids = _record(fhir)
    org = fhir.post("/Organization", {"resourceType": "Organization", "name": "CHU"})
    assert org.status_code == 201, org.text
    r = fhir.get("/Patient/$export", headers=ASYNC, token=service)
    assert r.status_code == 202, r.text
    job = r.headers["Content-Location"].rsplit("/", 1)[1]
    manifest = _manifest(fhir, service, job)
    assert manifest["request"].endswith("/Patient/$export")
    assert {o["type"]: o["count"] for o in manifest["output"]} == {
        "Patient": len(ids["Patient"]),
        "Observation": len(ids["Observation"]),
    }


def test_the_journal_names_exactly_the_exported_patients(fhir: Fhir, service: str) -> None:
    ids = _record(fhir)
    job = _kick_off(fhir, service, "?_type=Observation")
    _manifest(fhir, service, job)
    with fhir.platform.engine.connect() as conn:
        named = {
            p
            for (p,) in conn.execute(
                select(journal_entries.c.patient).where(
                    journal_entries.c.event_type == "fhir.export",
                    journal_entries.c.patient.is_not(None),
                )
            )
        }
    assert named == {f"Patient/{pid}" for pid in ids["Patient"][:2]}  # the two with observations
