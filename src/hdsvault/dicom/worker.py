"""A DIMSE worker process: serves the associations the listening process hands it.

Started by :class:`hdsvault.dicom.handoff.ConnectionHandOff` as
``python -m hdsvault.dicom.worker FD``, ``FD`` being its end of the control socket (see that
module for the protocol). It opens its own platform (database engine, key-encryption key,
blob store) from the settings it is sent, serves each connection it receives with the same
:class:`~hdsvault.dicom.server.DimseServer` handlers as the single-process listener, and
reports each association's end. It stops when the control socket closes (the listener stops,
or died: a worker never outlives it) or on SIGTERM; SIGINT is left to the listener, which
stops its workers itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from typing import TYPE_CHECKING

import structlog

from hdsvault import supervision
from hdsvault.dicom import handoff

if TYPE_CHECKING:
    from hdsvault.config import Settings

log = structlog.get_logger("hdsvault.dicom")


def _reporter(control: socket.socket) -> handoff.StudiesAdded:
    def ended(peer: str, address: str | None, studies: list[str]) -> None:
        body = b""
        if studies:
            body = json.dumps({"peer": peer, "address": address, "studies": studies}).encode()
        with contextlib.suppress(OSError):  # the listener is gone: we stop next
            control.send(handoff.ENDED + body)

    return ended


def serve(settings: Settings, control: socket.socket, _args: list[str]) -> int:
    """Serve handed connections until the control socket closes; the exit status."""
    from hdsvault.dicom.server import DimseServer
    from hdsvault.heap import freeze_startup_heap
    from hdsvault.imaging.store import ImagingStore
    from hdsvault.platform import Platform

    platform = Platform.open(settings)
    try:
        store = ImagingStore(platform)
        dimse = DimseServer(store, ended=_reporter(control))
        try:
            dimse.serve_handed()
            freeze_startup_heap()
            control.send(supervision.READY)
            log.info("dicom.worker-ready", pid=os.getpid())
            for _rest, conn in supervision.handed_connections(control):
                dimse.take(conn)
        finally:
            dimse.stop()
            store.close()
    finally:
        platform.close()
    return 0


def main(argv: list[str]) -> int:
    return supervision.run_worker("dicom", argv, serve)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
