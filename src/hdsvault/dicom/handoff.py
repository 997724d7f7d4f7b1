"""DIMSE associations served by several processes: this process accepts, workers serve.

Why: pynetdicom serves each association with Python threads, so one listener process uses at
most one core, whatever the number of modalities sending at once (at concurrency 4 the
listener ran at 93-100 % of one core while Orthanc used 137 %). With ``[dicom] workers = N``
(N > 1) the listening process only accepts TCP connections and hands each one, as a file
descriptor (``SCM_RIGHTS``), to one of N worker processes (:mod:`hdsvault.dicom.worker`), the
one with the fewest associations open. The kernel's own spreading (``SO_REUSEPORT``) was
measured first: it hashes connections, e.g. 3 to one process and 1 to the other.

The control channel of each worker is a ``SOCK_SEQPACKET`` Unix socket pair (each message
arrives whole, its first byte says what it is). What the worker needs to serve comes through it,
never through its command line or environment (the settings may hold secrets): the settings,
as JSON. A worker reports when it is ready and when each handed
association has ended (with the studies it added to: their ImagingStudy syncs run here, in
one process, so that two workers never write the same study's resource concurrently).

Supervision (:mod:`hdsvault.supervision`, shared with the HTTP workers): a worker that exits
while the listener runs is logged (``dicom.worker-exited``) and started again, at once, then
after a growing delay while it keeps exiting soon after its start. Its open
associations are lost with it (their peers see the connection closed: nothing they were not
told was stored is acknowledged, and they send it again). A connection accepted while no
worker is ready waits for one up to :data:`~hdsvault.supervision.HAND_WAIT` seconds, then
is closed. When this process ends, each worker sees its control socket close and stops (no
orphan). The accepting and the choice of the worker are :class:`WorkerPool`'s, shared with
the HTTP workers (:mod:`hdsvault.api.workers`).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import structlog

from hdsvault.supervision import CONNECTION, ENDED, Worker, WorkerPool, WorkerStartError

__all__ = [
    "CONNECTION",
    "ENDED",
    "ConnectionHandOff",
    "StudiesAdded",
    "WorkerStartError",
]

log = structlog.get_logger("hdsvault.dicom")

StudiesAdded = Callable[[str, str | None, list[str]], None]
"""``(peer AE title, peer address, study ids)``: what an ended association added to."""


class ConnectionHandOff:
    """Listen on ``address``; hand each accepted connection to one of ``count`` workers."""

    def __init__(
        self,
        address: tuple[str, int],
        count: int,
        settings_document: dict[str, Any],
        studies_added: StudiesAdded,
    ) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.listener = socket.create_server(address, family=family, backlog=128)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        dicom = settings_document["dicom"]
        dicom["host"], dicom["port"] = self.address  # the port bound, when 0 asked any
        self._studies_added = studies_added
        self.pool = WorkerPool(
            "dicom",
            "hdsvault.dicom.worker",
            count,
            json.dumps(settings_document).encode(),
            on_message=self._message,
        )
        self.workers = self.pool.workers
        self._accepting: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers, wait until each is ready, then accept (connections made in the
        meantime wait in the listen queue). Raises :class:`WorkerStartError` (all stopped,
        the port closed)."""
        try:
            self.pool.start()
        except WorkerStartError:
            self.listener.close()
            raise
        self._accepting = threading.Thread(
            target=self.pool.accept, args=(self.listener, CONNECTION), name="dicom-accept"
        )
        self._accepting.daemon = True
        self._accepting.start()

    def stop(self) -> None:
        """Stop accepting, then stop every worker (each ends its open associations first)."""
        self.pool.stop_accepting([self.listener])
        self.listener.close()
        if self._accepting is not None:
            self._accepting.join()
        self.pool.stop()

    def open_associations(self) -> int:
        """Associations handed to a worker and not ended yet, over all workers."""
        return sum(w.open for w in self.workers)

    # -- what workers report ------------------------------------------------------------------

    def reported(self, worker: Worker, msg: bytes) -> None:
        """A message from ``worker`` (as its reader thread passes it on)."""
        self.pool.reported(worker, msg)

    def _message(self, worker: Worker, kind: bytes, body: bytes) -> None:
        """:data:`ENDED` is followed, when the association added to studies, by
        ``{"peer": ae_title, "address": "host:port", "studies": [...]}`` (JSON)."""
        if kind == ENDED:
            self.pool.ended(worker)
            if body:
                self._ended_with_studies(body)
        else:
            log.warning("dicom.worker-message-unknown", worker=worker.index, kind=repr(kind))

    def _ended_with_studies(self, body: bytes) -> None:
        try:
            doc = json.loads(body)
            peer, address, studies = doc["peer"], doc.get("address"), list(doc["studies"])
        except (ValueError, KeyError, TypeError):
            log.warning("dicom.worker-message-invalid")
            return
        self._studies_added(str(peer), address, [str(s) for s in studies])
