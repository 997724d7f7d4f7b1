"""``hdsvault token``: local API tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from hdsvault.access.roles import Role
from hdsvault.access.tokens import TokenError, create_token, revoke_token
from hdsvault.cli.context import console, fail, opened_platform, operator_name

app = typer.Typer(help="Issue and revoke API tokens.", no_args_is_help=True)


@app.command("create")
def create(
    role: Annotated[Role, typer.Option("--role", "-r", help="Role of the token holder.")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="Tenant (FINESS); none = platform-wide.")
    ] = None,
    days: Annotated[
        int | None, typer.Option(help="Validity in days (default from config).")
    ] = None,
    label: Annotated[str, typer.Option(help="What this token is for.")] = "",
) -> None:
    """Issue a token. It is printed once and stored only as a hash."""
    with opened_platform() as platform:
        ttl = timedelta(days=days or platform.settings.token_default_ttl_days)
        try:
            issued = create_token(
                platform.engine, tenant=tenant, role=role, ttl=ttl, by=operator_name(), label=label
            )
        except TokenError as exc:
            fail(str(exc))
    console.print(f"token id {issued.token_id}, expires {issued.expires_at:%Y-%m-%d %H:%M} UTC")
    console.print("Store it now, it will not be shown again:", style="bold")
    print(issued.token)


@app.command("revoke")
def revoke(token_id: str) -> None:
    """Revoke a token by its id."""
    with opened_platform() as platform:
        if not revoke_token(platform.engine, token_id, by=operator_name()):
            fail(f"no active token {token_id}")
    console.print(f"[green]✓[/] token {token_id} revoked")
