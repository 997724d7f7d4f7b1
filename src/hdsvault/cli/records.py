"""``hdsvault import`` / ``hdsvault export``: bulk load and reversibility of a tenant's record.

The commands act as a service principal of the tenant (``role=service``, subject
``os:<account>``): the access policy decides as for any API client, and every bundle, batch
and export is journaled (category transfer) under that name.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.cli.context import console, fail, opened_platform, operator_name
from hdsvault.records import bulk
from hdsvault.records.errors import RecordError
from hdsvault.records.model import Caller
from hdsvault.records.store import RecordStore

TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="FINESS of the establishment.")]


def _caller(tenant: str) -> Caller:
    return Caller(Principal(subject=operator_name(), tenant=tenant, role=Role.SERVICE), tenant)


def import_(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Bundles (.json[.gz]), NDJSON (.ndjson[.gz]) or directories."),
    ],
    tenant: TenantOption,
    validate: Annotated[
        bool, typer.Option("--validate/--no-validate", help="Validate every resource (slower).")
    ] = True,
    batch_size: Annotated[
        int, typer.Option(help="NDJSON lines per transaction.", min=1, max=100_000)
    ] = 500,
    jobs: Annotated[
        int, typer.Option(help="Worker processes preparing bundles (tokens, validation).", min=1)
    ] = 1,
) -> None:
    """Import FHIR transaction Bundles and NDJSON files into a tenant's record."""
    with opened_platform() as platform:
        store = RecordStore(platform)
        try:
            files = bulk.sources(paths)
        except RecordError as exc:
            fail(exc.message)
        started = time.perf_counter()
        with Progress(
            TextColumn("[bold]import"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[resources]} resources"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task("import", total=len(files), resources=0)
            seen = 0

            def advance(n: int) -> None:
                nonlocal seen
                seen += n
                bar.update(task, resources=seen)

            report = bulk.import_paths(
                store,
                _caller(tenant),
                files,
                validate_resources=validate,
                batch_size=batch_size,
                progress=advance,
                jobs=jobs,
                file_done=lambda _path: bar.advance(task),
            )
        elapsed = time.perf_counter() - started
    table = Table(title=f"Imported into {tenant}")
    table.add_column("resource type")
    table.add_column("resources", justify="right")
    for rt, n in sorted(report.counts.items()):
        table.add_row(rt, str(n))
    table.add_row("[bold]total", f"[bold]{report.resources}")
    console.print(table)
    rate = report.resources / elapsed if elapsed > 0 else 0.0
    console.print(
        f"{report.files} files, {report.bundles} bundles, {report.resources} resources "
        f"in {elapsed:.1f} s ({rate:.0f} resources/s), {len(report.errors)} errors"
    )
    if report.errors:
        errors = Table(title="Errors")
        errors.add_column("where")
        errors.add_column("problem")
        for where, problem in report.errors[:50]:
            errors.add_row(where, problem)
        console.print(errors)
        raise typer.Exit(1)


def export(
    tenant: TenantOption,
    to: Annotated[
        Path, typer.Option("--to", help="Directory to write NDJSON files and manifest into.")
    ],
) -> None:
    """Export a tenant's whole record as FHIR bulk NDJSON (one file per type) + manifest."""
    with opened_platform() as platform:
        store = RecordStore(platform)
        with Progress(
            TextColumn("[bold]export"), TextColumn("{task.completed} resources"), console=console
        ) as bar:
            task = bar.add_task("export", total=None)
            try:
                report = bulk.export_tenant(
                    store, _caller(tenant), to, progress=lambda n: bar.advance(task, n)
                )
            except RecordError as exc:
                fail(exc.message)
    table = Table(title=f"Exported {tenant} to {to}")
    table.add_column("resource type")
    table.add_column("resources", justify="right")
    for rt, n in sorted(report.counts.items()):
        table.add_row(rt, str(n))
    table.add_row("[bold]total", f"[bold]{sum(report.counts.values())}")
    console.print(table)
    console.print(f"manifest: {report.manifest}")


def register(app: typer.Typer) -> None:
    """Add ``import`` and ``export`` to the top-level command."""
    app.command("import")(import_)
    app.command("export")(export)
