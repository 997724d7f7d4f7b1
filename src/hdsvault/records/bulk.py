"""Bulk import and export: the reversibility every HDS hosting contract must offer.

Import reads transaction/batch Bundles (``.json``, ``.json.gz``) and FHIR NDJSON
(``.ndjson``, ``.ndjson.gz``, one resource per line), or directories of them. A Bundle is one
database transaction through the same core as ``POST /fhir/{finess}`` (``urn:uuid``
references resolved, all or nothing); NDJSON is loaded in batches of ``batch_size`` lines,
one transaction each, each resource stored under its own id (update-as-create), as the
export wrote it — so export followed by import reproduces the record. NDJSON references are
not checked (the files of a bulk export arrive one resource type at a time).

Export writes, for each resource type, ``<Type>.ndjson`` with the current version of every
resource, and ``manifest.json`` in the shape of a FHIR Bulk Data export manifest. The
export is journaled (category transfer) *before* the first byte is written: one entry per
patient whose record leaves, and one for the whole export.

Speed: validation is the largest single cost (~0.3 ms per resource with the pydantic
models, and ~0.5 s to load them once per process); a trusted source (your own export) may
skip it (``validate=False``: types, ids and INS keys are still checked). Next come the
blind-index rows (~50 per resource, each a random-key B-tree insert), which is why
consecutive bundles share a commit (:class:`_Group`), and the cyclic garbage collector,
which is why it runs less often during an import (:func:`_fewer_collections`).
"""

from __future__ import annotations

import functools
import gc
import gzip
import itertools
import multiprocessing as mp
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import Connection, select

from hdsvault.access.decision import Operation
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import resources
from hdsvault.journal.store import append_many
from hdsvault.records import bundles, jsonio, storage, writes
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.guard import allow
from hdsvault.records.journaling import Interaction, entry, per_patient
from hdsvault.records.model import Caller, Json, ResourceKey, instant, new_id, now
from hdsvault.records.store import RecordStore
from hdsvault.records.validation import validate

SUFFIXES = (".json", ".json.gz", ".ndjson", ".ndjson.gz")


@dataclass
class ImportReport:
    """Counts per resource type, files done, and errors (file: message)."""

    counts: Counter[str] = field(default_factory=Counter)
    files: int = 0
    bundles: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    allowed: set[str] = field(default_factory=set, repr=False)
    allowed_ops: set[tuple[Operation, str]] = field(default_factory=set, repr=False)
    """Resource types the caller was authorized to write during this import."""

    @property
    def resources(self) -> int:
        return sum(self.counts.values())


Progress = Callable[[int], None]


def sources(paths: list[Path]) -> list[Path]:
    """The importable files under ``paths`` (directories recursively), sorted."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise RecordError(Problem.NOT_FOUND, f"{p}: no such file or directory")
    return out


def _open(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def import_paths(
    store: RecordStore,
    caller: Caller,
    paths: list[Path],
    *,
    validate_resources: bool = True,
    batch_size: int = 500,
    progress: Progress | None = None,
    jobs: int = 1,
    file_done: Callable[[Path], None] | None = None,
) -> ImportReport:
    """Import every file; a failing bundle or batch is reported and the others go on.

    ``jobs`` > 1 prepares bundles (parse, validate, assign ids, rewrite references, compute
    blind-index tokens) in that many worker processes while this one writes: the database
    transactions stay in file order, one per bundle, exactly as with ``jobs=1``.
    """
    report = ImportReport()
    files = sources(paths)
    prepared = _prepared_in_workers(store, caller, files, validate_resources, jobs)
    with _fewer_collections(), _Group(store) as group:
        for path in files:
            report.files += 1
            try:
                if path.name.endswith((".ndjson", ".ndjson.gz")):
                    group.commit()
                    _import_ndjson(
                        store, caller, path, report, validate_resources, batch_size, progress
                    )
                    continue
                ready = next(prepared) if prepared is not None else None
                if ready is not None and ready[0] == "prepared":
                    _commit_prepared(store, caller, ready[1], report, progress, group)
                    continue
                if ready is not None and ready[0] == "error":
                    raise RecordError(Problem.INVALID, str(ready[1]))
                with _open(path) as f:
                    data = f.read()
                _import_document(
                    store, caller, path.name, data, report, validate_resources, progress, group
                )
            except RecordError as exc:
                report.errors.append((path.name, exc.message))
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                report.errors.append((path.name, f"cannot read: {exc}"))
            finally:
                if file_done is not None:
                    group.after_commit(functools.partial(file_done, path))
    if report.bundles and store.engine.dialect.name == "postgresql":
        _analyze(store)
    return report


GC_YOUNG_THRESHOLD = 100_000
"""Allocations between two young-generation collections of the cyclic GC during an import
(Python's default: 700); see :func:`_fewer_collections`."""
_gc_lock = threading.Lock()
_gc_depth = 0
_gc_saved: tuple[int, int, int] | None = None


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while an import runs (then restore it).

    Why: an import allocates millions of containers that live a little while (the parsed
    bundles, token rows), so with the default threshold the collector runs every 700
    allocations, promotes them, and keeps re-walking everything long-lived - the token memos
    alone hold hundreds of thousands of entries (``records.indexing``). None of it forms
    reference cycles (JSON trees, tuples of bytes and str): the collections find nothing,
    and cost about a fifth of the import's CPU (Synthea, no validation: 1,600 -> 1,950
    resources per CPU-second with this). Reference counting still frees everything as
    before; only cycles wait for the next collection, every 100,000 allocations. Nested or
    concurrent imports in one process share the setting; the last one out restores it and
    runs one full collection (the import pays for its own garbage).
    """
    global _gc_depth, _gc_saved
    with _gc_lock:
        if _gc_depth == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(_gc_saved[0], GC_YOUNG_THRESHOLD), *_gc_saved[1:])
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                _gc_saved = None
                # Pay the deferred collections here, once: left pending, the survivors of
                # the import would make the first collections after it long (a full one
                # was ~1 s after a 100k-resource import), in whatever runs next.
                gc.collect()


def _analyze(store: RecordStore) -> None:
    """Refresh PostgreSQL's planner statistics of the record tables after a bulk load.

    Why: until autovacuum gets to them, the planner sees the pre-import sizes and picks
    plans for a few rows (nested loops over thousands of token matches: searches 5-10x
    slower right after an import). ANALYZE samples a fixed number of rows: about a second.
    """
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE resources, resource_versions, search_tokens")


class _Group:
    """Consecutive transaction Bundles of an import share one database transaction.

    Why: a commit writes every page the transaction dirtied (WAL, then checkpoint), and the
    blind-index rows of a bundle land all over the token B-tree; committing every few
    thousand resources instead of every bundle writes shared pages once (Synthea on SQLite:
    commit CPU 5.4 s -> 1.9 s, though part of it comes back as page-cache spills during the
    inserts; fewer fsyncs and round trips on PostgreSQL).

    Each bundle still runs in its own SAVEPOINT: all or nothing, its journal entries with
    it, a failing bundle rolled back alone. Nothing is reported imported (``file_done``)
    before the commit that makes it durable. The group commits after
    :data:`GROUP_RESOURCES` resources or :data:`GROUP_SECONDS` seconds (the write lock is
    not held longer than that), and before anything that needs its own transaction
    (batches, NDJSON, an access decision that may journal a refusal).
    """

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._conn: Connection | None = None
        self._resources = 0
        self._opened = 0.0
        self._pending: list[Callable[[], None]] = []

    def __enter__(self) -> _Group:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        elif self._conn is not None:
            self._conn.rollback()
            self._conn.close()
            self._conn = None

    def connection(self) -> Connection:
        """The open grouped transaction (begun on first use)."""
        if self._conn is None:
            self._conn = self._store.engine.connect()
            self._conn.begin()
            self._opened = time.monotonic()
        return self._conn

    def done(self, resources: int) -> None:
        """A bundle was stored in the group: commit if the group is full or old."""
        self._resources += resources
        if self._resources >= GROUP_RESOURCES or time.monotonic() - self._opened >= GROUP_SECONDS:
            self.commit()

    def after_commit(self, action: Callable[[], None]) -> None:
        if self._conn is None:
            action()
        else:
            self._pending.append(action)

    def commit(self) -> None:
        if self._conn is not None:
            self._conn.commit()
            self._conn.close()
            self._conn = None
        self._resources = 0
        pending, self._pending = self._pending, []
        for action in pending:
            action()


GROUP_RESOURCES = 3000
GROUP_SECONDS = 2.0


# -- preparation in worker processes --------------------------------------------------------

_WORKER: dict[str, Any] = {}
"""Set in the parent right before the workers fork: the tenant's token function (never
pickled: it holds the index key) and the options."""


def _prepared_in_workers(
    store: RecordStore, caller: Caller, files: list[Path], validate: bool, jobs: int
) -> Iterator[tuple[str, Any] | None] | None:
    bundles_only = [f for f in files if not f.name.endswith((".ndjson", ".ndjson.gz"))]
    if jobs <= 1 or len(bundles_only) < 2 or "fork" not in mp.get_all_start_methods():
        return None
    _WORKER.update(
        tokens=store.tokens_for(caller.tenant),
        bases=store.base_urls,
        validate=validate,
        max_entries=store.options.max_bundle_entries,
    )

    def results() -> Iterator[tuple[str, Any] | None]:
        window = max(2, 2 * jobs)
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as pool:
            pending: list[Future[tuple[str, Any]]] = []
            queue = iter(bundles_only)
            for path in itertools.islice(queue, window):
                pending.append(pool.submit(_prepare_file, str(path)))
            while pending:
                fut = pending.pop(0)
                nxt = next(queue, None)
                if nxt is not None:
                    pending.append(pool.submit(_prepare_file, str(nxt)))
                try:
                    yield fut.result()
                except Exception as exc:  # a worker died: let the parent do this file
                    yield ("failed", str(exc))
        _WORKER.clear()

    return results()


def _prepare_file(path: str) -> tuple[str, Any]:
    """Worker side: ("prepared", (kind, entries, prepared)) or ("raw"/"error", detail)."""
    try:
        with _open(Path(path)) as f:
            doc = jsonio.loads(f.read())
        if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
            return ("raw", None)
        kind, entries = bundles.parse_entries(
            doc, _WORKER["max_entries"], structure=_WORKER["validate"]
        )
        if kind != "transaction" or bundles.is_conditional(entries):
            return ("raw", None)
        return (
            "prepared",
            (entries, bundles.prepare(_WORKER["bases"], _WORKER["tokens"], entries)),
        )
    except RecordError as exc:
        return ("error", exc.message)
    except (OSError, EOFError, ValueError) as exc:
        return ("raw", str(exc))


def _allow_entries(
    store: RecordStore,
    caller: Caller,
    entries: list[bundles.Entry],
    report: ImportReport,
    group: _Group,
) -> None:
    """Authorize each (operation, type) once per import; commit the group before asking."""
    for op, rt in sorted(
        {(bundles.OPERATIONS[e.method], e.type) for e in entries if e.method in bundles.OPERATIONS}
    ):
        if (op, rt) not in report.allowed_ops:
            group.commit()  # a refusal is journaled in a transaction of its own
            allow(store, caller, op, rt)
            report.allowed_ops.add((op, rt))


def _commit_prepared(
    store: RecordStore,
    caller: Caller,
    ready: tuple[list[bundles.Entry], bundles.Prepared],
    report: ImportReport,
    progress: Progress | None,
    group: _Group,
) -> None:
    entries, prepared = ready
    _allow_entries(store, caller, entries, report, group)
    _grouped_transaction(store, caller, entries, report, group, prepared)
    if progress:
        progress(len(entries))


def _grouped_transaction(
    store: RecordStore,
    caller: Caller,
    entries: list[bundles.Entry],
    report: ImportReport,
    group: _Group,
    prepared: bundles.Prepared | None = None,
) -> None:
    """One transaction Bundle, as a savepoint of the group (alone if it has GET entries)."""
    if any(e.method == "GET" for e in entries):
        group.commit()
        bundles.transaction(
            store, caller, entries, interaction=Interaction.IMPORT, prepared=prepared
        )
    else:
        bundles.transaction(
            store,
            caller,
            entries,
            interaction=Interaction.IMPORT,
            prepared=prepared,
            within=group.connection(),
        )
    stored = 0
    for e in entries:
        if e.method in ("POST", "PUT") and not e.skip:
            report.counts[e.type] += 1
            stored += 1
    report.bundles += 1
    group.done(stored)


def _import_document(
    store: RecordStore,
    caller: Caller,
    name: str,
    data: bytes,
    report: ImportReport,
    validate_resources: bool,
    progress: Progress | None,
    group: _Group,
) -> None:
    try:
        doc = jsonio.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordError(Problem.INVALID, f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RecordError(Problem.INVALID, "not a JSON object")
    if "resourceType" not in doc and isinstance(doc.get("output"), list):
        return  # a Bulk Data manifest (ours, next to the NDJSON files): nothing to import
    if doc.get("resourceType") != "Bundle" or doc.get("type") not in ("transaction", "batch"):
        group.commit()
        _store_batch(store, caller, [doc], report, validate_resources)
        if progress:
            progress(1)
        return
    kind, entries = bundles.parse_entries(
        doc, store.options.max_bundle_entries, structure=validate_resources
    )
    _allow_entries(store, caller, entries, report, group)
    if kind == "batch":
        group.commit()
        for e in entries:
            try:
                bundles.transaction(store, caller, [e], interaction=Interaction.IMPORT)
                if e.method in ("POST", "PUT"):
                    report.counts[e.type] += 1
            except RecordError as exc:
                report.errors.append((f"{name} entry[{e.index}]", exc.message))
        report.bundles += 1
    else:
        _grouped_transaction(store, caller, entries, report, group)
    if progress:
        progress(len(entries))


def _import_ndjson(
    store: RecordStore,
    caller: Caller,
    path: Path,
    report: ImportReport,
    validate_resources: bool,
    batch_size: int,
    progress: Progress | None,
) -> None:
    batch: list[Json] = []
    with _open(path) as raw:
        for lineno, line in enumerate(raw, 1):
            if not line.strip():
                continue
            try:
                item = jsonio.loads(line)
            except orjson.JSONDecodeError as exc:
                report.errors.append((f"{path.name}:{lineno}", f"not valid JSON: {exc}"))
                continue
            if not isinstance(item, dict):
                report.errors.append((f"{path.name}:{lineno}", "not a JSON object"))
                continue
            batch.append(item)
            if len(batch) >= batch_size:
                _flush(store, caller, path.name, batch, report, validate_resources, progress)
                batch = []
    if batch:
        _flush(store, caller, path.name, batch, report, validate_resources, progress)


def _flush(
    store: RecordStore,
    caller: Caller,
    name: str,
    batch: list[Json],
    report: ImportReport,
    validate_resources: bool,
    progress: Progress | None,
) -> None:
    try:
        _store_batch(store, caller, batch, report, validate_resources)
    except RecordError as exc:
        report.errors.append((name, exc.message))
    if progress:
        progress(len(batch))


def _store_batch(
    store: RecordStore,
    caller: Caller,
    batch: list[Json],
    report: ImportReport,
    validate_resources: bool,
) -> None:
    """Resources with their own ids (update-as-create), one transaction."""
    tokens = store.tokens_for(caller.tenant)
    changes: list[writes.Change] = []
    for i, resource in enumerate(batch):
        try:
            validate(resource, structure=validate_resources)
        except RecordError as exc:
            raise RecordError(
                exc.problem, f"resource {i + 1} of the batch: {exc.message}"
            ) from None
        rt = str(resource["resourceType"])
        if rt not in report.allowed:
            allow(store, caller, Operation.CREATE, rt)
            allow(store, caller, Operation.UPDATE, rt)
            report.allowed.add(rt)
        rid = resource.get("id")
        key = ResourceKey(rt, rid if isinstance(rid, str) else new_id())
        changes.append(
            writes.Change(
                key,
                resource,
                Interaction.IMPORT,
                writes.tokens_of(store, tokens, resource),
                new=not isinstance(rid, str),
            )
        )
    when = now()
    with store.engine.begin() as conn:
        applied = writes.apply(conn, store, caller.tenant, changes, when)
        writes.journal_results(conn, caller, applied, when, interaction=Interaction.IMPORT)
    for c in changes:
        report.counts[c.key.type] += 1


# ------------------------------------------------------------------ export


@dataclass
class ExportReport:
    counts: Counter[str] = field(default_factory=Counter)
    manifest: Path | None = None


def export_tenant(
    store: RecordStore,
    caller: Caller,
    directory: Path,
    *,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the tenant's whole current record as FHIR bulk NDJSON + ``manifest.json``."""
    allow(store, caller, Operation.EXPORT)
    directory.mkdir(parents=True, exist_ok=True)
    started = now()
    r = resources.c
    with read_connection(store.engine) as conn:
        types = storage.types_present(conn, caller.tenant)
        patients = [
            f"Patient/{i}"
            for (i,) in conn.execute(
                select(r.resource_id).where(
                    r.tenant_id == caller.tenant,
                    r.resource_type == "Patient",
                    r.deleted.is_(False),
                )
            )
        ]
    # Journal first (committed): the data must not leave before its trace is durable.
    with store.engine.begin() as conn:
        append_many(
            conn,
            [
                entry(caller, Interaction.EXPORT, started, objects=tuple(types)),
                *per_patient(caller, Interaction.EXPORT, started, [(p, p) for p in patients]),
            ],
        )
    report = ExportReport()
    outputs: list[Json] = []
    with read_connection(store.engine) as conn:
        keys = store.data_keys(conn, caller.tenant)
        for rt in types:
            target = directory / f"{rt}.ndjson"
            n = 0
            with target.open("wb") as out:
                for stored in storage.iter_current(conn, keys, caller.tenant, rt):
                    out.write(jsonio.dumps(stored) + b"\n")
                    n += 1
                    if progress and n % 500 == 0:
                        progress(500)
            if progress:
                progress(n % 500)
            report.counts[rt] = n
            outputs.append({"type": rt, "url": target.name, "count": n})
    manifest = {
        "transactionTime": instant(started),
        "request": f"hdsvault export --tenant {caller.tenant}",
        "requiresAccessToken": False,
        "output": outputs,
        "error": [],
    }
    report.manifest = directory / "manifest.json"
    report.manifest.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return report
