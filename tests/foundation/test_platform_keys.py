"""The key hierarchy through the platform: tenants, rotation, rewrap, shredding, start-up checks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from hdsvault.config import Settings
from hdsvault.crypto.errors import DecryptionError, KekError
from hdsvault.crypto.keyring import TenantKeysMissing
from hdsvault.crypto.sealed import resource_context
from hdsvault.db.schema import resource_versions
from hdsvault.platform import Platform, PlatformNotReady
from hdsvault.tenants.keys import count_on_old_versions, rewrap, rotate_keys
from hdsvault.tenants.service import TenantError, add_tenant, get_tenant, shred_tenant

MARKER = "DUPONT-Jeanne-1962-03-14-MARKER"


def store(platform: Platform, tenant: str, rid: str, body: bytes, version: int = 1) -> None:
    """Seal and store one resource version the way the records service does."""
    with platform.engine.begin() as conn:
        keys = platform.keyring.data_keys(conn, tenant)
        conn.execute(
            insert(resource_versions).values(
                tenant_id=tenant,
                resource_type="Patient",
                resource_id=rid,
                version_id=version,
                key_version=keys.current_version,
                body=keys.seal(body, resource_context(tenant, "Patient", rid, version)),
                deleted=False,
                last_updated=__import__("datetime").datetime.now(),
            )
        )


def load(platform: Platform, tenant: str, rid: str, version: int = 1) -> bytes:
    with platform.engine.connect() as conn:
        row = conn.execute(
            select(resource_versions).where(
                resource_versions.c.tenant_id == tenant,
                resource_versions.c.resource_id == rid,
                resource_versions.c.version_id == version,
            )
        ).one()
        keys = platform.keyring.data_keys(conn, tenant)
        return keys.open(row.body, resource_context(tenant, "Patient", rid, version))


def test_tenant_round_trip_and_duplicate(platform: Platform, tenant: str) -> None:
    store(platform, tenant, "p1", MARKER.encode())
    assert load(platform, tenant, "p1") == MARKER.encode()
    with pytest.raises(TenantError, match="already exists"):
        add_tenant(platform, tenant, "again", by="test")
    assert get_tenant(platform, tenant).stored_versions == 1


def test_ciphertext_moved_to_another_record_or_tenant_fails(
    platform: Platform, tenant: str
) -> None:
    other = add_tenant(platform, "690781810", "Autre établissement", by="test").id
    store(platform, tenant, "p1", b"record one")
    store(platform, tenant, "p2", b"record two")
    store(platform, other, "p1", b"other tenant")
    with platform.engine.begin() as conn:
        stolen = conn.execute(
            select(resource_versions.c.body).where(
                resource_versions.c.tenant_id == tenant, resource_versions.c.resource_id == "p1"
            )
        ).scalar_one()
        for target_tenant, rid in ((tenant, "p2"), (other, "p1")):
            conn.execute(
                update(resource_versions)
                .where(
                    resource_versions.c.tenant_id == target_tenant,
                    resource_versions.c.resource_id == rid,
                )
                .values(body=stolen)
            )
    with pytest.raises(DecryptionError):
        load(platform, tenant, "p2")
    with pytest.raises(DecryptionError):
        load(platform, other, "p1")
    assert load(platform, tenant, "p1") == b"record one"


def test_rotation_keeps_old_data_and_rewrap_leaves_nothing_old(
    platform: Platform, tenant: str
) -> None:
    for i in range(7):
        store(platform, tenant, f"old{i}", f"before rotation {i}".encode())
    assert rotate_keys(platform, tenant, by="test") == 2
    store(platform, tenant, "new", b"after rotation")
    assert load(platform, tenant, "old3") == b"before rotation 3"
    assert count_on_old_versions(platform, tenant) == 7
    seen: list[tuple[int, int]] = []
    report = rewrap(platform, tenant, by="test", progress=lambda d, t: seen.append((d, t)))
    assert (report.rewrapped, report.remaining_on_old_versions, report.target_version) == (7, 0, 2)
    assert seen[-1] == (7, 7)
    with platform.engine.connect() as conn:
        versions = set(conn.execute(select(resource_versions.c.key_version)).scalars())
    assert versions == {2}
    assert all(
        load(platform, tenant, f"old{i}") == f"before rotation {i}".encode() for i in range(7)
    )


def test_shred_makes_only_that_tenant_unreadable(platform: Platform, tenant: str) -> None:
    other = add_tenant(platform, "690781810", "Autre établissement", by="test").id
    store(platform, tenant, "p1", MARKER.encode())
    store(platform, other, "p1", b"survives")
    cert = shred_tenant(platform, tenant, by="os:dpo")
    assert cert.keys_destroyed == 2 and cert.ciphertexts_left_unreadable == 1
    assert cert.path.stat().st_mode & 0o777 == 0o600
    text = cert.path.read_text()
    assert tenant in text and "os:dpo" in text and "shredded_at" in text
    with pytest.raises(TenantKeysMissing):
        load(platform, tenant, "p1")
    # A fresh process (no key cache) cannot read it either.
    fresh = Platform.open(platform.settings)
    try:
        with pytest.raises(TenantKeysMissing):
            load(fresh, tenant, "p1")
        assert load(fresh, other, "p1") == b"survives"
    finally:
        fresh.close()
    with pytest.raises(TenantError, match="already"):
        shred_tenant(platform, tenant, by="test")


def test_raw_database_holds_no_plaintext(
    platform: Platform, tenant: str, db_url: str, request: pytest.FixtureRequest
) -> None:
    for i in range(20):
        store(platform, tenant, f"p{i}", f"{MARKER} #{i}".encode())
    if db_url.startswith("sqlite"):
        platform.engine.dispose()  # checkpoint the WAL into the file
        raw = b"".join(
            p.read_bytes() for p in Path(db_url[len("sqlite:///") :]).parent.glob("hdsvault.db*")
        )
    else:
        cluster = request.getfixturevalue("pg_cluster")
        raw = cluster.pg_dump(db_url.rsplit("/", 1)[1])
    assert len(raw) > 10_000
    assert b"resource_versions" in raw or db_url.startswith("sqlite")
    assert MARKER.encode() not in raw
    assert MARKER.encode().hex().encode() not in raw.lower()


def test_missing_key_file_refuses_start(settings: Settings) -> None:
    settings.kek_file.unlink()
    with pytest.raises(KekError, match="no key file"):
        Platform.open(settings)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_loose_key_file_permissions_refuse_start(settings: Settings, mode: int) -> None:
    os.chmod(settings.kek_file, mode)
    with pytest.raises(KekError, match="chmod 600"):
        Platform.open(settings)


def test_wrong_key_file_refuses_start(settings: Settings, tenant: str, tmp_path: Path) -> None:
    from hdsvault.crypto.kek import FileKEK

    settings.kek_file.unlink()
    FileKEK.create(settings.kek_file)  # a different key at the same place
    with pytest.raises(KekError, match="wrapped by KEK"):
        Platform.open(settings)


def test_uninitialised_database_refuses_start(tmp_path: Path) -> None:
    from hdsvault.config import load_settings
    from hdsvault.crypto.kek import FileKEK

    s = load_settings(data_dir=tmp_path / "v")
    FileKEK.create(s.kek_file)
    with pytest.raises(PlatformNotReady, match="hdsvault init"):
        Platform.open(s)


def test_cli_refusal_message_and_exit_code(settings: Settings) -> None:
    os.chmod(settings.kek_file, 0o644)
    env = {
        **os.environ,
        "HDSVAULT_DATA_DIR": str(settings.data_dir),
        "HDSVAULT_DATABASE__URL": settings.database_url,
    }
    result = subprocess.run(["hdsvault", "tenant", "list"], env=env, capture_output=True, text=True)
    assert result.returncode == 3
    assert "chmod 600" in result.stderr and str(settings.kek_file) in result.stderr.replace(
        "\n", ""
    )


def test_cli_shred_needs_the_typed_finess(settings: Settings, tenant: str) -> None:
    env = {
        **os.environ,
        "HDSVAULT_DATA_DIR": str(settings.data_dir),
        "HDSVAULT_DATABASE__URL": settings.database_url,
    }
    refused = subprocess.run(
        ["hdsvault", "tenant", "shred", tenant],
        env=env,
        input="123456789\n",
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "nothing was destroyed" in refused.stderr
    assert (
        "active"
        in subprocess.run(
            ["hdsvault", "tenant", "list"], env=env, capture_output=True, text=True
        ).stdout
    )
    done = subprocess.run(
        ["hdsvault", "tenant", "shred", tenant],
        env=env,
        input=f"{tenant}\n",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    cert = next(settings.certificates_dir.glob(f"shred-{tenant}-*.json"))
    assert '"keys_destroyed": 2' in cert.read_text()
    listing = subprocess.run(
        ["hdsvault", "tenant", "list"], env=env, capture_output=True, text=True
    ).stdout
    assert "shredded" in listing
