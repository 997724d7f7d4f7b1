"""Migration 0005 (``search_tokens`` without tenant and type) on a database holding records.

A 0004 database (rows ``(tenant, type, token, id)``) holding resources of two establishments
- the same client-chosen ids and the same values in both, an updated and a deleted resource -
is upgraded; every search then answers exactly as before, tenants stay apart, and writes
after the upgrade are indexed. Each backend (SQLite, PostgreSQL) runs it.
"""

from __future__ import annotations

from typing import Any

from fhir_helpers import OTHER_TENANT
from sqlalchemy import inspect, text

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.db.migrate import current_revisions, downgrade, head_revisions, upgrade
from hdsvault.platform import Platform
from hdsvault.records import searching, writes
from hdsvault.records.model import Caller
from hdsvault.records.store import RecordStore
from hdsvault.tenants.service import add_tenant

LOINC = "http://loinc.org"


def _caller(tenant: str) -> Caller:
    return Caller(Principal("migration-test", tenant, Role.SERVICE), tenant)


def _patient(family: str, given: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1970-05-04",
    }


def _observation(patient: str, code: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2020-03-15T10:00:00Z",
        "valueQuantity": {"value": value, "unit": "kg"},
    }


QUERIES: list[tuple[str, list[tuple[str, str]]]] = [
    ("Patient", [("family", "durand")]),
    ("Patient", [("family", "Mart")]),
    ("Patient", [("name", "camille"), ("birthdate", "1970-05-04")]),
    ("Patient", [("_id", "p1")]),
    ("Observation", [("code", f"{LOINC}|29463-7")]),
    ("Observation", [("subject", "Patient/p1"), ("code", f"{LOINC}|29463-7")]),
    ("Observation", [("code", f"{LOINC}|8302-2")]),
    ("Observation", [("subject:Patient.family", "durand")]),
    ("Observation", [("code:not", f"{LOINC}|8302-2")]),
    ("Observation", [("value-quantity", "gt70")]),
]


def _answers(store: RecordStore, tenant: str) -> list[tuple[int, list[str]]]:
    out = []
    for rt, pairs in QUERIES:
        page = searching.search(store, _caller(tenant), rt, pairs).page
        out.append((page.total, sorted(s.id for s in page.matches)))
    return out


def _put(store: RecordStore, tenant: str, rid: str, resource: dict[str, Any]) -> None:
    """Update-as-create under a client-chosen id (the same ids in both establishments)."""
    writes.update(store, _caller(tenant), resource["resourceType"], rid, {**resource, "id": rid})


def _fill(store: RecordStore, tenant: str, family: str) -> None:
    _put(store, tenant, "p1", _patient(family, "Camille"))
    _put(store, tenant, "p2", _patient("Martin", "Louise"))
    _put(store, tenant, "o1", _observation("p1", "29463-7", 72.5))
    _put(store, tenant, "o2", _observation("p2", "29463-7", 61.0))
    _put(store, tenant, "o3", _observation("p1", "8302-2", 170.0))
    # An update replaces the tokens; a delete removes them.
    _put(store, tenant, "o2", _observation("p2", "29463-7", 80.0))
    writes.delete(store, _caller(tenant), "Observation", "o3")


def _columns(platform: Platform) -> list[str]:
    return [c["name"] for c in inspect(platform.engine).get_columns("search_tokens")]


def _token_count(platform: Platform) -> int:
    with platform.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM search_tokens")).scalar_one())


def _head_token_count(platform: Platform) -> int:
    """Tokens the heads name (16 bytes each): what the index must hold, no more, no less."""
    with platform.engine.connect() as conn:
        blobs = conn.execute(text("SELECT tokens FROM resources WHERE tokens IS NOT NULL"))
        return sum(len(bytes(b)) // 16 for (b,) in blobs)


def test_upgrade_of_a_0004_database_keeps_every_search(platform: Platform, tenant: str) -> None:
    add_tenant(platform, OTHER_TENANT, "Clinique voisine", by="test")
    store = RecordStore(platform)
    _fill(store, tenant, "Durand")
    _fill(store, OTHER_TENANT, "Durand-Petit")  # same ids, overlapping values, other keys
    before = {t: _answers(store, t) for t in (tenant, OTHER_TENANT)}
    assert before[tenant][0] == (1, ["p1"])  # family=durand
    assert before[tenant][4] == (2, ["o1", "o2"])  # weights of both patients
    assert before[tenant][6] == (0, [])  # the deleted observation is not found
    assert before[tenant][9] == (2, ["o1", "o2"])  # 72.5 kg and the updated 80 kg
    indexed = _token_count(platform)
    assert indexed == _head_token_count(platform)

    # The database as revision 0004 left it: (tenant, type, token, id) rows.
    downgrade(platform.engine, "0004")
    assert _columns(platform) == ["tenant_id", "resource_type", "token", "resource_id"]
    with platform.engine.connect() as conn:
        per_tenant = dict(
            conn.execute(
                text("SELECT tenant_id, count(*) FROM search_tokens GROUP BY tenant_id")
            ).all()
        )
    assert sum(per_tenant.values()) == indexed
    assert set(per_tenant) == {tenant, OTHER_TENANT}

    upgrade(platform.engine)
    assert current_revisions(platform.engine) == head_revisions()
    assert _columns(platform) == ["token", "resource_id"]
    assert _token_count(platform) == indexed
    after = {t: _answers(store, t) for t in (tenant, OTHER_TENANT)}
    assert after == before

    # Writes after the upgrade are indexed in the new shape, and tenants stay apart.
    _put(store, tenant, "o4", _observation("p2", "8302-2", 165))
    assert _answers(store, tenant)[6] == (1, ["o4"])
    assert _answers(store, OTHER_TENANT)[6] == (0, [])
    assert _token_count(platform) == _head_token_count(platform)
