"""Push one journal log to one SIEM sink, at least once, from a persistent cursor.

The cursor of (sink, log) is the ``seq`` of the last entry of the last batch written without
error (``-1``: nothing sent yet). It is saved after each such batch and is the only state:
after any transport error the exporter reconnects (bounded exponential backoff) and resends
everything after the saved cursor. So an entry is never skipped, and an entry may be sent
twice (a batch that was written, or partly written, when the connection failed). SIEMs
deduplicate on the event id every format carries (``<log_id>:<seq>``). docs/siem.md explains
the one residual risk, which no syslog transport without acknowledgements can close.

Cursor stores: :class:`MemoryCursorStore` (tests), :class:`FileCursorStore` (a JSON file,
replaced atomically and fsynced; one exporter process per file). A database-backed store
lives with the database layer and only has to follow :class:`CursorStore`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hdsvault.journal.entry import JournalEntry
from hdsvault.journal.siem.transport import TransportError

__all__ = [
    "Backoff",
    "CursorStore",
    "CursorStoreError",
    "FileCursorStore",
    "MemoryCursorStore",
    "Sender",
    "SiemExportError",
    "SiemExporter",
    "Source",
]

NOTHING_SENT = -1

Source = Callable[[int, int], list[JournalEntry]]
"""``source(after_seq, limit)``: up to ``limit`` entries of one log with ``seq > after_seq``,
in ``seq`` order."""


class Sender(Protocol):
    """What the exporter needs of a transport (:class:`~.transport.SyslogSender` is one)."""

    def send(self, messages: Sequence[bytes]) -> None:
        """Write every message or raise :class:`~.transport.TransportError`."""

    def close(self) -> None: ...


class CursorStore(Protocol):
    """Where the last confirmed ``seq`` of each (sink, log) is kept."""

    def load(self, sink_name: str, log_id: str) -> int:
        """The saved cursor, ``-1`` when nothing was sent yet."""

    def save(self, sink_name: str, log_id: str, seq: int) -> None:
        """Persist the cursor durably before returning."""


class SiemExportError(Exception):
    """The sink stayed unreachable through every retry; ``sent`` entries went out before."""

    def __init__(self, message: str, *, sent: int, cursor: int) -> None:
        super().__init__(message)
        self.sent = sent
        self.cursor = cursor


class CursorStoreError(Exception):
    """The cursor file is unreadable or malformed (it is never silently reset)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry policy after a transport error: ``initial * 2**n`` seconds, capped at
    ``maximum``, for at most ``retries`` consecutive failures (a success resets the count)."""

    initial: float = 0.5
    maximum: float = 30.0
    retries: int = 5

    def delay(self, failures: int) -> float:
        """Pause before retry number ``failures`` (1-based)."""
        return float(min(self.maximum, self.initial * 2 ** max(0, failures - 1)))


class SiemExporter:
    """Sends the entries of log ``log_id`` to one sink, from the cursor of (sink, log).

    ``log_id`` is keyword-only and required: the cursor is keyed by it and must be known
    before the first read (``source`` serves that single log).
    """

    def __init__(
        self,
        source: Source,
        sender: Sender,
        renderer: Callable[[JournalEntry], bytes],
        cursor_store: CursorStore,
        sink_name: str,
        batch_size: int = 500,
        *,
        log_id: str,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.source = source
        self.sender = sender
        self.renderer = renderer
        self.cursor_store = cursor_store
        self.sink_name = sink_name
        self.batch_size = batch_size
        self.log_id = log_id
        self.backoff = backoff or Backoff()
        self._sleep = sleep

    def run_once(self) -> int:
        """Send everything available now; return how many entries were newly confirmed.

        Stops at the first short batch (entries journaled meanwhile wait for the next run).
        Raises :class:`SiemExportError` when the sink stays unreachable through all retries;
        the cursor then still points after the last confirmed batch.
        """
        sent = 0
        failures = 0
        cursor = self.cursor_store.load(self.sink_name, self.log_id)
        while True:
            batch = self.source(cursor, self.batch_size)
            if not batch:
                return sent
            self._check(batch, cursor)
            messages = [self.renderer(entry) for entry in batch]
            try:
                self.sender.send(messages)
            except TransportError as exc:
                failures += 1
                self.sender.close()
                if failures > self.backoff.retries:
                    raise SiemExportError(
                        f"sink {self.sink_name!r} unreachable after {failures} attempts: {exc}",
                        sent=sent,
                        cursor=cursor,
                    ) from exc
                self._sleep(self.backoff.delay(failures))
                # Resend from what is durably confirmed, whatever we believed in memory.
                cursor = self.cursor_store.load(self.sink_name, self.log_id)
                continue
            failures = 0
            last = batch[-1].seq
            assert last is not None  # checked by _check
            self.cursor_store.save(self.sink_name, self.log_id, last)
            cursor = last
            sent += len(batch)
            if len(batch) < self.batch_size:
                return sent

    def _check(self, batch: list[JournalEntry], cursor: int) -> None:
        """Refuse a batch that breaks the source contract (it would corrupt the cursor)."""
        if len(batch) > self.batch_size:
            raise ValueError(f"source returned {len(batch)} entries for limit {self.batch_size}")
        previous = cursor
        for entry in batch:
            if entry.log_id != self.log_id:
                raise ValueError(
                    f"source returned an entry of log {entry.log_id!r}, exporting {self.log_id!r}"
                )
            if entry.seq is None or entry.seq <= previous:
                raise ValueError(
                    f"source returned seq {entry.seq} after {previous}: not sequenced or not "
                    "in increasing order"
                )
            previous = entry.seq


class MemoryCursorStore:
    """Cursors in a dict: for tests, and for sinks where resending everything is fine."""

    def __init__(self) -> None:
        self._cursors: dict[tuple[str, str], int] = {}

    def load(self, sink_name: str, log_id: str) -> int:
        return self._cursors.get((sink_name, log_id), NOTHING_SENT)

    def save(self, sink_name: str, log_id: str, seq: int) -> None:
        self._cursors[(sink_name, log_id)] = seq


class FileCursorStore:
    """Cursors in one JSON file ``{"sink": {"log_id": seq}}``, replaced atomically.

    ``save`` writes a temporary file in the same directory, fsyncs it, renames it over the
    file and fsyncs the directory: after a crash the file holds either the old or the new
    cursors, never a mix or nothing. A malformed file raises :class:`CursorStoreError`
    rather than restarting from ``-1`` (which would be safe but could flood the SIEM).
    Thread-safe within a process; one process per file.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self, sink_name: str, log_id: str) -> int:
        with self._lock:
            return self._read().get(sink_name, {}).get(log_id, NOTHING_SENT)

    def save(self, sink_name: str, log_id: str, seq: int) -> None:
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < NOTHING_SENT:
            raise ValueError(f"cursor must be an integer >= -1, not {seq!r}")
        with self._lock:
            data = self._read()
            data.setdefault(sink_name, {})[log_id] = seq
            self._write(data)

    def _read(self) -> dict[str, dict[str, int]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise CursorStoreError(f"{self.path}: cannot read cursor file: {exc}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CursorStoreError(f"{self.path}: not JSON: {exc}") from exc
        if not isinstance(data, dict) or not all(
            isinstance(cursors, dict)
            and all(
                isinstance(seq, int) and not isinstance(seq, bool) and seq >= NOTHING_SENT
                for seq in cursors.values()
            )
            for cursors in data.values()
        ):
            raise CursorStoreError(
                f'{self.path}: expected {{"sink": {{"log_id": seq >= -1}}}}, got {text[:200]!r}'
            )
        return data

    def _write(self, data: dict[str, dict[str, int]]) -> None:
        directory = self.path.parent
        tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        payload = json.dumps(data, sort_keys=True, indent=1).encode() + b"\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
