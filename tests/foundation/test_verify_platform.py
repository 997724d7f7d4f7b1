"""``hdsvault verify`` (invariant 5): every stored byte is checked, every breach is named.

A small platform (a FHIR resource, a DICOM instance, journal entries) on each database
backend; then one byte of each kind of stored data is tampered with, directly in the
database or the blob store, and the verification must name it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import select, update

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.blobs import open_blob_store
from hdsvault.config import Settings
from hdsvault.db.schema import imaging_instances, journal_entries, resource_versions
from hdsvault.imaging.store import ImagingStore
from hdsvault.integrity.run import verify_platform
from hdsvault.journal import service as journal
from hdsvault.platform import Platform
from hdsvault.records import writes
from hdsvault.records.model import Caller
from hdsvault.records.store import RecordStore
from hdsvault.tenants.service import add_tenant, shred_tenant

OTHER = "130786049"


def _caller(tenant: str, role: Role) -> Caller:
    return Caller(Principal(f"test:{role.value}", tenant, role), tenant)


def _fill(platform: Platform, tenant: str) -> None:
    store = RecordStore(platform)
    for family in ("Durand", "Petit"):
        writes.create(
            store,
            _caller(tenant, Role.CLINICIAN),
            "Patient",
            {"resourceType": "Patient", "name": [{"family": family}]},
        )
    imaging = ImagingStore(platform)
    try:
        path = get_testdata_file("CT_small.dcm")
        assert path is not None
        imaging.store(_caller(tenant, Role.RADIOLOGY), Path(str(path)).read_bytes(), source="test")
    finally:
        imaging.close()
    journal.integrate(platform)


def _flip(data: bytes, at: int = -1) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def _findings(platform: Platform, component: str) -> list[str]:
    report = verify_platform(platform, actor="test")
    found = next(c for c in report.components if c.name.startswith(component))
    return [f"{f.where}: {f.problem}" for f in found.findings]


def test_a_clean_platform_verifies_and_the_run_is_journaled(
    platform: Platform, tenant: str
) -> None:
    _fill(platform, tenant)
    report = verify_platform(platform, actor="operator:test")
    assert report.ok, report.to_json()
    checked = {c.name.split(" ")[0]: c.checked for c in report.components}
    assert checked["sealed"] >= 5  # 2 resources + study, series, instance metadata
    assert checked["blobs"] == 1
    assert checked["journal"] > 0
    with platform.engine.connect() as conn:
        outcome = conn.execute(
            select(journal_entries.c.outcome).where(
                journal_entries.c.event_type == "platform.verify"
            )
        ).scalar_one()
    assert outcome == "0"


def test_an_edited_resource_ciphertext_is_named(platform: Platform, tenant: str) -> None:
    _fill(platform, tenant)
    v = resource_versions.c
    with platform.engine.begin() as conn:
        rid, body = conn.execute(
            select(v.resource_id, v.body).where(v.resource_type == "Patient").limit(1)
        ).one()
        conn.execute(update(resource_versions).where(v.resource_id == rid).values(body=_flip(body)))
    found = _findings(platform, "sealed")
    assert len(found) == 1 and rid in found[0] and "resource_versions" in found[0]


def test_a_ciphertext_moved_to_another_row_is_named(platform: Platform, tenant: str) -> None:
    _fill(platform, tenant)
    v = resource_versions.c
    with platform.engine.begin() as conn:
        (_, body_a), (b, _) = conn.execute(
            select(v.resource_id, v.body).where(v.resource_type == "Patient")
        ).all()
        conn.execute(update(resource_versions).where(v.resource_id == b).values(body=body_a))
    found = _findings(platform, "sealed")
    assert len(found) == 1 and b in found[0]


def test_a_tampered_and_a_missing_blob_are_named(platform: Platform, tenant: str) -> None:
    _fill(platform, tenant)
    with platform.engine.connect() as conn:
        key = conn.execute(select(imaging_instances.c.blob_key)).scalar_one()
    blobs = open_blob_store(platform.settings, platform.engine)
    blobs.put(key, _flip(blobs.get(key), 100))
    assert any(key in f and "differs" in f for f in _findings(platform, "blobs"))
    blobs.delete(key)
    assert any(key in f and "missing" in f for f in _findings(platform, "blobs"))


def test_an_edited_journal_entry_is_named(platform: Platform, tenant: str) -> None:
    _fill(platform, tenant)
    with platform.engine.begin() as conn:
        conn.execute(
            update(journal_entries)
            .where(journal_entries.c.seq == 0, journal_entries.c.log_id == tenant)
            .values(actor="someone-else")
        )
    found = _findings(platform, "journal")
    assert any(f"log {tenant} index 0" in f for f in found)


def test_a_shredded_tenant_is_skipped_not_reported(platform: Platform, tenant: str) -> None:
    add_tenant(platform, OTHER, "Clinique shred", by="test")
    _fill(platform, OTHER)
    shred_tenant(platform, OTHER, by="test")
    report = verify_platform(platform, actor="test")
    sealed = next(c for c in report.components if c.name.startswith("sealed"))
    assert sealed.ok and sealed.skipped >= 5 and "shredded" in sealed.note


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_exit_code_and_json(settings: Settings, platform: Platform, tenant: str) -> None:
    _fill(platform, tenant)
    env = {
        **os.environ,
        "HDSVAULT_DATA_DIR": str(settings.data_dir),
        "HDSVAULT_DATABASE__URL": str(settings.database.url),
    }
    env.pop("HDSVAULT_CONFIG", None)
    ok = subprocess.run(["hdsvault", "verify", "--json"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    v = resource_versions.c
    with platform.engine.begin() as conn:
        body = conn.execute(select(v.body).limit(1)).scalar_one()
        conn.execute(update(resource_versions).where(v.body == body).values(body=_flip(body)))
    bad = subprocess.run(["hdsvault", "verify", "--json"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    sealed = next(c for c in report["components"] if c["name"].startswith("sealed"))
    assert sealed["findings_total"] == 1
    human = subprocess.run(["hdsvault", "verify"], env=env, capture_output=True, text=True)
    assert human.returncode == 1 and "BAD" in human.stdout


def test_orphan_blobs_are_counted_not_reported(platform: Platform, tenant: str) -> None:
    _fill(platform, tenant)
    blobs = open_blob_store(platform.settings, platform.engine)
    blobs.put(f"{tenant}/zz/orphan-left-by-a-crash", b"sealed bytes nobody refers to")
    report = verify_platform(platform, actor="test")
    found = next(c for c in report.components if c.name.startswith("blobs"))
    assert found.ok and found.checked == 1
    assert found.note.startswith("1 unreferenced blobs") and "orphan-left-by-a-crash" in found.note
