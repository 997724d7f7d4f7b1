"""``hdsvault journal``: integrate, verify, export checkpoints, prove inclusion."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from hdsvault.cli.context import console, fail, opened_platform
from hdsvault.journal import service
from hdsvault.journal.checkpoint import CheckpointError
from hdsvault.journal.entry import PLATFORM_LOG

app = typer.Typer(help="The tamper-evident journal.", no_args_is_help=True)
Log = Annotated[str, typer.Option("--log", help="Log: 'platform' or a tenant FINESS.")]


@app.command()
def integrate() -> None:
    """Sequence pending entries into the trees and sign checkpoints."""
    with opened_platform() as platform:
        done = service.integrate(platform)
    for i in done:
        console.print(f"[green]✓[/] log {i.log_id}: {i.old_size} -> {i.new_size} entries")
    if not done:
        console.print("nothing pending")


@app.command()
def verify(
    checkpoint: Annotated[
        Path | None, typer.Option(help="A checkpoint kept elsewhere (witness, WORM, paper).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Recompute every log and check it against its signed checkpoints. Exit 1 on any problem."""
    note = checkpoint.read_text() if checkpoint else None
    with (
        opened_platform() as platform,
        Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True
        ) as bar,
    ):
        task = bar.add_task("verifying", total=None)
        try:
            report = service.verify(
                platform,
                external_note=note,
                progress=lambda n: bar.update(task, description=f"verified {n} entries"),
            )
        except CheckpointError as exc:
            fail(f"external checkpoint rejected: {exc}")
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "logs": [
                        {
                            "log_id": r.log_id,
                            "entries": r.entries,
                            "compiled_entries": r.compiled_entries,
                            "checkpoints": r.checkpoints,
                            "pending": r.pending,
                            "first_bad_index": r.first_bad_index,
                            "problems": [p.__dict__ for p in r.problems],
                        }
                        for r in report.logs
                    ],
                },
                indent=2,
            )
        )
    else:
        table = Table("log", "entries", "checkpoints", "pending", "first bad index", "state")
        for r in report.logs:
            table.add_row(
                r.log_id,
                str(r.entries),
                str(r.checkpoints),
                str(r.pending),
                "" if r.first_bad_index is None else str(r.first_bad_index),
                "[red]TAMPERED[/]" if r.problems else "[green]ok[/]",
            )
        console.print(table)
        for p in report.problems:
            console.print(
                f"[red]✗[/] {p.log_id} #{'-' if p.index is None else p.index} {p.kind}: {p.message}"
            )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def checkpoint(
    out: Annotated[
        Path | None, typer.Option(help="Write the signed checkpoint to this file.")
    ] = None,
    log: Log = PLATFORM_LOG,
) -> None:
    """Export the latest signed checkpoint of a log (and print the verifier key)."""
    with opened_platform() as platform:
        try:
            note = service.latest_checkpoint(platform, log)
        except service.JournalError as exc:
            fail(str(exc))
        vkey = platform.journal_signer().verifier_key
    if out:
        out.write_text(note)
        console.print(f"[green]✓[/] checkpoint written to {out}")
    else:
        print(note, end="")
    console.print(f"verifier key: {vkey}", highlight=False)


@app.command()
def prove(index: int, log: Log = PLATFORM_LOG) -> None:
    """Print an inclusion proof (JSON) of entry INDEX in the latest checkpoint."""
    with opened_platform() as platform:
        try:
            proof = service.prove_inclusion(platform, log, index)
        except service.JournalError as exc:
            fail(str(exc))
    print(service.to_json(proof))


@app.command("export")
def export_entries(
    log: Log,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    patient: Annotated[str | None, typer.Option(help="Only this patient (Patient/<id>).")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    since: Annotated[datetime | None, typer.Option(help="From this time (UTC).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Before this time (UTC).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout).")] = None,
) -> None:
    """Export journal entries for an auditor or the DPO (CSV or JSON; the read is journaled)."""
    from hdsvault.cli.context import operator_name
    from hdsvault.journal import views

    if fmt not in ("csv", "json"):
        fail("--format must be csv or json")
    f = views.EntryFilter(
        patient=patient,
        actor=actor,
        since=since.replace(tzinfo=UTC) if since else None,
        until=until.replace(tzinfo=UTC) if until else None,
    )
    with opened_platform() as platform:
        entries = views.read_entries(platform, log, f, by=operator_name())
    data = views.to_csv(entries).encode() if fmt == "csv" else views.to_json(entries)
    if out:
        out.write_bytes(data)
        console.print(f"[green]✓[/] {len(entries)} entries written to {out}")
    else:
        sys.stdout.buffer.write(data)


@app.command("access-history")
def access_history(
    patient: Annotated[str, typer.Argument(help="Patient/<id>")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="FINESS of the establishment.")],
) -> None:
    """Who accessed this patient's record (the patient's right of access)."""
    from hdsvault.cli.context import operator_name
    from hdsvault.journal import views

    with opened_platform() as platform:
        entries = views.access_history(platform, tenant, patient, by=operator_name())
    table = Table("time (UTC)", "who", "role", "RPPS", "what", "outcome", "purpose")
    for e in entries:
        table.add_row(
            f"{e.time:%Y-%m-%d %H:%M:%S}",
            e.actor,
            e.actor_role or "",
            e.professional_id or "",
            e.event_type,
            "ok" if e.outcome.value == "0" else "denied",
            e.purpose_of_use or "",
        )
    console.print(table)
