"""Worker processes started, watched and restarted by the process that owns the ports.

Why: Python serves each process's requests with one interpreter lock, so one process uses at
most one core. The listeners that must use every core (DIMSE in :mod:`hdsvault.dicom.handoff`,
HTTP in :mod:`hdsvault.api.workers`) run their work in worker processes, supervised here the
same way.

Each worker is ``python -m MODULE FD [ARGS...]``, ``FD`` being its end of a control channel: a
``SOCK_SEQPACKET`` Unix socket pair (each message arrives whole; its first byte says what it
is). What the worker needs comes through it, never through its command line or environment
(the settings may hold secrets): first :data:`SETTINGS`, then whatever the listener sends. The
worker answers :data:`READY` once it serves, and may report more (the listener's
``on_message``).

Supervision: a worker that exits while the pool serves is logged (``<name>.worker-exited``) and
started again: at once, then, while it keeps exiting within :data:`HEALTHY_AFTER` seconds of
its start, after a delay that doubles from 2 s up to :data:`RESPAWN_MAX`. When the listening
process ends (stops, or dies), each worker sees its control socket close and stops: no orphan.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from hdsvault.config import Settings

log = structlog.get_logger("hdsvault.supervision")

SETTINGS = b"S"
"""Listener -> worker, first message: the settings as JSON."""
READY = b"R"
"""Worker -> listener: serving."""
CONNECTION = b"C"
"""Listener -> worker: an accepted connection, its descriptor attached (what follows the byte
is the listener's own, e.g. which of its sockets accepted it)."""
ENDED = b"E"
"""Worker -> listener: a handed connection ended (what follows the byte is the listener's own)."""

MESSAGE_MAX = 1 << 20
START_WAIT = 120.0
"""Seconds :meth:`WorkerPool.start` waits for every worker's first start."""
STOP_WAIT = 30.0
"""Seconds a stopping worker is given before it is killed."""
RESPAWN_MAX = 30.0
HEALTHY_AFTER = 60.0
"""A worker that ran this long is started again at once if it exits (its delay starts over)."""
HAND_WAIT = 30.0
"""Seconds an accepted connection waits for a ready worker before it is closed."""


class WorkerStartError(RuntimeError):
    """A worker process exited before it was ready (its own error is on stderr)."""


class Worker:
    """One worker: its process and its control socket. ``open`` is the listener's own count
    (e.g. associations handed and not ended), reset when the process exits."""

    def __init__(self, index: int, pool: WorkerPool) -> None:
        self.index = index
        self._pool = pool
        self.proc: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.ready = False
        self.open = 0
        self.started_at = 0.0
        self.quick_exits = 0  # exits in a row, each before HEALTHY_AFTER: the restart delay
        self._reader: threading.Thread | None = None

    def spawn(self) -> None:
        pool = self._pool
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", pool.module, str(theirs.fileno()), *pool.args],
                pass_fds=[theirs.fileno(), *pool.pass_fds],
                stdin=subprocess.DEVNULL,
            )
        with contextlib.suppress(OSError):  # it exited already: its reader reports the exit
            ours.sendall(SETTINGS + pool.setup)
        self.control, self.open, self.ready = ours, 0, False
        self.started_at = time.monotonic()
        self._reader = threading.Thread(
            target=self._read, args=(ours, self.proc), name=f"{pool.name}-worker-{self.index}"
        )
        self._reader.daemon = True
        self._reader.start()

    def send(self, message: bytes, fds: Sequence[int] = ()) -> bool:
        """Send ``message`` (and descriptors) to the worker; False if its control is gone."""
        control = self.control
        if control is None:
            return False
        try:
            socket.send_fds(control, [message], list(fds))
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
            log.error(f"{self._pool.name}.worker-killed", worker=self.index, pid=proc.pid)
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
                self._pool.reported(self, msg)
        code = proc.wait()
        self._pool.exited(self, code)


OnMessage = Callable[[Worker, bytes, bytes], None]
"""``(worker, kind, body)``: a message other than :data:`READY` (called outside the lock)."""


class WorkerPool:
    """``count`` workers running ``python -m module``, each handed ``setup`` (the settings
    JSON) first. ``cond`` guards the workers' state: listeners wait on it for a ready worker.
    ``name`` prefixes the log events (``dicom``, ``http``)."""

    def __init__(
        self,
        name: str,
        module: str,
        count: int,
        setup: bytes,
        *,
        args: Sequence[str] = (),
        pass_fds: Sequence[int] = (),
        on_message: OnMessage | None = None,
    ) -> None:
        self.name, self.module, self.setup = name, module, setup
        self.args, self.pass_fds = list(args), list(pass_fds)
        self._on_message = on_message
        self.workers = [Worker(i, self) for i in range(count)]
        self.cond = threading.Condition()
        self._serving = False  # set once every worker was ready: from then on, restart them
        self.stopping = False

    def start(self) -> None:
        """Start the workers and wait until each is ready. Raises :class:`WorkerStartError`
        (every worker stopped) if one could not start or exited first."""
        try:
            for worker in self.workers:
                worker.spawn()
        except OSError as exc:  # the interpreter cannot be started (resources...)
            self.stop()
            raise WorkerStartError(f"a {self.name} worker process could not start: {exc}") from exc
        deadline = time.monotonic() + START_WAIT
        with self.cond:
            while not all(w.ready for w in self.workers):
                if any(w.proc is None or w.proc.poll() is not None for w in self.workers):
                    break
                if not self.cond.wait(max(0.0, deadline - time.monotonic())):
                    break
            self._serving = all(w.ready for w in self.workers)
        if not self._serving:
            self.stop()
            raise WorkerStartError(
                f"a {self.name} worker process did not start (its error is logged)"
            )
        log.info(f"{self.name}.workers-ready", workers=len(self.workers))

    def stop(self) -> None:
        """Stop every worker (each finishes what it serves first), killing what outlives
        :data:`STOP_WAIT`."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.wait(STOP_WAIT)

    def hand(self, conn: socket.socket, message: bytes) -> bool:
        """Send ``message`` with ``conn``'s descriptor to the ready worker with the fewest
        connections open (counted up here, down by :meth:`ended`), waiting up to
        :data:`HAND_WAIT` for one to be ready. False: none took it (the caller closes it)."""
        deadline = time.monotonic() + HAND_WAIT
        while True:
            with self.cond:
                while True:
                    ready = [w for w in self.workers if w.ready]
                    if ready or self.stopping:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.cond.wait(left)
                if not ready:
                    if not self.stopping:
                        log.error(f"{self.name}.no-worker", waited=HAND_WAIT)
                    return False
                worker = min(ready, key=lambda w: w.open)
                worker.open += 1
            if worker.send(message, [conn.fileno()]):
                return True
            with self.cond:  # its control socket is gone: its reader sees the exit
                worker.open -= 1
                worker.ready = False

    def ended(self, worker: Worker) -> None:
        """A connection handed to ``worker`` ended (it said so with :data:`ENDED`)."""
        with self.cond:
            worker.open = max(0, worker.open - 1)

    def stop_accepting(self, listeners: Sequence[socket.socket]) -> None:
        """End :meth:`accept` on each of ``listeners`` (the sockets stay open: their owner
        closes them), before :meth:`stop`."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for listener in listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()

    def accept(self, listener: socket.socket, message: bytes) -> None:
        """Accept on ``listener`` and hand each connection on (:meth:`hand`) until the pool
        stops accepting (a thread's target; :meth:`stop_accepting` ends it)."""
        while True:
            try:
                conn, _peer = listener.accept()
            except OSError as exc:
                if self.stopping:
                    return
                log.warning(f"{self.name}.accept-failed", error=str(exc)[:200])
                time.sleep(0.1)  # e.g. out of descriptors: let connections end
                continue
            with conn:
                self.hand(conn, message)

    def reported(self, worker: Worker, msg: bytes) -> None:
        kind, body = msg[:1], msg[1:]
        if kind == READY:
            with self.cond:
                worker.ready = True
                self.cond.notify_all()
        elif self._on_message is not None:
            self._on_message(worker, kind, body)
        else:
            log.warning(f"{self.name}.worker-message-unknown", worker=worker.index, kind=repr(kind))

    def exited(self, worker: Worker, code: int) -> None:
        """The worker's process ended: start it again, unless starting failed or we stop."""
        with self.cond:
            worker.ready, worker.open, worker.control = False, 0, None
            restart = self._serving and not self.stopping
            self.cond.notify_all()
        if not restart:
            return
        if time.monotonic() - worker.started_at >= HEALTHY_AFTER:
            worker.quick_exits = 0
        delay = 0.0 if not worker.quick_exits else min(RESPAWN_MAX, 2.0**worker.quick_exits)
        worker.quick_exits += 1
        log.error(f"{self.name}.worker-exited", worker=worker.index, code=code, restart_in=delay)
        threading.Thread(target=self._respawn, args=(worker, delay), daemon=True).start()

    def _respawn(self, worker: Worker, delay: float) -> None:
        with self.cond:
            if self.cond.wait_for(lambda: self.stopping, timeout=delay):
                return
            worker.spawn()


# -- the worker's side --------------------------------------------------------------------------

WorkerServe = Callable[["Settings", socket.socket, list[str]], int]
"""``(settings, control socket, arguments after the control descriptor)`` -> exit status."""


def run_worker(name: str, argv: list[str], serve: WorkerServe) -> int:
    """A worker process's main: ``argv`` is ``[program, CONTROL_FD, ARGS...]``.

    SIGINT is left to the listener (a terminal's Ctrl-C reaches the whole process group; the
    listener stops its workers itself); SIGTERM stops the worker as if the control socket had
    closed. The first message must be the settings: anything else is logged
    (``<name>.worker-not-configured``) and the worker exits with status 2.
    """
    from hdsvault.config import Settings
    from hdsvault.logs import configure_logging

    control = socket.socket(fileno=int(argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_term(*_: Any) -> None:
        with contextlib.suppress(OSError):
            control.shutdown(socket.SHUT_RD)

    signal.signal(signal.SIGTERM, on_term)
    with control:
        configure_logging()  # JSON on stderr until the settings say otherwise
        first = control.recv(MESSAGE_MAX)
        if first[:1] != SETTINGS:
            log.error(f"{name}.worker-not-configured", received=len(first))
            return 2
        settings = Settings(**json.loads(first[1:]))
        configure_logging(settings.logging.level, json_output=settings.logging.json_output)
        return serve(settings, control, argv[2:])


def handed_connections(control: socket.socket) -> Iterator[tuple[bytes, socket.socket]]:
    """The connections the listener hands this worker (:data:`CONNECTION`, the descriptor
    attached), each with what follows the message's first byte, until the control socket
    closes. Any other message is dropped, and a descriptor it carried closed."""
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(control, 16, 4)
        kept = fds[0] if msg[:1] == CONNECTION and fds else None
        for fd in fds[1:] if kept is not None else fds:  # what a bug would leak
            socket.close(fd)
        if not msg:
            return
        if kept is not None:
            yield msg[1:], socket.socket(fileno=kept)
