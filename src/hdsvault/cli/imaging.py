"""``hdsvault dicom serve`` and ``hdsvault hl7 serve``: the DIMSE and MLLP listeners.

Each runs in the foreground until interrupted (a systemd unit per listener, next to
``hdsvault serve`` for HTTP); settings come from ``[dicom]`` and ``[hl7]``.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Protocol

import typer

from hdsvault.cli.context import console, fail, opened_platform, settings
from hdsvault.platform import Platform

dicom_app = typer.Typer(help="The DIMSE listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET).")
hl7_app = typer.Typer(help="The HL7 v2 MLLP listener (ADT, ORU).")


def register(app: typer.Typer) -> None:
    app.add_typer(dicom_app, name="dicom")
    app.add_typer(hl7_app, name="hl7")


def _serve_until_signal(platform: Platform, server: Listener, label: str) -> None:
    """Run ``server`` with the journal sequencer beside it until SIGINT/SIGTERM."""
    from hdsvault.journal.service import sequencer_task

    sequencer = sequencer_task(platform)
    sequencer.start()
    where = server.start()
    console.print(f"{label} listening on {where[0]}:{where[1]}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop()
        sequencer.stop()


class Listener(Protocol):
    def start(self) -> tuple[str, int]: ...
    def stop(self) -> None: ...


@dicom_app.command("serve")
def dicom_serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
) -> None:
    """Serve DIMSE for the peers of [[dicom.peers]]."""
    from hdsvault.dicom.server import DimseServer
    from hdsvault.imaging.store import ImagingStore
    from hdsvault.logs import configure_logging

    cfg = settings()
    configure_logging(cfg.logging.level, json_output=cfg.logging.json_output)
    if not cfg.dicom.peers:
        fail("no [[dicom.peers]] configured: every association would be refused", code=2)
    if host:
        cfg.dicom.host = host
    if port:
        cfg.dicom.port = port
    with opened_platform() as platform:
        store = ImagingStore(platform)
        try:
            _serve_until_signal(platform, DimseServer(store), f"DICOM {cfg.dicom.ae_title}")
        finally:
            store.close()


@hl7_app.command("serve")
def hl7_serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
) -> None:
    """Serve HL7 v2 over MLLP for the senders of [[hl7.senders]]."""
    from hdsvault.hl7v2.server import MllpServer
    from hdsvault.logs import configure_logging

    cfg = settings()
    configure_logging(cfg.logging.level, json_output=cfg.logging.json_output)
    if not cfg.hl7.senders:
        fail("no [[hl7.senders]] configured: every message would be rejected", code=2)
    if host:
        cfg.hl7.host = host
    if port:
        cfg.hl7.port = port
    with opened_platform() as platform:
        _serve_until_signal(platform, MllpServer(platform), "HL7 MLLP")
