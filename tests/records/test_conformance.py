"""Conformance walk of the FHIR HTTP behaviour, on SQLite and PostgreSQL.

Every interaction the CapabilityStatement lists, with its status codes and headers, and an
OperationOutcome for every error (invariant 7). Uses the ``fhir`` TestClient fixture.
"""

from __future__ import annotations

from fhir_helpers import (
    OTHER_TENANT,
    TENANT,
    Fhir,
    assert_outcome,
    create,
    patient,
    token_for,
)

from hdsvault.access.roles import Role
from hdsvault.tenants.service import add_tenant

# ------------------------------------------------------------------ CRUD + headers


def test_create_read_headers(fhir: Fhir) -> None:
    r = fhir.post("/Patient", patient())
    assert r.status_code == 201
    body = r.json()
    pid = body["id"]
    assert len(pid) == 36  # random UUID
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/fhir/{TENANT}/Patient/{pid}/_history/1")
    assert r.headers["last-modified"].endswith("GMT")
    assert r.headers["content-type"] == "application/fhir+json; fhirVersion=4.0"
    assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"].endswith("Z")
    r = fhir.get(f"/Patient/{pid}")
    assert r.status_code == 200 and r.json()["name"][0]["family"] == "Dupont"
    assert r.headers["etag"] == 'W/"1"'
    # If-None-Match on the current version: 304
    r = fhir.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304


def test_create_ignores_client_id(fhir: Fhir) -> None:
    body = create(fhir, patient(id="client-chosen"))
    assert body["id"] != "client-chosen"


def test_update_vread_history_delete(fhir: Fhir) -> None:
    pid = create(fhir, patient())["id"]
    changed = patient("Martin", id=pid)
    r = fhir.put(f"/Patient/{pid}", changed)
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'
    assert r.json()["meta"]["versionId"] == "2"
    assert fhir.get(f"/Patient/{pid}/_history/1").json()["name"][0]["family"] == "Dupont"
    assert fhir.get(f"/Patient/{pid}/_history/2").json()["name"][0]["family"] == "Martin"
    assert_outcome(fhir.get(f"/Patient/{pid}/_history/9"), 404)
    h = fhir.get(f"/Patient/{pid}/_history").json()
    assert h["type"] == "history" and h["total"] == 2
    assert [e["response"]["etag"] for e in h["entry"]] == ['W/"2"', 'W/"1"']
    r = fhir.delete(f"/Patient/{pid}")
    assert r.status_code == 204
    assert_outcome(fhir.get(f"/Patient/{pid}"), 410)
    assert fhir.delete(f"/Patient/{pid}").status_code == 204  # idempotent
    h = fhir.get(f"/Patient/{pid}/_history").json()
    assert h["total"] == 3 and h["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in h["entry"][0]
    assert_outcome(fhir.get(f"/Patient/{pid}/_history/3"), 410)
    # the deleted resource is no longer found by search
    assert fhir.get("/Patient?name=martin").json()["total"] == 0
    # type and system history
    assert fhir.get("/Patient/_history").json()["total"] >= 3
    assert fhir.get("/_history?_count=1").json()["entry"][0]["request"]["method"] == "DELETE"


def test_update_as_create_with_client_id(fhir: Fhir) -> None:
    r = fhir.put("/Patient/my-own-id", patient(id="my-own-id"))
    assert r.status_code == 201
    assert r.headers["location"].endswith("/Patient/my-own-id/_history/1")
    assert fhir.get("/Patient/my-own-id").status_code == 200


def test_if_match(fhir: Fhir) -> None:
    pid = create(fhir, patient())["id"]
    ok = fhir.put(f"/Patient/{pid}", patient(id=pid), headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = fhir.put(f"/Patient/{pid}", patient(id=pid), headers={"If-Match": 'W/"1"'})
    assert_outcome(stale, 412, "If-Match")
    assert_outcome(fhir.delete(f"/Patient/{pid}", headers={"If-Match": 'W/"7"'}), 412)
    assert_outcome(
        fhir.put(f"/Patient/{pid}", patient(id=pid), headers={"If-Match": "garbage"}), 400
    )


def test_prefer_return(fhir: Fhir) -> None:
    r = fhir.post("/Patient", patient(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and r.headers["location"]
    r = fhir.post("/Patient", patient(), headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201 and r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["severity"] == "information"
    r = fhir.post("/Patient", patient(), headers={"Prefer": "return=representation"})
    assert r.json()["resourceType"] == "Patient"


def test_patch(fhir: Fhir) -> None:
    pid = create(fhir, patient())["id"]
    r = fhir.patch(f"/Patient/{pid}", [{"op": "replace", "path": "/gender", "value": "female"}])
    assert r.status_code == 200 and r.json()["gender"] == "female"
    assert r.headers["etag"] == 'W/"2"'
    assert_outcome(
        fhir.patch(f"/Patient/{pid}", [{"op": "replace", "path": "/gender", "value": "bogus"}]),
        422,
        "gender",
    )
    assert_outcome(fhir.patch(f"/Patient/{pid}", [{"op": "remove", "path": "/nope"}]), 422)
    assert_outcome(
        fhir.patch(f"/Patient/{pid}", [{"op": "replace", "path": "/id", "value": "x"}]), 422
    )
    assert_outcome(fhir.patch(f"/Patient/{pid}", {"op": "add"}), 400)
    assert_outcome(
        fhir.patch(f"/Patient/{pid}", [{"op": "test", "path": "/gender", "value": "male"}]), 422
    )
    r = fhir.patch(
        f"/Patient/{pid}",
        [{"op": "add", "path": "/active", "value": True}],
        headers={"If-Match": 'W/"1"'},
    )
    assert_outcome(r, 412)
    # JSON Patch needs its media type
    r = fhir.client.patch(f"{fhir.base}/Patient/{pid}", json=[], headers=fhir.headers())
    assert_outcome(r, 415)


def test_conditional_create(fhir: Fhir) -> None:
    p = patient(identifier=[{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "10003615049"}])
    first = fhir.post(
        "/Patient",
        p,
        headers={"If-None-Exist": "identifier=urn:oid:1.2.250.1.71.4.2.1|10003615049"},
    )
    assert first.status_code == 201
    again = fhir.post(
        "/Patient",
        p,
        headers={"If-None-Exist": "identifier=urn:oid:1.2.250.1.71.4.2.1|10003615049"},
    )
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    create(fhir, p)  # a second one with the same identifier
    several = fhir.post(
        "/Patient",
        p,
        headers={"If-None-Exist": "identifier=urn:oid:1.2.250.1.71.4.2.1|10003615049"},
    )
    assert_outcome(several, 412)
    assert_outcome(fhir.post("/Patient", p, headers={"If-None-Exist": "nonsense-param=1"}), 400)


def test_conditional_update_and_delete(fhir: Fhir) -> None:
    ident = {"system": "urn:test", "value": "A1"}
    r = fhir.put("/Patient?identifier=urn:test|A1", patient(identifier=[ident]))
    assert r.status_code == 201
    pid = r.json()["id"]
    r = fhir.put("/Patient?identifier=urn:test|A1", patient("Martin", identifier=[ident]))
    assert r.status_code == 200 and r.json()["id"] == pid and r.json()["meta"]["versionId"] == "2"
    assert fhir.delete("/Patient?identifier=urn:test|A1").status_code == 204
    assert_outcome(fhir.get(f"/Patient/{pid}"), 410)
    r = fhir.delete("/Patient?identifier=urn:test|none")
    assert r.status_code == 200  # nothing matched, nothing deleted
    create(fhir, patient(identifier=[{"system": "urn:test", "value": "B"}]))
    create(fhir, patient(identifier=[{"system": "urn:test", "value": "B"}]))
    assert_outcome(fhir.delete("/Patient?identifier=urn:test|B"), 412)
    assert_outcome(fhir.put("/Patient?identifier=urn:test|B", patient()), 412)


# ------------------------------------------------------------------ errors


def test_malformed_bodies(fhir: Fhir) -> None:
    assert_outcome(fhir.post("/Patient", b"{not json"), 400, "JSON")
    assert_outcome(fhir.post("/Patient", b"[1, 2]"), 400, "object")
    assert_outcome(fhir.post("/Patient", b""), 400)
    assert_outcome(
        fhir.post("/Patient", {"resourceType": "Observation", "status": "final", "code": {}}),
        400,
        "does not match",
    )
    assert_outcome(fhir.post("/Patient", {"name": "x"}), 400, "resourceType")
    pid = create(fhir, patient())["id"]
    assert_outcome(fhir.put(f"/Patient/{pid}", patient(id="other-id")), 400, "does not match")
    assert_outcome(fhir.put(f"/Patient/{pid}", patient()), 400, "id is required")
    assert_outcome(fhir.post("/Patient", patient(birthDate="1990-13-45")), 400, "Patient.birthDate")
    assert_outcome(fhir.post("/Patient", patient(gender="robot")), 422, "Patient.gender")
    assert_outcome(fhir.post("/Patient", patient(unknownElement=1)), 400, "unknownElement")
    deep = '{"x":' * 3000 + "{}" + "}" * 3000
    body = '{"resourceType": "Patient", "extension": [' + deep + "]}"
    assert_outcome(fhir.post("/Patient", body), 400)
    shallow = '{"x":' * 200 + "{}" + "}" * 200
    body = '{"resourceType": "Patient", "extension": [' + shallow + "]}"
    assert_outcome(fhir.post("/Patient", body), 400)


def test_unknown_type_and_paths(fhir: Fhir) -> None:
    assert_outcome(fhir.get("/NotAType"), 404, "unknown resource type")
    assert_outcome(fhir.post("/NotAType", {"resourceType": "NotAType"}), 404)
    assert_outcome(fhir.get("/Patient/does-not-exist"), 404)
    assert_outcome(fhir.get("/Patient/..%2F..%2Fetc"), 404)  # decoded path matches no route
    assert_outcome(fhir.get("/Patient/bad%20id!"), 400, "not a FHIR id")
    r = fhir.client.get(f"/fhir/{TENANT}/Patient/..%2F..%2Fetc%2Fpasswd", headers=fhir.headers())
    assert r.status_code in (400, 404) and r.json()["resourceType"] == "OperationOutcome"
    r = fhir.client.get("/fhir/not-a-finess/Patient", headers=fhir.headers())
    assert_outcome(r, 404)
    r = fhir.client.get(f"/fhir/{TENANT}/Patient/a/b/c/d/e", headers=fhir.headers())
    assert_outcome(r, 404)
    assert_outcome(
        fhir.client.request("OPTIONS", f"/fhir/{TENANT}/Patient", headers=fhir.headers()), 405
    )


def test_formats(fhir: Fhir) -> None:
    assert fhir.get("/Patient?_format=json").status_code == 200
    assert fhir.get("/Patient?_format=application/fhir%2Bjson").status_code == 200
    assert_outcome(fhir.get("/Patient?_format=xml"), 406)
    assert_outcome(fhir.get("/Patient", headers={"Accept": "application/fhir+xml"}), 406)
    r = fhir.post("/Patient", b"<Patient/>", headers={"Content-Type": "application/fhir+xml"})
    assert_outcome(r, 415)


def test_body_too_large(fhir: Fhir) -> None:
    limit = fhir.platform.settings.server.max_body_bytes
    big = b'{"resourceType":"Patient","text":"' + b"x" * (limit + 10) + b'"}'
    assert_outcome(fhir.post("/Patient", big), 413)


def test_auth_and_tenant_scoping(fhir: Fhir) -> None:
    r = fhir.client.get(f"/fhir/{TENANT}/Patient")
    assert_outcome(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = fhir.client.get(
        f"/fhir/{TENANT}/Patient", headers={"Authorization": "Bearer hdsv_nope_nope"}
    )
    assert_outcome(r, 401)
    add_tenant(fhir.platform, OTHER_TENANT, "Autre", by="test")
    other = token_for(fhir.platform, OTHER_TENANT, Role.CLINICIAN)
    assert_outcome(fhir.get("/Patient", token=other), 403, "another tenant")
    dpo = token_for(fhir.platform, TENANT, Role.DPO)
    assert_outcome(fhir.get("/Patient", token=dpo), 403)
    # metadata is public
    r = fhir.client.get(f"/fhir/{TENANT}/metadata")
    assert r.status_code == 200


def test_capability_statement(fhir: Fhir) -> None:
    cs = fhir.get("/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    pat = next(r for r in rest["resource"] if r["type"] == "Patient")
    codes = {i["code"] for i in pat["interaction"]}
    assert codes == {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    }
    assert pat["conditionalUpdate"] and pat["conditionalDelete"] == "single"
    names = {p["name"] for p in pat["searchParam"]}
    assert {"_id", "_lastUpdated", "name", "birthdate", "identifier", "family"} <= names
    assert any(r["type"] == "AuditEvent" for r in rest["resource"])
