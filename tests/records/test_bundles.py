"""Batch and transaction Bundles: urn:uuid resolution, atomicity, limits."""

from __future__ import annotations

from typing import Any

from fhir_helpers import Fhir, assert_outcome, create, observation, patient
from sqlalchemy import func, select

from hdsvault.db.schema import journal_entries, resource_versions, resources, search_tokens


def counts(fhir: Fhir) -> tuple[int, int, int, int]:
    with fhir.platform.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (resources, resource_versions, search_tokens, journal_entries)
        )


def tx(entries: list[dict[str, Any]], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def test_transaction_resolves_urn_uuid(fhir: Fhir) -> None:
    pu = "urn:uuid:2d79458c-3c54-4bc4-bf3c-ccea471988fc"
    bundle = tx(
        [
            post("urn:uuid:aaaaaaaa-0000-0000-0000-000000000001", observation(pu)),
            post(pu, patient()),
        ]
    )
    r = fhir.post("", bundle)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    obs_loc, pat_loc = (e["response"]["location"] for e in body["entry"])
    pid = pat_loc.split("/")[1]
    oid = obs_loc.split("/")[1]
    obs = fhir.get(f"/Observation/{oid}").json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"
    found = fhir.get(f"/Observation?subject=Patient/{pid}").json()
    assert found["total"] == 1


def test_transaction_is_all_or_nothing(fhir: Fhir) -> None:
    before = counts(fhir)
    good = post("urn:uuid:1", patient())
    bad_ref = post("urn:uuid:2", observation("urn:uuid:does-not-exist"))
    r = fhir.post("", tx([good, bad_ref]))
    assert_outcome(r, 404, "Bundle.entry[1]")
    missing = post("urn:uuid:3", observation("Patient/not-here"))
    assert_outcome(fhir.post("", tx([good, missing])), 404, "Patient/not-here")
    invalid = post("urn:uuid:4", patient(gender="robot"))
    assert_outcome(fhir.post("", tx([good, invalid])), 422, "Bundle.entry[1]")
    dup_id = {"resource": patient(id="same"), "request": {"method": "PUT", "url": "Patient/same"}}
    assert_outcome(fhir.post("", tx([dup_id, dup_id])), 400, "twice")
    stale = create(fhir, patient())
    after_create = counts(fhir)
    wrong_version = {
        "resource": patient(id=stale["id"]),
        "request": {"method": "PUT", "url": f"Patient/{stale['id']}", "ifMatch": 'W/"9"'},
    }
    assert_outcome(fhir.post("", tx([good, wrong_version])), 412)
    assert counts(fhir) == after_create
    assert after_create[0] == before[0] + 1  # only the separate create landed


def test_transaction_methods_and_conditionals(fhir: Fhir) -> None:
    existing = create(fhir, patient(identifier=[{"system": "urn:t", "value": "X"}]))
    doomed = create(fhir, patient("Doomed"))
    bundle = tx(
        [
            {
                "fullUrl": "urn:uuid:p",
                "resource": patient(identifier=[{"system": "urn:t", "value": "X"}]),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": "identifier=urn:t|X",
                },
            },
            post("urn:uuid:o", observation("urn:uuid:p")),
            {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
            {
                "resource": patient("Put", id="put-id"),
                "request": {"method": "PUT", "url": "Patient/put-id"},
            },
            {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
            {"request": {"method": "GET", "url": "Patient?identifier=urn:t|X"}},
        ]
    )
    r = fhir.post("", bundle)
    assert r.status_code == 200, r.text
    e = r.json()["entry"]
    assert e[0]["response"]["status"] == "200 OK"  # matched: nothing created
    assert e[1]["response"]["status"] == "201 Created"
    assert e[2]["response"]["status"] == "204 No Content"
    assert e[3]["response"]["status"] == "201 Created"
    assert e[4]["resource"]["id"] == existing["id"]
    assert e[5]["resource"]["total"] == 1
    oid = e[1]["response"]["location"].split("/")[1]
    assert (
        fhir.get(f"/Observation/{oid}").json()["subject"]["reference"]
        == f"Patient/{existing['id']}"
    )
    assert fhir.get(f"/Patient/{doomed['id']}").status_code == 410


def test_batch_entries_are_independent(fhir: Fhir) -> None:
    bundle = tx(
        [
            post("urn:uuid:a", patient()),
            post("urn:uuid:b", patient(gender="robot")),
            {"request": {"method": "GET", "url": "Patient/nope"}},
            {"request": {"method": "FETCH", "url": "Patient"}},
        ],
        "batch",
    )
    r = fhir.post("", bundle)
    assert r.status_code == 200
    e = r.json()["entry"]
    assert e[0]["response"]["status"] == "201 Created"
    assert e[1]["response"]["status"].startswith("422")
    assert e[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert e[2]["response"]["status"].startswith("404")
    assert e[3]["response"]["status"].startswith("400")


def test_bundle_shape_errors_and_limits(fhir: Fhir) -> None:
    assert_outcome(fhir.post("", patient()), 400, "Bundle")
    assert_outcome(
        fhir.post("", {"resourceType": "Bundle", "type": "collection"}), 400, "Bundle.type"
    )
    assert_outcome(
        fhir.post("", {"resourceType": "Bundle", "type": "transaction", "entry": {}}), 400
    )
    assert_outcome(
        fhir.post("", tx([{"request": {"method": "POST", "url": "Patient"}}])), 400, "entry[0]"
    )
    assert_outcome(
        fhir.post("", tx([{"resource": patient(), "request": {"method": "POST", "url": "../x"}}])),
        404,
    )
    limit = fhir.platform.settings.fhir.max_bundle_entries
    many = tx([post(f"urn:uuid:{i}", patient()) for i in range(limit + 1)])
    before = counts(fhir)
    assert_outcome(fhir.post("", many), 413, "max_bundle_entries")
    assert counts(fhir) == before
