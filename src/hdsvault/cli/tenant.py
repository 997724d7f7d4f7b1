"""``hdsvault tenant``: establishments and their lifecycle."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from hdsvault.cli.context import console, fail, opened_platform, operator_name
from hdsvault.tenants.finess import InvalidFiness
from hdsvault.tenants.service import (
    TenantError,
    add_tenant,
    get_tenant,
    list_tenants,
    shred_tenant,
)

app = typer.Typer(help="Manage tenants (establishments, by FINESS number).", no_args_is_help=True)


@app.command("add")
def add(
    finess: Annotated[
        str, typer.Argument(help="FINESS number (9 characters, check digit verified).")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Establishment name.")],
) -> None:
    """Register an establishment and create its keys."""
    with opened_platform() as platform:
        try:
            t = add_tenant(platform, finess, name, by=operator_name())
        except (InvalidFiness, TenantError) as exc:
            fail(str(exc))
    console.print(f"[green]✓[/] tenant {t.id} ({t.name}) created with its own keys")


@app.command("list")
def list_() -> None:
    """List tenants."""
    with opened_platform() as platform:
        rows = list_tenants(platform)
    table = Table("FINESS", "name", "created", "state")
    for t in rows:
        table.add_row(
            t.id, t.name, f"{t.created_at:%Y-%m-%d}", "shredded" if t.shredded_at else "active"
        )
    console.print(table)


@app.command("show")
def show(finess: str) -> None:
    """Show one tenant."""
    with opened_platform() as platform:
        try:
            t = get_tenant(platform, finess)
        except TenantError as exc:
            fail(str(exc))
    console.print(f"FINESS             {t.id}")
    console.print(f"name               {t.name}")
    console.print(f"created            {t.created_at:%Y-%m-%d %H:%M:%S}")
    console.print(
        f"state              {'shredded ' + str(t.shredded_at) if t.shredded_at else 'active'}"
    )
    console.print(f"data-key versions  {t.data_key_versions}")
    console.print(f"stored versions    {t.stored_versions}")


@app.command("shred")
def shred(
    finess: str,
    confirm: Annotated[
        str | None,
        typer.Option(help="Non-interactive confirmation: the FINESS number, typed again."),
    ] = None,
) -> None:
    """Destroy a tenant's keys: its data becomes unreadable forever. Writes a shred certificate."""
    with opened_platform() as platform:
        try:
            t = get_tenant(platform, finess)
        except TenantError as exc:
            fail(str(exc))
        console.print(
            f"[bold red]This destroys every key of {t.id} ({t.name}). "
            f"{t.stored_versions} stored record versions become unreadable forever.[/]"
        )
        typed = (
            confirm if confirm is not None else typer.prompt("Type the FINESS number to confirm")
        )
        if typed.strip() != t.id:
            fail("confirmation does not match: nothing was destroyed")
        try:
            cert = shred_tenant(platform, t.id, by=operator_name())
        except TenantError as exc:
            fail(str(exc))
    console.print(f"[green]✓[/] {cert.keys_destroyed} keys destroyed; certificate: {cert.path}")
