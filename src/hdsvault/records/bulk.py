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

Speed: validation is the dominant cost (~1 ms per resource); a trusted source (your own
export) may skip it (``validate=False``: types, ids and INS keys are still checked).
"""

from __future__ import annotations

import gzip
import itertools
import multiprocessing as mp
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import and_, select

from hdsvault.access.decision import Operation
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import resource_versions, resources
from hdsvault.journal.store import append_many
from hdsvault.records import bundles, storage, writes
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
    for path in files:
        report.files += 1
        try:
            if path.name.endswith((".ndjson", ".ndjson.gz")):
                _import_ndjson(
                    store, caller, path, report, validate_resources, batch_size, progress
                )
                continue
            ready = next(prepared) if prepared is not None else None
            if ready is not None and ready[0] == "prepared":
                _commit_prepared(store, caller, ready[1], report, progress)
                continue
            if ready is not None and ready[0] == "error":
                raise RecordError(Problem.INVALID, str(ready[1]))
            with _open(path) as f:
                data = f.read()
            _import_document(store, caller, path.name, data, report, validate_resources, progress)
        except RecordError as exc:
            report.errors.append((path.name, exc.message))
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            report.errors.append((path.name, f"cannot read: {exc}"))
        finally:
            if file_done is not None:
                file_done(path)
    return report


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
            doc = orjson.loads(f.read())
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


def _commit_prepared(
    store: RecordStore,
    caller: Caller,
    ready: tuple[list[bundles.Entry], bundles.Prepared],
    report: ImportReport,
    progress: Progress | None,
) -> None:
    entries, prepared = ready
    for op, rt in sorted(
        {(bundles.OPERATIONS[e.method], e.type) for e in entries if e.method in bundles.OPERATIONS}
    ):
        if (op, rt) not in report.allowed_ops:
            allow(store, caller, op, rt)
            report.allowed_ops.add((op, rt))
    bundles.transaction(store, caller, entries, interaction=Interaction.IMPORT, prepared=prepared)
    for e in entries:
        if e.method in ("POST", "PUT") and not e.skip:
            report.counts[e.type] += 1
    report.bundles += 1
    if progress:
        progress(len(entries))


def _import_document(
    store: RecordStore,
    caller: Caller,
    name: str,
    data: bytes,
    report: ImportReport,
    validate_resources: bool,
    progress: Progress | None,
) -> None:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordError(Problem.INVALID, f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RecordError(Problem.INVALID, "not a JSON object")
    if "resourceType" not in doc and isinstance(doc.get("output"), list):
        return  # a Bulk Data manifest (ours, next to the NDJSON files): nothing to import
    if doc.get("resourceType") != "Bundle" or doc.get("type") not in ("transaction", "batch"):
        _store_batch(store, caller, [doc], report, validate_resources)
        if progress:
            progress(1)
        return
    kind, entries = bundles.parse_entries(
        doc, store.options.max_bundle_entries, structure=validate_resources
    )
    for op, rt in sorted(
        {(bundles.OPERATIONS[e.method], e.type) for e in entries if e.method in bundles.OPERATIONS}
    ):
        allow(store, caller, op, rt)
    if kind == "batch":
        for e in entries:
            try:
                bundles.transaction(store, caller, [e], interaction=Interaction.IMPORT)
                if e.method in ("POST", "PUT"):
                    report.counts[e.type] += 1
            except RecordError as exc:
                report.errors.append((f"{name} entry[{e.index}]", exc.message))
    else:
        bundles.transaction(store, caller, entries, interaction=Interaction.IMPORT)
        for e in entries:
            if e.method in ("POST", "PUT") and not e.skip:
                report.counts[e.type] += 1
    report.bundles += 1
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
                item = orjson.loads(line)
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
        types = sorted(
            t
            for (t,) in conn.execute(
                select(r.resource_type)
                .where(r.tenant_id == caller.tenant, r.deleted.is_(False))
                .distinct()
            )
        )
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
                for stored in _current_of_type(conn, store, caller.tenant, keys, rt):
                    out.write(orjson.dumps(stored) + b"\n")
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


def _current_of_type(
    conn: Any, store: RecordStore, tenant: str, keys: Any, rt: str
) -> Iterator[Json]:
    r, v = resources.c, resource_versions.c
    stmt = (
        select(v.resource_type, v.resource_id, v.version_id, v.last_updated, v.deleted, v.body)
        .select_from(
            resources.join(
                resource_versions,
                and_(
                    v.tenant_id == r.tenant_id,
                    v.resource_type == r.resource_type,
                    v.resource_id == r.resource_id,
                    v.version_id == r.version_id,
                ),
            )
        )
        .where(r.tenant_id == tenant, r.resource_type == rt, r.deleted.is_(False))
        .order_by(r.resource_id)
        .execution_options(yield_per=1000)
    )
    for row in conn.execute(stmt):
        stored = storage.open_rows(keys, tenant, [row])[0]
        if stored.resource is not None:
            yield stored.resource
