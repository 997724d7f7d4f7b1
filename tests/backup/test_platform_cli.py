"""Acceptance through the CLI: tamper detection named exactly, salvage, WORM refusals,
retention that never removes a locked object, offline media, 3-2-1-1-0 status, journal."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from backupkit import flip_byte
from platformkit import Site, make_site, toml_repo
from sqlalchemy import select

from hdsvault.backup.worm import FS_APPEND_FL, FS_IMMUTABLE_FL, immutability_problem, set_flags
from hdsvault.db.schema import journal_entries


def _entries(site: Site, event: str) -> list[tuple[str, list[str], str]]:
    platform = site.open()
    try:
        with platform.engine.connect() as conn:
            rows = conn.execute(
                select(
                    journal_entries.c.outcome, journal_entries.c.objects, journal_entries.c.severity
                ).where(journal_entries.c.event_type == event)
            ).all()
    finally:
        platform.close()
    return [(r.outcome, json.loads(r.objects), r.severity) for r in rows]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(
        tmp_path / "site",
        "sqlite:///",
        [toml_repo("main", "local", path=str(tmp_path / "repo"))],
        bundles=1,
    )


def _packs(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "data").rglob("*") if p.is_file())


def test_tamper_is_named_by_verify_and_restore_refuses_unless_salvage(
    site: Site, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    first = site.cli_json("backup", "run")[0]
    second = site.cli_json("backup", "run")[0]
    assert site.cli_json("backup", "verify", "--read-data")["ok"]
    assert [e[1][-1] for e in _entries(site, "backup.run")] == ["BackupSeq/1", "BackupSeq/2"]

    # 1. a flipped byte in a pack: named by read-data, restore refuses, salvage restores the rest
    pack = max(_packs(repo), key=lambda p: p.stat().st_size)
    flip_byte(pack, pack.stat().st_size // 3)
    report = site.cli_json("backup", "verify", "--read-data", ok=False)
    assert not report["ok"]
    [problem] = [p for p in report["problems"] if p["error"]]
    assert problem["kind"] == "pack-corrupt"
    assert problem["subject"] == pack.relative_to(repo).as_posix()
    hit = {a["snapshot"] for a in problem["affected"]}
    assert hit and hit <= {first["snapshot"], second["snapshot"]}
    assert all(a["path"].startswith(("/platform/", "/blobs/")) for a in problem["affected"])
    damaged = sorted(hit)[0]  # a snapshot that really uses the corrupt pack
    failed = site.cli("backup", "restore", damaged, "--to", str(tmp_path / "out"), ok=False)
    assert failed.exit_code == 1 and "restore refused" in failed.output
    assert not (tmp_path / "out").exists()
    salvaged = site.cli(
        "backup", "restore", damaged, "--to", str(tmp_path / "out"), "--salvage", ok=False
    )
    assert salvaged.exit_code == 1 and "Not restored" in salvaged.output
    assert (tmp_path / "out/platform/MANIFEST.json").is_file()
    warnings = [e for e in _entries(site, "backup.verify") if e[0] != "0"]
    assert warnings and all(sev == "warning" for _, _, sev in warnings)
    flip_byte(pack, pack.stat().st_size // 3)  # undo

    # 2. a deleted pack: named by the metadata check
    os.remove(pack)
    report = site.cli_json("backup", "verify", ok=False)
    assert [p["subject"] for p in report["problems"] if p["kind"] == "pack-missing"] == [
        pack.relative_to(repo).as_posix()
    ]
    shutil.rmtree(tmp_path / "out")


def test_altered_and_replayed_manifests_are_named(site: Site, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = site.cli_json("backup", "run")[0]["snapshot"]
    second = site.cli_json("backup", "run")[0]["snapshot"]
    snapdir = repo / "snapshots"

    saved = (snapdir / second).read_bytes()
    flip_byte(snapdir / second, 50)
    report = site.cli_json("backup", "verify", ok=False)
    assert [p["subject"] for p in report["problems"] if p["kind"] == "manifest-altered"] == [
        f"snapshots/{second}"
    ]
    (snapdir / second).write_bytes(saved)

    # Replay: the newest manifest removed and the old one copied in its place. The repository
    # alone looks like a valid one-snapshot history; the journal remembers seq 2.
    os.remove(snapdir / second)
    shutil.copy(snapdir / first, snapdir / ("e" * 64))
    report = site.cli_json("backup", "verify", ok=False)
    kinds = {p["kind"]: p for p in report["problems"]}
    assert kinds["manifest-replayed"]["subject"] == f"snapshots/{'e' * 64}"
    assert "seq 2 was seen before" in kinds["rollback"]["detail"]
    os.remove(snapdir / ("e" * 64))
    report = site.cli_json("backup", "verify", ok=False)  # plain rollback: still caught
    assert [p["kind"] for p in report["problems"]] == ["rollback"]


@pytest.fixture
def worm_site(tmp_path: Path) -> Site:
    problem = immutability_problem(tmp_path)
    if problem is not None:
        pytest.skip(problem)
    yield make_site(
        tmp_path / "site",
        "sqlite:///",
        [toml_repo("worm", "hardened-local", path=str(tmp_path / "worm"), retention_days=30)],
        bundles=0,
    )
    for dirpath, dirs, files in os.walk(tmp_path / "worm"):
        for name in dirs + files:
            set_flags(Path(dirpath, name), remove=FS_IMMUTABLE_FL | FS_APPEND_FL)
    set_flags(tmp_path / "worm", remove=FS_IMMUTABLE_FL | FS_APPEND_FL)


def test_worm_refuses_deletion_through_hdsvault_and_the_os(worm_site: Site, tmp_path: Path) -> None:
    from hdsvault.backup import ObjectExistsError, ObjectLockedError
    from hdsvault.backup.service import open_backend

    first = worm_site.cli_json("backup", "run")[0]["snapshot"]
    worm_site.cli_json("backup", "run")
    forgot = worm_site.cli_json("backup", "forget", "--policy", "last=1")
    assert forgot["remove"] == [first] and forgot["locked"] == [first] and forgot["removed"] == []
    assert forgot["packs_deleted"] == 0
    listed = worm_site.cli_json("backup", "list")
    assert listed[0]["id"] == first and all(s["locked"] for s in listed)

    backend = open_backend(worm_site.settings.backup.repositories[0])
    with pytest.raises(ObjectLockedError):
        backend.delete(f"snapshots/{first}")
    with pytest.raises(ObjectExistsError):  # no overwrite through hdsvault either
        backend.put(f"snapshots/{first}", b"forged")
    path = tmp_path / "worm" / "snapshots" / first
    for attempt in (
        lambda: os.remove(path),
        lambda: open(path, "r+b"),  # noqa: SIM115
        lambda: os.rename(path, path.with_name("x")),
    ):
        with pytest.raises(PermissionError) as exc:
            attempt()
        assert exc.value.errno == errno.EPERM  # even as root: the immutable flag
    assert worm_site.cli_json("backup", "verify", "--read-data")["ok"]


def test_export_media_verify_and_status(site: Site, tmp_path: Path) -> None:
    site.cli("backup", "run")
    status = site.cli_json("backup", "status", ok=False)
    assert status["counts"]["copies"] == 2 and not status["rules"]["1 immutable or offline"]
    assert "repo:main: never verified" in status["counts"]["verification_errors"]

    medium = tmp_path / "usb"
    site.cli("backup", "export", "--to", str(medium), "--label", "USB-2026-01")
    assert {p.name for p in medium.iterdir()} >= {
        "repository",
        "EXPORT.json",
        "EXPORT.json.sig",
        "SHA256SUMS",
        "README-RESTORE.md",
    }
    [m] = site.cli_json("backup", "media", "list")
    assert m["label"] == "USB-2026-01" and m["last_result"] == "never"
    site.cli("backup", "media", "verify", "USB-2026-01", "--path", str(medium))
    site.cli("backup", "verify", "--read-data")
    [m] = site.cli_json("backup", "media", "list")
    assert m["last_result"] == "ok" and m["last_verified_at"]

    status = site.cli_json("backup", "status")  # production + local repo + offline USB
    assert status["ok"], status
    assert status["counts"] == {
        "copies": 3,
        "media": 2,
        "offsite": 1,
        "immutable_or_offline": 1,
        "verification_errors": [],
    }

    # a medium altered while in the drawer: named, and the status loses its "0"
    pack = _packs(medium / "repository")[0]
    flip_byte(pack, 10)
    bad = site.cli_json("backup", "media", "verify", "USB-2026-01", "--path", str(medium), ok=False)
    assert not bad["ok"] and any("SHA256SUMS" in p for p in bad["problems"])
    status = site.cli_json("backup", "status", ok=False)
    assert not status["rules"]["0 errors"]
    assert [e[0] for e in _entries(site, "backup.media.verify")] == ["0", "8"]
    assert _entries(site, "backup.export")


def test_offline_copy_restores_with_the_escrow_passphrase(site: Site, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple, PRA envelope")
    site.cli("backup", "escrow", "add", "--passphrase-file", str(pw))
    site.cli("backup", "run")
    signer = site.cli_json("backup", "status", ok=False)["signer_public_key"]
    site.cli("backup", "export", "--to", str(tmp_path / "usb"), "--label", "L1")
    out = site.cli(
        "backup",
        "restore",
        "latest",
        "--to",
        str(tmp_path / "out"),
        "--from-dir",
        str(tmp_path / "usb/repository"),
        "--escrow",
        "--passphrase-file",
        str(pw),
        "--trust-signer",
        signer,
    )
    assert "restored" in out.output
    assert (tmp_path / "out/platform/database/hdsvault.sqlite").is_file()


def test_daemon_cycle_runs_verifies_and_applies_retention(site: Site) -> None:
    site.cli("backup", "daemon", "--once")
    site.cli("backup", "daemon", "--once")
    assert len(site.cli_json("backup", "list")) == 1  # keep daily=30: one per day survives
    assert [e[0] for e in _entries(site, "backup.verify")] == ["0", "0"]
    assert len(_entries(site, "backup.forget")) == 2


def test_policy_parsing_and_schedule() -> None:
    from datetime import UTC, datetime

    from hdsvault.backup import BackupError
    from hdsvault.backup.schedule import Schedule
    from hdsvault.backup.service import parse_policy

    p = parse_policy("daily=30,monthly=12,yearly=10")
    assert (p.keep_daily, p.keep_monthly, p.keep_yearly) == (30, 12, 10)
    for bad in ("daily=x", "hourly=3", "", "daily=0"):
        with pytest.raises(BackupError):
            parse_policy(bad)
    now = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    daily = Schedule.parse("daily 02:30")
    assert daily.next_run(None, now) == now
    assert daily.next_run(datetime(2026, 1, 2, 2, 31, tzinfo=UTC), now) == datetime(
        2026, 1, 3, 2, 30, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        Schedule.parse("0 2 * * *")
