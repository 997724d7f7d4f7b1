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

Supervision: a worker that exits while the listener runs is logged (``dicom.worker-exited``)
and started again: at once, then, while it keeps exiting within :data:`HEALTHY_AFTER` seconds
of its start, after a delay that doubles from 2 s up to :data:`RESPAWN_MAX`. Its open
associations are lost with it (their peers see the connection closed: nothing they were not
told was stored is acknowledged, and they send it again). A connection accepted while no
worker is ready waits for one up to :data:`READY_WAIT` seconds, then is closed. When this
process ends, each worker sees its control socket close and stops (no orphan).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("hdsvault.dicom")

SETTINGS = b"S"
"""Parent -> worker, first message: the settings as JSON (``[dicom]`` with the address bound)."""
CONNECTION = b"C"
"""Parent -> worker: an accepted connection, its descriptor attached."""
READY = b"R"
"""Worker -> parent: serving (platform open, listener set up)."""
ENDED = b"E"
"""Worker -> parent: a handed association ended; JSON after the byte when it added to
studies: ``{"peer": ae_title, "address": "host:port", "studies": [...]}``."""

MESSAGE_MAX = 1 << 20
READY_WAIT = 30.0
"""Seconds an accepted connection waits for a ready worker before it is closed."""
START_WAIT = 120.0
"""Seconds :meth:`ConnectionHandOff.start` waits for every worker's first start."""
STOP_WAIT = 30.0
"""Seconds a stopping worker is given before it is killed."""
RESPAWN_MAX = 30.0
HEALTHY_AFTER = 60.0
"""A worker that ran this long is started again at once if it exits (its delay starts over)."""

StudiesAdded = Callable[[str, str | None, list[str]], None]
"""``(peer AE title, peer address, study ids)``: what an ended association added to."""


class WorkerStartError(RuntimeError):
    """A worker process exited before it was ready (its own error is on stderr)."""


class WorkerProcess:
    """One worker: its process, its control socket, and the associations handed to it that
    have not ended yet (to pick the least busy)."""

    def __init__(self, index: int, setup: bytes, handoff: ConnectionHandOff) -> None:
        self.index = index
        self._setup = setup
        self._handoff = handoff
        self.proc: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.ready = False
        self.open = 0
        self.started_at = 0.0
        self.quick_exits = 0  # exits in a row, each before HEALTHY_AFTER: the restart delay
        self._reader: threading.Thread | None = None

    def spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hdsvault.dicom.worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        with contextlib.suppress(OSError):  # it exited already: its reader reports the exit
            ours.sendall(SETTINGS + self._setup)
        self.control, self.open, self.ready = ours, 0, False
        self.started_at = time.monotonic()
        self._reader = threading.Thread(
            target=self._read, args=(ours, self.proc), name=f"dicom-worker-{self.index}"
        )
        self._reader.daemon = True
        self._reader.start()

    def hand(self, conn: socket.socket) -> bool:
        """Send ``conn`` to the worker; False if its control socket is gone."""
        control = self.control
        if control is None:
            return False
        try:
            socket.send_fds(control, [CONNECTION], [conn.fileno()])
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Close the control socket's sending side: the worker stops once it has read all."""
        if self.control is not None:
            with contextlib.suppress(OSError):
                self.control.shutdown(socket.SHUT_WR)

    def wait(self, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("dicom.worker-killed", worker=self.index, pid=proc.pid)
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout)

    def _read(self, control: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        """Messages from the worker until its end; then supervise (start it again)."""
        with control:
            while True:
                try:
                    msg = control.recv(MESSAGE_MAX)
                except OSError:
                    msg = b""
                if not msg:
                    break
                self._handoff.reported(self, msg)
        code = proc.wait()
        self._handoff.exited(self, code)


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
        setup = json.dumps(settings_document)
        self._studies_added = studies_added
        self.workers = [WorkerProcess(i, setup.encode(), self) for i in range(count)]
        self._cond = threading.Condition()
        self._serving = False  # set once every worker was ready: from then on, restart them
        self._stopping = False
        self._accepting: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers, wait until each is ready, then accept (connections made in the
        meantime wait in the listen queue). Raises :class:`WorkerStartError` (all stopped)."""
        try:
            for worker in self.workers:
                worker.spawn()
        except OSError as exc:  # the interpreter cannot be started (resources...)
            self.stop()
            raise WorkerStartError(f"a DICOM worker process could not start: {exc}") from exc
        deadline = time.monotonic() + START_WAIT
        with self._cond:
            while not all(w.ready for w in self.workers):
                if any(w.proc is None or w.proc.poll() is not None for w in self.workers):
                    break
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    break
            self._serving = all(w.ready for w in self.workers)
        if not self._serving:
            self.stop()
            raise WorkerStartError("a DICOM worker process did not start (its error is logged)")
        self._accepting = threading.Thread(target=self._accept, name="dicom-accept", daemon=True)
        self._accepting.start()
        log.info("dicom.workers-ready", workers=len(self.workers))

    def stop(self) -> None:
        """Stop accepting, then stop every worker (each ends its open associations first)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        if self._accepting is not None:
            self._accepting.join()
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.wait(STOP_WAIT)

    def open_associations(self) -> int:
        """Associations handed to a worker and not ended yet, over all workers."""
        return sum(w.open for w in self.workers)

    # -- accepting ----------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, _peer = self.listener.accept()
            except OSError as exc:
                if self._stopping:
                    return
                log.warning("dicom.accept-failed", error=str(exc)[:200])
                time.sleep(0.1)  # e.g. out of descriptors: let associations end
                continue
            with conn:
                self._hand(conn)

    def _hand(self, conn: socket.socket) -> None:
        """Give ``conn`` to the ready worker with the fewest open associations."""
        deadline = time.monotonic() + READY_WAIT
        while True:
            with self._cond:
                while True:
                    ready = [w for w in self.workers if w.ready]
                    if ready or self._stopping:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if not ready:
                    if not self._stopping:
                        log.error("dicom.no-worker", waited=READY_WAIT)
                    return
                worker = min(ready, key=lambda w: w.open)
                worker.open += 1
            if worker.hand(conn):
                return
            with self._cond:  # its control socket is gone: its reader sees the exit
                worker.open -= 1
                worker.ready = False

    # -- what workers report ------------------------------------------------------------------

    def reported(self, worker: WorkerProcess, msg: bytes) -> None:
        kind, body = msg[:1], msg[1:]
        if kind == READY:
            with self._cond:
                worker.ready = True
                self._cond.notify_all()
        elif kind == ENDED:
            with self._cond:
                worker.open = max(0, worker.open - 1)
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

    def exited(self, worker: WorkerProcess, code: int) -> None:
        """The worker's process ended: start it again, unless starting failed or we stop."""
        with self._cond:
            worker.ready, worker.open, worker.control = False, 0, None
            restart = self._serving and not self._stopping
            self._cond.notify_all()
        if not restart:
            return
        if time.monotonic() - worker.started_at >= HEALTHY_AFTER:
            worker.quick_exits = 0
        delay = 0.0 if not worker.quick_exits else min(RESPAWN_MAX, 2.0**worker.quick_exits)
        worker.quick_exits += 1
        log.error("dicom.worker-exited", worker=worker.index, code=code, restart_in=delay)
        threading.Thread(target=self._respawn, args=(worker, delay), daemon=True).start()

    def _respawn(self, worker: WorkerProcess, delay: float) -> None:
        with self._cond:
            if self._cond.wait_for(lambda: self._stopping, timeout=delay):
                return
            worker.spawn()
