"""Acceptance: back up a loaded platform, destroy it, restore it, and a fresh server serves
the same data with a journal that verifies — on SQLite and on a real PostgreSQL cluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from platformkit import TENANT, make_site, serving, toml_repo, without_meta
from sqlalchemy import func, select

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.db.schema import resources
from hdsvault.records import reads
from hdsvault.records.model import Caller
from hdsvault.records.store import RecordStore


def test_backup_destroy_restore_serve(
    tmp_path: Path, db_url: str, request: pytest.FixtureRequest
) -> None:
    site = make_site(
        tmp_path / "site", db_url, [toml_repo("main", "local", path=str(tmp_path / "repo"))]
    )

    # What the platform holds and serves before the disaster.
    platform = site.open()
    with platform.engine.connect() as conn:
        rows = conn.execute(
            select(resources.c.resource_type, resources.c.resource_id).where(
                resources.c.tenant_id == TENANT
            )
        ).all()
        total = conn.execute(select(func.count()).select_from(resources)).scalar_one()
    assert total > 300
    caller = Caller(Principal(subject="os:test", tenant=TENANT, role=Role.SERVICE), TENANT)
    sample = [rows[i] for i in range(0, len(rows), max(1, len(rows) // 8))][:8]
    store = RecordStore(platform)
    before = {f"{t}/{i}": reads.read(store, caller, t, i).resource for t, i in sample}
    platform.close()

    run = site.cli_json("backup", "run")
    assert run[0]["resources"] == total and run[0]["seq"] == 1
    status = site.cli_json("backup", "status", ok=False)
    signer = status["signer_public_key"]

    # Ransomware: the data directory is gone, and for PostgreSQL the database too.
    shutil.rmtree(site.data_dir)
    if db_url.startswith("postgresql"):
        cluster = request.getfixturevalue("pg_cluster")
        name = db_url.rsplit("/", 1)[1]
        cluster.psql(f'DROP DATABASE "{name}" WITH (FORCE)')
    assert site.cli("backup", "list", ok=False).exit_code != 0  # the platform cannot open

    out = site.cli(
        "backup",
        "restore",
        "latest",
        "--to",
        str(site.data_dir),
        "--platform",
        "--trust-signer",
        signer,
    ).output
    assert "platform restored" in out and "disaster-recovery mode" in out
    assert not (site.data_dir / "keys").exists()  # the KEK was never in the backup

    site.cli("journal", "verify")
    with serving(site) as base:
        headers = {"Authorization": f"Bearer {site.token}"}  # a token issued before the backup
        for ref, body in before.items():
            res = httpx.get(f"{base}/fhir/{TENANT}/{ref}", headers=headers, timeout=10)
            assert res.status_code == 200, res.text
            assert without_meta(res.json()) == without_meta(body or {})
    platform = site.open()
    with platform.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(resources)).scalar_one() == total
    platform.close()
    # the restore itself is in the restored platform's journal, which still verifies
    site.cli("journal", "verify")


def test_snapshot_never_holds_the_kek_or_the_hsm_pin(tmp_path: Path) -> None:
    from hdsvault.backup.platform_snapshot import strip_secrets

    site = make_site(
        tmp_path / "site",
        f"sqlite:///{tmp_path}/site/var/hdsvault.db",
        [toml_repo("main", "local", path=str(tmp_path / "repo"))],
        bundles=0,
    )
    text = site.config.read_text() + (
        '\n[kek.pkcs11]\nmodule = "/usr/lib/softhsm/libsofthsm2.so"\ntoken_label = "t"\n'
        'pin = "1234-SECRET-PIN"\n'
    )
    stripped = strip_secrets(text)
    assert "1234-SECRET-PIN" not in stripped and "token_label" in stripped
    site.cli("backup", "run")
    site.cli("backup", "restore", "latest", "--to", str(tmp_path / "out"))
    kek = (tmp_path / "site/safe/kek.key").read_bytes().split(b"\n")[1]
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert kek not in path.read_bytes(), path
    assert (tmp_path / "out/platform/config/hdsvault.toml").is_file()
    assert (tmp_path / "out/platform/journal/checkpoints/platform.note").is_file()
