"""``ImagingStudy`` resources kept in step with the DICOM index, through the records service.

Why derived and eventually consistent: a study arrives instance by instance (one C-STORE
each); rewriting its ImagingStudy per instance would cost a FHIR version per instance. The
index bumps ``imaging_studies.revision`` in the transaction of each store; :func:`sync_study`
writes the ImagingStudy (id = the study's random id) when ``revision`` moved past
``fhir_revision``: at the end of each STOW-RS request and C-STORE association, and by
:func:`sync_pending` (run when the DIMSE listener starts) for anything left behind by a
crash. The DICOM index stays the source of truth.

Patient link: the study's PatientID is looked up as a Patient identifier (any system: an INS
sent by the ADT feed, or the local id). When nothing matches, a Patient is created with the
identifier ``urn:oid:<IssuerOfPatientID>`` when the issuer is an OID, else
:data:`LOCAL_ID_SYSTEM`, and the name, birth date and sex of the DICOM header.

The writes go through a small :class:`FhirWriter` protocol (records service adapter below),
so the imaging service depends on three record operations only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any, Protocol

import structlog
from sqlalchemy import select, update

from hdsvault.db.engine import read_connection
from hdsvault.db.schema import imaging_instances, imaging_series, imaging_studies
from hdsvault.imaging.attributes import parse_attribute
from hdsvault.imaging.dicomfile import Json, first_value, is_uid
from hdsvault.imaging.store import (
    INSTANCE_META_KIND,
    SERIES_KIND,
    STUDY_KIND,
    ImagingStore,
    meta_context,
    open_json,
)
from hdsvault.platform import Platform
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.model import Caller

log = structlog.get_logger("hdsvault.imaging")

LOCAL_ID_SYSTEM = "urn:hdsvault:dicom:patient-id"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
_T = parse_attribute


class FhirWriter(Protocol):
    """What imaging needs of the FHIR store."""

    def search_by_identifier(
        self, caller: Caller, resource_type: str, value: str
    ) -> list[Json]: ...

    def create(self, caller: Caller, resource_type: str, resource: Json) -> Json: ...

    def update(
        self,
        caller: Caller,
        resource_type: str,
        resource_id: str,
        resource: Json,
        *,
        if_match: int | None = None,
    ) -> Json: ...

    def version(self, caller: Caller, resource_type: str, resource_id: str) -> int | None:
        """The current version of ``Type/id``; None if there is none (or it is deleted)."""
        ...


class RecordsFhirWriter:
    """:class:`FhirWriter` over the records service (journaled and authorized there)."""

    def __init__(self, platform: Platform) -> None:
        from hdsvault.records.store import RecordStore

        self.records = RecordStore(platform)

    def search_by_identifier(self, caller: Caller, resource_type: str, value: str) -> list[Json]:
        from hdsvault.records import searching

        result = searching.search(
            self.records, caller, resource_type, [("identifier", _escape(value))]
        )
        return [s.resource for s in result.page.matches if s.resource is not None]

    def create(self, caller: Caller, resource_type: str, resource: Json) -> Json:
        from hdsvault.records import writes

        stored = writes.create(self.records, caller, resource_type, resource).stored
        assert stored.resource is not None
        return stored.resource

    def update(
        self,
        caller: Caller,
        resource_type: str,
        resource_id: str,
        resource: Json,
        *,
        if_match: int | None = None,
    ) -> Json:
        from hdsvault.records import writes

        stored = writes.update(
            self.records, caller, resource_type, resource_id, resource, if_match=if_match
        ).stored
        assert stored.resource is not None
        return stored.resource

    def version(self, caller: Caller, resource_type: str, resource_id: str) -> int | None:
        from hdsvault.records import storage
        from hdsvault.records.model import ResourceKey

        with read_connection(self.records.engine) as conn:
            head = storage.head(conn, caller.tenant, ResourceKey(resource_type, resource_id))
        return None if head is None or head.deleted else head.version


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")


def sync_studies(store: ImagingStore, caller: Caller, study_ids: Iterable[str]) -> list[str]:
    """Bring the ImagingStudy of each study up to date; returns the ids written."""
    done = []
    for sid in dict.fromkeys(study_ids):
        if sync_study(store, caller, sid):
            done.append(sid)
    return done


def load_models() -> None:
    """Load the FHIR models a sync validates (:func:`hdsvault.records.validation.preload`):
    called by the processes that sync, as they start, not by their first study."""
    from hdsvault.records.validation import preload

    preload("ImagingStudy", "Patient")


def sync_pending(store: ImagingStore, caller_for: Any, limit: int = 1000) -> int:
    """Sync every study whose ImagingStudy lags (``caller_for(tenant)`` acts for the tenant)."""
    st = imaging_studies.c
    with read_connection(store.engine) as conn:
        rows = conn.execute(
            select(st.tenant_id, st.id).where(st.revision != st.fhir_revision).limit(limit)
        ).all()
    n = 0
    for tenant, sid in rows:
        if sync_study(store, caller_for(tenant), sid):
            n += 1
    return n


_SYNC_LOCKS = tuple(threading.Lock() for _ in range(64))
"""Syncs of one study run one at a time in a process (64 stripes: unrelated studies rarely
wait on each other). Why: two associations adding to the same study each sync it when they
close; the one that read the study first could write its older ImagingStudy and revision
last, leaving the FHIR view behind the index until the listener's next start (seen at
concurrency 4). Under the lock a later sync reads what the earlier one wrote, or newer.
Between processes (HTTP workers' STOW-RS, the DIMSE listener) the same order is kept by the
resource's version: see :func:`_sync_study`."""

SYNC_ATTEMPTS = 5
"""Syncs of one study that another process's sync may overtake before one gives up (the
study is then left for the next sync, or ``sync_pending`` at the listener's start)."""


def sync_study(store: ImagingStore, caller: Caller, study_id: str) -> bool:
    with _SYNC_LOCKS[hash((caller.tenant, study_id)) % len(_SYNC_LOCKS)]:
        again = False
        for _ in range(SYNC_ATTEMPTS):
            try:
                return _sync_study(store, caller, study_id, again=again)
            except _Overwrote:
                again = True  # what this sync replaced may have been newer: write the newest
            except RecordError as exc:
                if exc.problem not in (Problem.PRECONDITION, Problem.CONFLICT):
                    raise
        log.warning("imagingstudy.sync-overtaken", study=study_id, attempts=SYNC_ATTEMPTS)
        return False


class _Overwrote(Exception):
    """This sync created the ImagingStudy's first version, and found another one there."""


def _sync_study(store: ImagingStore, caller: Caller, study_id: str, *, again: bool = False) -> bool:
    """Write the study's ImagingStudy from the index, if it lags (``again``: even if the
    index says it does not).

    The resource's version is read before the index and the write requires it (If-Match):
    a sync of another process that wrote in between (from what the index held then, or
    newer) makes this write fail (PRECONDITION), and the caller starts again from what that
    sync wrote. A resource that does not exist yet cannot be required: two first syncs may
    both write, and the one whose version is not the first then writes again from the
    newest index (:class:`_Overwrote`). So an ImagingStudy read from an older index never
    stays over one read from a newer index, whichever process wrote it; and the recorded
    ``fhir_revision`` only moves forward.
    """
    tenant = caller.tenant
    version = store.fhir.version(caller, "ImagingStudy", study_id)
    st, se, it = imaging_studies.c, imaging_series.c, imaging_instances.c
    with read_connection(store.engine) as conn:
        row = conn.execute(
            select(st.meta, st.revision, st.fhir_revision, st.patient_ref, st.created_at).where(
                st.tenant_id == tenant, st.id == study_id
            )
        ).first()
        if row is None or (row.revision == row.fhir_revision and not again):
            return False
        keys = store.keys(conn, tenant)
        study = open_json(keys, meta_context(STUDY_KIND, tenant, study_id), row.meta)
        series_rows = conn.execute(
            select(se.id, se.meta)
            .where(se.tenant_id == tenant, se.study_id == study_id)
            .order_by(se.created_at, se.id)
        ).all()
        inst_rows = conn.execute(
            select(it.id, it.series_id, it.meta)
            .where(it.tenant_id == tenant, it.study_id == study_id)
            .order_by(it.created_at, it.id)
        ).all()
        series = [
            (r.id, open_json(keys, meta_context(SERIES_KIND, tenant, r.id), r.meta))
            for r in series_rows
        ]
        instances: dict[str, list[Json]] = {}
        for r in inst_rows:
            instances.setdefault(r.series_id, []).append(
                open_json(keys, meta_context(INSTANCE_META_KIND, tenant, r.id), r.meta)
            )
    patient_ref = row.patient_ref or link_patient(store, caller, study)
    resource = imaging_study(study_id, study, series, instances, patient_ref)
    written = store.fhir.update(caller, "ImagingStudy", study_id, resource, if_match=version)
    if version is None and str(written.get("meta", {}).get("versionId")) != "1":
        raise _Overwrote
    with store.engine.begin() as conn:
        conn.execute(
            update(imaging_studies)
            .where(st.tenant_id == tenant, st.id == study_id, st.fhir_revision < row.revision)
            .values(fhir_revision=row.revision, patient_ref=patient_ref)
        )
    return True


def link_patient(store: ImagingStore, caller: Caller, study: Json) -> str:
    """``Patient/<id>`` for the study's PatientID: found by identifier, or created."""
    pid = (first_value(study, _T("PatientID")) or "").strip()
    if pid:
        found = store.fhir.search_by_identifier(caller, "Patient", pid)
        if len(found) == 1:
            return f"Patient/{found[0]['id']}"
    issuer = (first_value(study, _T("IssuerOfPatientID")) or "").strip()
    patient: Json = {"resourceType": "Patient"}
    if pid:
        system = f"urn:oid:{issuer}" if issuer and is_uid(issuer) else LOCAL_ID_SYSTEM
        patient["identifier"] = [{"system": system, "value": pid}]
    name = first_value(study, _T("PatientName"))
    if name:
        parts = name.split("=")[0].split("^")
        human: Json = {"text": " ".join(p for p in reversed(parts[:2]) if p)}
        if parts[0]:
            human["family"] = parts[0]
        given = [g for g in parts[1:3] if g]
        if given:
            human["given"] = " ".join(given).split()
        patient["name"] = [human]
    birth = first_value(study, _T("PatientBirthDate")) or ""
    if len(birth) == 8 and birth.isdigit():
        patient["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    sex = (first_value(study, _T("PatientSex")) or "").upper()
    gender = {"M": "male", "F": "female", "O": "other"}.get(sex)
    if gender:
        patient["gender"] = gender
    created = store.fhir.create(caller, "Patient", patient)
    return f"Patient/{created['id']}"


def _date_time(date: str | None, time: str | None) -> str | None:
    if not date or len(date) != 8 or not date.isdigit():
        return None
    out = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    t = (time or "").split(".")[0]
    if len(t) >= 4 and t[:4].isdigit():
        out += f"T{t[:2]}:{t[2:4]}:{t[4:6] if len(t) >= 6 else '00'}Z"
    return out


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def imaging_study(
    study_id: str,
    study: Json,
    series: list[tuple[str, Json]],
    instances: dict[str, list[Json]],
    patient_ref: str,
) -> Json:
    """The ImagingStudy (R4) of a study's index entries."""
    uid = first_value(study, _T("StudyInstanceUID")) or ""
    modalities: list[str] = []
    out_series = []
    total = 0
    for eid, meta in series:
        modality = first_value(meta, _T("Modality")) or "OT"
        if modality not in modalities:
            modalities.append(modality)
        insts = instances.get(eid, [])
        total += len(insts)
        entry: Json = {
            "uid": first_value(meta, _T("SeriesInstanceUID")),
            "modality": {"system": DCM, "code": modality},
            "numberOfInstances": len(insts),
            "instance": [
                {
                    "uid": first_value(i, _T("SOPInstanceUID")),
                    "sopClass": {
                        "system": "urn:ietf:rfc:3986",
                        "code": "urn:oid:" + (first_value(i, _T("SOPClassUID")) or ""),
                    },
                    **(
                        {"number": n}
                        if (n := _int(first_value(i, _T("InstanceNumber")))) is not None and n >= 0
                        else {}
                    ),
                }
                for i in insts
            ],
        }
        if (num := _int(first_value(meta, _T("SeriesNumber")))) is not None and num >= 0:
            entry["number"] = num
        if desc := first_value(meta, _T("SeriesDescription")):
            entry["description"] = desc
        out_series.append(entry)
    resource: Json = {
        "resourceType": "ImagingStudy",
        "id": study_id,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "status": "available",
        "subject": {"reference": patient_ref},
        "modality": [{"system": DCM, "code": m} for m in modalities],
        "numberOfSeries": len(series),
        "numberOfInstances": total,
        "series": out_series,
    }
    started = _date_time(first_value(study, _T("StudyDate")), first_value(study, _T("StudyTime")))
    if started:
        resource["started"] = started
    if desc := first_value(study, _T("StudyDescription")):
        resource["description"] = desc
    if acc := first_value(study, _T("AccessionNumber")):
        resource["identifier"].append(
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                    ]
                },
                "value": acc,
            }
        )
    out: Json = json.loads(json.dumps(resource))
    return out
