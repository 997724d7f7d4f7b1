"""``hdsvault keys``: data-key rotation and rewrap."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from hdsvault.cli.context import console, fail, opened_platform, operator_name
from hdsvault.crypto.errors import CryptoError
from hdsvault.tenants.keys import rewrap as rewrap_tenant
from hdsvault.tenants.keys import rotate_keys

app = typer.Typer(help="Rotate and rewrap per-tenant data keys.", no_args_is_help=True)
Tenant = Annotated[str, typer.Option("--tenant", "-t", help="FINESS number of the tenant.")]


@app.command()
def rotate(tenant: Tenant) -> None:
    """Create a new data-key version: new writes use it, old data stays readable."""
    with opened_platform() as platform:
        try:
            version = rotate_keys(platform, tenant, by=operator_name())
        except CryptoError as exc:
            fail(str(exc))
    console.print(f"[green]✓[/] tenant {tenant}: data key v{version} is now current")


@app.command()
def rewrap(tenant: Tenant) -> None:
    """Re-encrypt every stored ciphertext of the tenant under its newest data key."""
    with (
        opened_platform() as platform,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar,
    ):
        task = bar.add_task(f"rewrap {tenant}", total=None)
        try:
            report = rewrap_tenant(
                platform,
                tenant,
                by=operator_name(),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except CryptoError as exc:
            fail(str(exc))
    console.print(
        f"[green]✓[/] {report.rewrapped} ciphertexts now on v{report.target_version}; "
        f"{report.remaining_on_old_versions} left on older versions"
    )
