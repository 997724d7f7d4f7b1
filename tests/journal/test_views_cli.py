"""Auditor views (filters, access history, CSV/JSON) and the journal CLI end to end."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from hdsvault.config import Settings
from hdsvault.journal import service, views
from hdsvault.journal.entry import Outcome
from hdsvault.platform import Platform

from support.journal_entries import access

ROOT = Path(__file__).resolve().parents[2]


def test_access_history_and_exports(platform: Platform, tenant: str) -> None:
    with platform.engine.begin() as conn:
        service.record(conn, access(tenant, "oidc:dr-a", "Patient/p1"))
        service.record(conn, access(tenant, "oidc:dr-b", "Patient/p2"))
        service.record(conn, access(tenant, "oidc:nurse-c", "Patient/p1", Outcome.MINOR_FAILURE))
    service.integrate(platform)
    history = views.access_history(platform, tenant, "Patient/p1", by="os:dpo")
    assert [e.actor for e in history] == ["oidc:dr-a", "oidc:nurse-c"]
    rows = list(csv.DictReader(io.StringIO(views.to_csv(history))))
    assert rows[0]["actor"] == "oidc:dr-a" and rows[0]["has_sealed_detail"] == "True"
    assert "secret" not in views.to_csv(history)
    data = json.loads(views.to_json(history))
    assert data[1]["outcome"] == "4" and "detail_sealed" not in data[1]
    service.integrate(platform)
    reads = views.read_entries(platform, tenant, views.EntryFilter(actor="os:dpo"), by="os:dpo")
    assert any(e.event_type == "journal.read" for e in reads)  # the audit read itself is traced


def test_journal_cli_checkpoint_prove_verify_tamper(
    settings: Settings, tenant: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "HDSVAULT_DATA_DIR": str(settings.data_dir),
        "HDSVAULT_DATABASE__URL": settings.database_url,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["hdsvault", *args], env=env, capture_output=True, text=True)

    assert run("journal", "integrate").returncode == 0
    cp = tmp_path / "cp.txt"
    out = run("journal", "checkpoint", "--out", str(cp))
    assert out.returncode == 0 and cp.read_text().startswith("hdsvault.")
    vkey = out.stdout.split("verifier key: ")[1].split()[0]
    proof = run("journal", "prove", "0")
    assert proof.returncode == 0
    (tmp_path / "p.json").write_text(proof.stdout)
    (tmp_path / "pcp.txt").write_text(json.loads(proof.stdout)["checkpoint"])
    standalone = subprocess.run(
        [
            sys.executable,
            "-I",
            str(ROOT / "tools/verify_journal.py"),
            "inclusion",
            "--key",
            vkey,
            "--checkpoint",
            str(tmp_path / "pcp.txt"),
            str(tmp_path / "p.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert standalone.returncode == 0, standalone.stderr
    ok = run("journal", "verify", "--checkpoint", str(cp), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    # Tamper with the database behind hdsvault's back: verify exits 1 naming the index.
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE journal_entries SET actor = 'os:mallory' WHERE log_id = 'platform' AND seq = 0"
            )
        )
    engine.dispose()
    bad = run("journal", "verify", "--json")
    assert bad.returncode == 1
    platform_log = next(
        log for log in json.loads(bad.stdout)["logs"] if log["log_id"] == "platform"
    )
    assert platform_log["first_bad_index"] == 0
    csv_out = run("journal", "export", "--log", "platform", "--format", "csv")
    assert csv_out.returncode == 0 and "tenant.create" in csv_out.stdout
