"""``hdsvault verify``: check every stored byte (sealed data, blobs, journal, backups)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from hdsvault.cli.context import config_file, console, opened_platform, operator_name


def verify(
    backups: Annotated[
        bool,
        typer.Option("--backups", help="Also verify every backup repository (reads all packs)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Check every stored byte: AEAD tags, blob hashes, the journal (and backups). Exit 1 if bad."""
    from hdsvault.integrity.run import verify_platform

    with (
        opened_platform() as platform,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            disable=as_json,
        ) as bar,
    ):
        tasks: dict[str, TaskID] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total or None)
            bar.update(tasks[name], completed=done, total=total or None)

        report = verify_platform(
            platform,
            actor=operator_name(),
            backups=backups,
            config_file=config_file(),
            progress=progress,
        )
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        table = Table("what", "checked", "findings", "seconds", "state", "note")
        for c in report.components:
            table.add_row(
                c.name,
                str(c.checked),
                str(len(c.findings)),
                f"{c.seconds:.1f}",
                "[green]ok[/]" if c.ok else "[bold red]BAD[/]",
                c.note,
            )
        console.print(table)
        for c in report.components:
            for f in c.findings[:20]:
                console.print(
                    f"[red]✗[/] {c.name}: {f.where}: {f.problem}", highlight=False, markup=False
                )
            if len(c.findings) > 20:
                console.print(f"  ... and {len(c.findings) - 20} more (--json lists 100)")
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``verify`` to the top-level command."""
    app.command("verify")(verify)
