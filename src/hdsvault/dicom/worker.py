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
import signal
import socket
import sys
from typing import Any

import structlog

from hdsvault.dicom import handoff

log = structlog.get_logger("hdsvault.dicom")


def _reporter(control: socket.socket) -> handoff.StudiesAdded:
    def ended(peer: str, address: str | None, studies: list[str]) -> None:
        body = b""
        if studies:
            body = json.dumps({"peer": peer, "address": address, "studies": studies}).encode()
        with contextlib.suppress(OSError):  # the listener is gone: we stop next
            control.send(handoff.ENDED + body)

    return ended


def serve(control: socket.socket) -> int:
    """Serve handed connections until the control socket closes; the exit status."""
    from hdsvault.config import Settings
    from hdsvault.dicom.server import DimseServer
    from hdsvault.heap import freeze_startup_heap
    from hdsvault.imaging.store import ImagingStore
    from hdsvault.logs import configure_logging
    from hdsvault.platform import Platform

    configure_logging()  # JSON on stderr until the settings say otherwise
    first = control.recv(handoff.MESSAGE_MAX)
    if first[:1] != handoff.SETTINGS:
        log.error("dicom.worker-not-configured", received=len(first))
        return 2
    settings = Settings(**json.loads(first[1:]))
    configure_logging(settings.logging.level, json_output=settings.logging.json_output)
    platform = Platform.open(settings)
    try:
        store = ImagingStore(platform)
        dimse = DimseServer(store, ended=_reporter(control))
        try:
            dimse.serve_handed()
            freeze_startup_heap()
            control.send(handoff.READY)
            log.info("dicom.worker-ready", pid=os.getpid())
            while True:
                msg, fds, _flags, _addr = socket.recv_fds(control, 16, 4)
                if not msg:
                    break
                for fd in fds[1:]:  # never more than one: close what a bug would leak
                    socket.close(fd)
                if msg[:1] == handoff.CONNECTION and fds:
                    dimse.take(socket.socket(fileno=fds[0]))
                elif fds:
                    socket.close(fds[0])
        finally:
            dimse.stop()
            store.close()
    finally:
        platform.close()
    return 0


def main(argv: list[str]) -> int:
    control = socket.socket(fileno=int(argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_term(*_: Any) -> None:  # stop as if the listener had closed the control socket
        with contextlib.suppress(OSError):
            control.shutdown(socket.SHUT_RD)

    signal.signal(signal.SIGTERM, on_term)
    with control:
        return serve(control)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
