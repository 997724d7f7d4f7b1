"""Acceptance: a restore drill restores, serves (real subprocess), checks and signs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from platformkit import TENANT, make_site, toml_repo
from sqlalchemy import select

from hdsvault.backup.drill import verify_report_signature
from hdsvault.db.schema import journal_entries


def test_drill_run_reports_rto_counts_journal_and_signature(tmp_path: Path, db_url: str) -> None:
    site = make_site(
        tmp_path / "site", db_url, [toml_repo("main", "local", path=str(tmp_path / "repo"))]
    )
    run = site.cli_json("backup", "run")[0]
    reports = tmp_path / "reports"
    out = site.cli_json(
        "drill", "run", "--scratch", str(tmp_path / "scratch"), "--report-dir", str(reports)
    )
    report, signature = out["report"], out["signature"]
    assert report["ok"], report["problems"]
    assert report["rto_seconds"] > 0
    assert report["snapshot"] == run["snapshot"]
    assert report["counts_match"] and report["counts_restored"] == report["counts_snapshot"]
    assert sum(report["counts_restored"][TENANT].values()) == run["resources"]
    assert report["journal_verified"] and report["journal_logs"]["platform"] > 0
    assert report["sample_reads"] and all(r["ok"] for r in report["sample_reads"])
    assert all("ciphertext identical" in r["detail"] for r in report["sample_reads"])
    assert "Exercice de restauration" in report["summary"]  # French by default
    assert not list((tmp_path / "scratch").iterdir())  # scratch data removed

    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(report["signer_public_key"]))
    body = (reports / f"{report['id']}.json").read_bytes()
    assert json.loads(body) == report
    assert verify_report_signature(body, signature, key)
    assert not verify_report_signature(body.replace(b'"ok":true', b'"ok":false'), signature, key)

    [listed] = site.cli_json("drill", "list")
    assert listed["id"] == report["id"] and listed["signature_valid"] and listed["ok"]
    platform = site.open()
    with platform.engine.connect() as conn:
        objects = conn.execute(
            select(journal_entries.c.objects).where(journal_entries.c.event_type == "drill.run")
        ).scalar_one()
    platform.close()
    assert f"DrillReport/{report['id']}" in json.loads(objects)

    if db_url.startswith("postgresql"):
        return  # the English summary once is enough (each drill starts a server)
    english = site.cli("drill", "run", "--lang", "en", "--scratch", str(tmp_path / "scratch"))
    assert "Restore drill" in english.output and "RTO" in english.output
