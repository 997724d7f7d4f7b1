"""``hdsvault drill run|list|show``: restore drills with a measured RTO and a signed report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hdsvault.backup.drill import RestoreDrill, list_drills, verify_report_signature
from hdsvault.backup.errors import BackupError
from hdsvault.backup.service import BackupService, dumps
from hdsvault.cli.backup import emit_json
from hdsvault.cli.context import (
    config_file,
    console,
    err_console,
    fail,
    opened_platform,
    operator_name,
)

app = typer.Typer(
    help="Restore drills: restore, serve, check, measure the RTO.", no_args_is_help=True
)


@app.command("run")
def run(
    snapshot: Annotated[
        str | None, typer.Option(help="Snapshot id or prefix (default: latest).")
    ] = None,
    random_pick: Annotated[bool, typer.Option("--random", help="Drill a random snapshot.")] = False,
    repo: Annotated[str | None, typer.Option("--repo", "-r", help="Repository name.")] = None,
    scratch: Annotated[
        Path | None, typer.Option(help="Scratch directory (default: $TMPDIR).")
    ] = None,
    lang: Annotated[str, typer.Option(help="Summary language: fr or en.")] = "fr",
    report_dir: Annotated[
        Path | None, typer.Option(help="Also write <id>.json and <id>.txt here.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the signed report.")] = False,
) -> None:
    """Restore a snapshot into a scratch directory, serve it, check it, measure the RTO."""
    with opened_platform() as platform:
        svc = BackupService(platform, operator_name(), config_file=config_file())
        drill = RestoreDrill(svc, repo, scratch_root=scratch, lang=lang)
        try:
            with console.status("restore drill") as status:
                report = drill.run(
                    snapshot,
                    pick_random=random_pick,
                    step=lambda s: status.update(f"restore drill: {s}"),
                )
        except BackupError as exc:
            fail(str(exc))
        signature = next(sig for r, sig in list_drills(platform.engine) if r.id == report.id)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / f"{report.id}.json").write_bytes(report.canonical())
        (report_dir / f"{report.id}.json.sig").write_text(signature + "\n")
        (report_dir / f"{report.id}.txt").write_text(report.summary + "\n")
    if json_out:
        emit_json(dumps({"report": json.loads(report.canonical()), "signature": signature}))
    else:
        console.print(report.summary, highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Past drills, newest first, with their signature checked."""
    from hdsvault.backup.service import BackupService

    with opened_platform() as platform:
        svc = BackupService(platform, operator_name())
        key = svc.signing_key().public_key()
        drills = list_drills(platform.engine)
        rows = [(r, verify_report_signature(r.canonical(), sig, key)) for r, sig in drills]
    if json_out:
        emit_json(
            dumps(
                [
                    {
                        "id": r.id,
                        "time": r.started_at,
                        "repository": r.repository,
                        "snapshot": r.snapshot,
                        "ok": r.ok,
                        "rto_seconds": r.rto_seconds,
                        "resources": r.total_resources,
                        "signature_valid": valid,
                    }
                    for r, valid in rows
                ]
            )
        )
        return
    table = Table(title="Restore drills")
    for col in ("id", "time", "repository", "snapshot", "resources", "RTO s", "result", "signed"):
        table.add_column(col)
    for r, valid in rows:
        table.add_row(
            r.id,
            r.started_at,
            r.repository,
            r.snapshot[:12],
            str(r.total_resources),
            f"{r.rto_seconds:.1f}",
            "[green]ok" if r.ok else "[red]FAILED",
            "yes" if valid else "[red]INVALID",
        )
    console.print(table)
    if any(not valid for _, valid in rows):
        err_console.print("[bold red]a drill report does not match its signature[/]")
        raise typer.Exit(1)
