"""``hdsvault``: the entry point. Sub-commands live in one module each."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from hdsvault import __version__
from hdsvault.cli import (
    access,
    backup,
    drill,
    imaging,
    journal,
    keys,
    records,
    tenant,
    token,
    verify,
)
from hdsvault.cli.context import console, fail, set_config_file, settings
from hdsvault.config import Settings
from hdsvault.crypto.errors import CryptoError
from hdsvault.platform import Platform, init_platform

app = typer.Typer(help="hdsvault: HDS-grade health-data host.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(tenant.app, name="tenant")
app.add_typer(keys.app, name="keys")
app.add_typer(token.app, name="token")
app.add_typer(journal.app, name="journal")
app.add_typer(access.app, name="access")
records.register(app)  # hdsvault import / hdsvault export
imaging.register(app)  # hdsvault dicom serve / hdsvault hl7 serve
app.add_typer(backup.app, name="backup")
app.add_typer(drill.app, name="drill")
verify.register(app)  # hdsvault verify


@app.callback()
def main(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML configuration file (else $HDSVAULT_CONFIG)."),
    ] = None,
) -> None:
    # Files we create (keys, certificates, databases) are for this account only.
    os.umask(0o077)
    set_config_file(config)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@app.command()
def init() -> None:
    """Create the data directory, the key-encryption key and the database schema (idempotent)."""
    try:
        steps = init_platform(settings())
    except CryptoError as exc:
        fail(str(exc), code=3)
    for step in steps or ["already initialised: nothing to do"]:
        console.print(f"[green]✓[/] {step}")


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (secrets masked) as JSON."""
    console.print_json(json.dumps(settings().redacted()))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="HTTP processes (default: [server] workers, one per core).")
    ] = None,
) -> None:
    """Serve the HTTP API (FHIR, admin, probes, metrics), and DICOM / HL7 when enabled."""
    from hdsvault.api.app import create_app
    from hdsvault.cli.context import opened_platform
    from hdsvault.logs import configure_logging

    cfg = settings()
    configure_logging(cfg.logging.level, json_output=cfg.logging.json_output)
    n_workers = workers or cfg.server.worker_processes()
    with opened_platform() as platform, _protocols(platform):  # fail before binding
        if n_workers == 1:
            # One process: a listener per zone, TLS, slow-client guard (api/listeners.py).
            from hdsvault.api import listeners

            listeners.serve(create_app(platform, freeze_heap=True), cfg, host=host, port=port)
        else:
            _serve_workers(cfg, host, port, n_workers)


@contextmanager
def _protocols(platform: Platform) -> Iterator[None]:
    """The enabled DIMSE / MLLP listeners around the HTTP server (a clear error if unusable)."""
    from hdsvault.cli.protocol_listeners import ListenerConfigError, protocol_listeners

    try:
        with protocol_listeners(platform) as started:
            for line in started:
                console.print(f"{line}")
            yield
    except ListenerConfigError as exc:
        fail(str(exc), code=2)


def _serve_workers(cfg: Settings, host: str | None, port: int | None, n_workers: int) -> None:
    """The same listeners served by ``n_workers`` worker processes (api/workers.py)."""
    from hdsvault.api.listeners import plan
    from hdsvault.api.workers import HttpWorkers
    from hdsvault.supervision import WorkerStartError

    metrics_dir = cfg.data_dir / "run" / "prometheus"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # inherited by the workers
    try:
        HttpWorkers(cfg, plan(cfg, host, port), n_workers).serve()
    except WorkerStartError as exc:
        fail(str(exc), code=1)
