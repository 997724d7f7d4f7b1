"""``hdsvault dicom serve`` and ``hdsvault hl7 serve``: one protocol listener alone.

Each runs in the foreground until interrupted (a systemd unit per listener, next to
``hdsvault serve`` for HTTP); settings come from ``[dicom]`` and ``[hl7]``. The listener is
started by the same code as in ``hdsvault serve`` (:mod:`hdsvault.cli.protocol_listeners`),
here with the journal sequencer beside it, since no HTTP worker runs one.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Literal

import typer

from hdsvault.cli.context import console, fail, opened_platform

dicom_app = typer.Typer(help="The DIMSE listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET).")
hl7_app = typer.Typer(help="The HL7 v2 MLLP listener (ADT, ORU).")

HostOption = Annotated[str | None, typer.Option(help="Listen address.")]
PortOption = Annotated[int | None, typer.Option(help="Listen port.")]


def register(app: typer.Typer) -> None:
    app.add_typer(dicom_app, name="dicom")
    app.add_typer(hl7_app, name="hl7")


@dicom_app.command("serve")
def dicom_serve(host: HostOption = None, port: PortOption = None) -> None:
    """Serve DIMSE for the peers of [[dicom.peers]]."""
    _serve_alone("dicom", host, port)


@hl7_app.command("serve")
def hl7_serve(host: HostOption = None, port: PortOption = None) -> None:
    """Serve HL7 v2 over MLLP for the senders of [[hl7.senders]]."""
    _serve_alone("hl7", host, port)


def _serve_alone(which: Literal["dicom", "hl7"], host: str | None, port: int | None) -> None:
    """Run one listener with the journal sequencer beside it until SIGINT/SIGTERM."""
    from hdsvault.cli.protocol_listeners import ListenerConfigError, protocol_listeners
    from hdsvault.heap import freeze_startup_heap
    from hdsvault.journal.service import sequencer_task
    from hdsvault.logs import configure_logging

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with opened_platform() as platform:
        cfg = platform.settings  # what the listeners read: the overrides go there
        configure_logging(cfg.logging.level, json_output=cfg.logging.json_output)
        section = cfg.dicom if which == "dicom" else cfg.hl7
        section.host = host or section.host
        section.port = port or section.port
        cfg.dicom.enabled, cfg.hl7.enabled = which == "dicom", which == "hl7"
        sequencer = sequencer_task(platform)
        sequencer.start()
        try:
            with protocol_listeners(platform) as started:
                for line in started:
                    console.print(f"listening: {line}", markup=False)
                freeze_startup_heap()
                stop.wait()
        except ListenerConfigError as exc:
            fail(str(exc), code=2)
        finally:
            sequencer.stop()
