"""Search (QIDO-RS and C-FIND): narrow by blind-index tokens, decide on opened metadata.

``authorize -> candidates by tokens (read snapshot) -> open sealed metadata -> match ->
page -> journal (committed) -> return``. Attributes of a lower level than the one asked
(``/studies?Modality=CT``) restrict the answer to studies having such a series or instance.
A query that no token can narrow scans the tenant's studies in arrival order, up to
:data:`MAX_SCAN` (then the page is marked ``truncated``, and QIDO-RS says so in a Warning).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, func, select

from hdsvault.access.decision import Operation
from hdsvault.crypto.aead import DataKeys
from hdsvault.crypto.blind_index import BlindIndex
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import imaging_instances, imaging_series, imaging_studies, imaging_tokens
from hdsvault.imaging import index as ix
from hdsvault.imaging import journaling
from hdsvault.imaging.attributes import (
    AVAILABILITY,
    DEFAULT_RETURN,
    MODALITIES_IN_STUDY,
    MODALITY,
    RETRIEVE_URL,
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
    Level,
    level_of,
    parse_attribute,
    vr_of,
)
from hdsvault.imaging.dicomfile import Json, all_values, first_value
from hdsvault.imaging.errors import ImagingError, Kind
from hdsvault.imaging.matching import matches
from hdsvault.imaging.store import (
    INSTANCE_META_KIND,
    SERIES_KIND,
    STUDY_KIND,
    ImagingStore,
    meta_context,
    open_json,
)
from hdsvault.records.model import Caller

MAX_SCAN = 50_000
_IN_CHUNK = 500
_COMPUTED = {
    MODALITIES_IN_STUDY,
    parse_attribute("NumberOfStudyRelatedSeries"),
    parse_attribute("NumberOfStudyRelatedInstances"),
    parse_attribute("NumberOfSeriesRelatedInstances"),
}


@dataclass
class Query:
    """A query at one level: attribute filters (tag -> DICOM matching value), paging."""

    level: Level
    filters: dict[str, str] = field(default_factory=dict)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int | None = None
    offset: int = 0


@dataclass
class Hit:
    study_id: str
    patient_ref: str | None
    attrs: Json


@dataclass
class Result:
    hits: list[Hit]
    truncated: bool = False


@dataclass
class _Study:
    id: str
    patient_ref: str | None
    meta: Json
    series: list[_Series] = field(default_factory=list)


@dataclass
class _Series:
    id: str
    study: _Study
    meta: Json
    instances: list[_Instance] = field(default_factory=list)


@dataclass
class _Instance:
    id: str
    series: _Series
    meta: Json


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


def _token_filter(
    index: BlindIndex, tenant: str, level: str, filters: dict[str, str], id_col: Any
) -> list[Any]:
    conds = []
    for tag, value in filters.items():
        tokens = ix.query_tokens(index, tag, value)
        if tokens:
            conds.append(
                id_col.in_(
                    select(imaging_tokens.c.item_id).where(
                        imaging_tokens.c.tenant_id == tenant,
                        imaging_tokens.c.level == level,
                        imaging_tokens.c.token.in_(tokens),
                    )
                )
            )
    return conds


def _keep(meta: Json, filters: dict[str, str]) -> bool:
    return all(
        tag in _COMPUTED or matches(meta, tag, value, vr_of(tag)) for tag, value in filters.items()
    )


def run(
    store: ImagingStore, caller: Caller, q: Query, *, retrieve_base: str | None = None
) -> Result:
    """The service call: authorize, search, journal, return matches (as DICOM JSON)."""
    journaling.allow(store.engine, caller, Operation.SEARCH)
    with read_connection(store.engine) as conn:
        keys = store.keys(conn, caller.tenant)
        index = store.index(conn, caller.tenant)
        result = execute(conn, store, caller.tenant, keys, index, q, retrieve_base)
    detail = journaling.seal_detail(
        keys, caller, {"level": str(q.level), "filters": q.filters, "offset": q.offset}
    )
    touched = [(f"ImagingStudy/{h.study_id}", h.patient_ref) for h in result.hits]
    with store.engine.begin() as conn:
        journaling.record(
            conn, journaling.entries(caller, journaling.QUERY, touched, detail=detail)
        )
    return result


def execute(
    conn: Connection,
    store: ImagingStore,
    tenant: str,
    keys: DataKeys,
    index: BlindIndex,
    q: Query,
    retrieve_base: str | None = None,
) -> Result:
    """Run ``q`` inside a read snapshot (no authorization, no journal: callers do both)."""
    by_level: dict[Level, dict[str, str]] = {lv: {} for lv in Level}
    for tag, value in q.filters.items():
        by_level[level_of(tag)][tag] = value
    s_f, e_f, i_f = by_level[Level.STUDY], by_level[Level.SERIES], by_level[Level.IMAGE]
    if q.level is Level.SERIES and MODALITY in s_f:
        e_f[MODALITY] = s_f.pop(MODALITY)

    # -- studies
    st = imaging_studies.c
    stmt = (
        select(st.id, st.meta, st.patient_ref)
        .where(st.tenant_id == tenant, *_token_filter(index, tenant, "study", s_f, st.id))
        .order_by(st.created_at, st.id)
        .limit(MAX_SCAN + 1)
    )
    rows = conn.execute(stmt).all()
    truncated = len(rows) > MAX_SCAN
    studies: dict[str, _Study] = {}
    for r in rows[:MAX_SCAN]:
        meta = open_json(keys, meta_context(STUDY_KIND, tenant, r.id), r.meta)
        if _keep(meta, s_f):
            studies[r.id] = _Study(r.id, r.patient_ref, meta)
    need_series = q.level is not Level.STUDY or bool(e_f) or bool(i_f) or MODALITIES_IN_STUDY in s_f
    if need_series and studies:
        _load_series(conn, keys, index, tenant, studies, e_f)
        if MODALITIES_IN_STUDY in s_f:
            wanted = s_f[MODALITIES_IN_STUDY]
            studies = {
                k: s
                for k, s in studies.items()
                if matches(_modalities(s), MODALITIES_IN_STUDY, wanted, "CS")
            }
        if e_f or q.level is not Level.STUDY:
            studies = {k: s for k, s in studies.items() if s.series}
    if (q.level is Level.IMAGE or i_f) and studies:
        _load_instances(conn, keys, index, tenant, studies, i_f)
        for s in studies.values():
            s.series = [e for e in s.series if e.instances]
        studies = {k: s for k, s in studies.items() if s.series}

    if q.level is Level.STUDY:
        items: list[Any] = list(studies.values())
    elif q.level is Level.SERIES:
        items = [e for s in studies.values() for e in s.series]
    else:
        items = [i for s in studies.values() for e in s.series for i in e.instances]
    end = None if q.limit is None else q.offset + q.limit
    page = items[q.offset : end]
    return Result(_render(conn, keys, index, tenant, q, page, retrieve_base), truncated)


def _load_series(
    conn: Connection,
    keys: DataKeys,
    index: BlindIndex,
    tenant: str,
    studies: dict[str, _Study],
    filters: dict[str, str],
) -> None:
    for study, row_id, meta in _children(
        conn, keys, index, tenant, imaging_series, "study_id", SERIES_KIND, studies, filters
    ):
        study.series.append(_Series(row_id, study, meta))


def _load_instances(
    conn: Connection,
    keys: DataKeys,
    index: BlindIndex,
    tenant: str,
    studies: dict[str, _Study],
    filters: dict[str, str],
) -> None:
    series = {e.id: e for s in studies.values() for e in s.series}
    for parent, row_id, meta in _children(
        conn, keys, index, tenant, imaging_instances, "series_id", INSTANCE_META_KIND, series,
        filters,
    ):  # fmt: skip
        parent.instances.append(_Instance(row_id, parent, meta))


P = TypeVar("P")


def _children(
    conn: Connection,
    keys: DataKeys,
    index: BlindIndex,
    tenant: str,
    table: Table,
    parent_column: str,
    kind: str,
    parents: Mapping[str, P],
    filters: dict[str, str],
) -> Iterator[tuple[P, str, Json]]:
    """Rows of ``table`` under ``parents`` that pass ``filters``: (parent, id, opened meta).

    Token filters narrow the rows in SQL; the others are checked on the opened metadata.
    """
    c = table.c
    level = "series" if table is imaging_series else "instance"
    token_conds = _token_filter(index, tenant, level, filters, c.id)
    for ids in _chunks(list(parents)):
        rows = conn.execute(
            select(c.id, c[parent_column], c.meta)
            .where(c.tenant_id == tenant, c[parent_column].in_(ids), *token_conds)
            .order_by(c.created_at, c.id)
        ).all()
        for row_id, parent_id, sealed in rows:
            meta = open_json(keys, meta_context(kind, tenant, row_id), sealed)
            if _keep(meta, filters):
                yield parents[parent_id], row_id, meta


def _modalities(s: _Study) -> Json:
    mods: list[str] = []
    for e in s.series:
        for m in all_values(e.meta, MODALITY):
            if m not in mods:
                mods.append(m)
    return {MODALITIES_IN_STUDY: {"vr": "CS", "Value": mods}} if mods else {}


def _counts(conn: Connection, tenant: str, column: Any, ids: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for chunk in _chunks(ids):
        for key, n in conn.execute(
            select(column, func.count())
            .where(column.table.c.tenant_id == tenant, column.in_(chunk))
            .group_by(column)
        ).all():
            out[str(key)] = int(n)
    return out


def _pick(source: Json, tags: Iterable[str], out: Json) -> None:
    for t in tags:
        if t in source and t not in out:
            out[t] = source[t]


def _render(
    conn: Connection,
    keys: DataKeys,
    index: BlindIndex,
    tenant: str,
    q: Query,
    page: list[Any],
    base: str | None,
) -> list[Hit]:
    wanted = [*DEFAULT_RETURN[q.level], *q.filters, *sorted(q.include)]
    hits: list[Hit] = []
    if q.level is Level.STUDY:
        ids = [s.id for s in page]
        if any(not s.series for s in page):
            missing = {s.id: s for s in page if not s.series}
            _load_series(conn, keys, index, tenant, missing, {})
        n_series = _counts(conn, tenant, imaging_series.c.study_id, ids)
        n_inst = _counts(conn, tenant, imaging_instances.c.study_id, ids)
        for s in page:
            attrs: Json = {}
            source = {**s.meta, **_modalities(s)}
            source[parse_attribute("NumberOfStudyRelatedSeries")] = _is(n_series.get(s.id, 0))
            source[parse_attribute("NumberOfStudyRelatedInstances")] = _is(n_inst.get(s.id, 0))
            _pick(source, source if q.include_all else wanted, attrs)
            uid = first_value(s.meta, STUDY_UID) or ""
            _finish(attrs, base, uid)
            hits.append(Hit(s.id, s.patient_ref, attrs))
    elif q.level is Level.SERIES:
        n_inst = _counts(conn, tenant, imaging_instances.c.series_id, [e.id for e in page])
        for e in page:
            attrs = {}
            source = {**e.meta}
            source[parse_attribute("NumberOfSeriesRelatedInstances")] = _is(n_inst.get(e.id, 0))
            _pick(source, source if q.include_all else wanted, attrs)
            _pick(e.study.meta, [STUDY_UID, *q.filters, *q.include], attrs)
            _finish(
                attrs,
                base,
                first_value(e.study.meta, STUDY_UID) or "",
                first_value(e.meta, SERIES_UID),
            )
            hits.append(Hit(e.study.id, e.study.patient_ref, attrs))
    else:
        for i in page:
            attrs = {}
            _pick(i.meta, i.meta if q.include_all else wanted, attrs)
            _pick(i.series.meta, [SERIES_UID, *q.filters, *q.include], attrs)
            _pick(i.series.study.meta, [STUDY_UID, *q.filters, *q.include], attrs)
            _finish(
                attrs,
                base,
                first_value(i.series.study.meta, STUDY_UID) or "",
                first_value(i.series.meta, SERIES_UID),
                first_value(i.meta, SOP_UID),
            )
            hits.append(Hit(i.series.study.id, i.series.study.patient_ref, attrs))
    return hits


def _is(n: int) -> Json:
    return {"vr": "IS", "Value": [n]}


def _finish(
    attrs: Json, base: str | None, study: str, series: str | None = None, sop: str | None = None
) -> None:
    attrs.setdefault(AVAILABILITY, {"vr": "CS", "Value": ["ONLINE"]})
    if base is not None:
        url = f"{base}/studies/{study}"
        if series:
            url += f"/series/{series}"
            if sop:
                url += f"/instances/{sop}"
        attrs[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    for key in list(attrs):
        if not isinstance(attrs[key], dict):
            del attrs[key]
    # DICOM JSON objects are sorted by tag
    ordered = dict(sorted(attrs.items()))
    attrs.clear()
    attrs.update(ordered)


def check_level_path(q: Query) -> None:
    if q.limit is not None and q.limit < 0:
        raise ImagingError(Kind.INVALID, "limit must be >= 0")
    if q.offset < 0:
        raise ImagingError(Kind.INVALID, "offset must be >= 0")
