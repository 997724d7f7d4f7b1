"""The policy's facts about a patient, read from the tenant's own records.

Access rules ask three questions about a patient (``access.context.PatientContext``). They are
answered from FHIR resources the establishment already keeps, so no second source of truth:

- *care units with an active encounter*: ``Encounter?subject=<patient>`` with status
  ``planned|arrived|triaged|in-progress|onleave``; the units are the codes of
  ``Encounter.serviceType.coding`` (e.g. ``emergency``, ``oncology``: the same codes as the
  policy's care units and the principals' ``care_units`` claim);
- *care team*: members of the patient's active ``CareTeam`` resources, as references
  (``Practitioner/<id>``) and as the RPPS numbers of those practitioners;
- *labels*: the codes of the Patient's ``meta.security`` and ``meta.tag`` (``VIP``, ``EMP``,
  ``PSY``, ``R``...).

These reads decide access; they are not released to anyone, so they are not journaled as
accesses (the decision they feed is). Answers are cached briefly (``ttl`` seconds) per
patient: a decision path must stay cheap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from hdsvault.db.engine import read_connection
from hdsvault.records.finder import Finder
from hdsvault.records.searching import plan_of
from hdsvault.records.store import RecordStore

ACTIVE_ENCOUNTER_STATUSES = "planned,arrived,triaged,in-progress,onleave"
RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
_MAX_MATCHES = 200


class RecordsPatientContext:
    """:class:`hdsvault.access.context.PatientContext` over the records store."""

    def __init__(self, store: RecordStore, *, ttl: float = 30.0) -> None:
        self._store = store
        self._ttl = ttl
        self._cache: dict[tuple[str, str, str], tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def care_units_with_active_encounter(self, tenant: str, patient: str) -> frozenset[str]:
        def compute() -> frozenset[str]:
            encounters = self._search(
                tenant, "Encounter", [("subject", patient), ("status", ACTIVE_ENCOUNTER_STATUSES)]
            )
            return frozenset(
                str(coding["code"]).lower()
                for e in encounters
                for coding in (e.get("serviceType") or {}).get("coding", [])
                if coding.get("code")
            )

        return self._cached("units", tenant, patient, compute)

    def care_team(self, tenant: str, patient: str) -> frozenset[str]:
        def compute() -> frozenset[str]:
            teams = self._search(tenant, "CareTeam", [("subject", patient), ("status", "active")])
            members = {
                str(p["member"]["reference"])
                for t in teams
                for p in t.get("participant", [])
                if (p.get("member") or {}).get("reference")
            }
            practitioners = sorted(
                m.removeprefix("Practitioner/") for m in members if m.startswith("Practitioner/")
            )
            if practitioners:
                for pr in self._search(tenant, "Practitioner", [("_id", ",".join(practitioners))]):
                    members |= {
                        str(i["value"])
                        for i in pr.get("identifier", [])
                        if i.get("system") == RPPS_SYSTEM and i.get("value")
                    }
            return frozenset(members)

        return self._cached("team", tenant, patient, compute)

    def labels(self, tenant: str, patient: str) -> frozenset[str]:
        def compute() -> frozenset[str]:
            patient_id = patient.removeprefix("Patient/")
            found = self._search(tenant, "Patient", [("_id", patient_id)])
            meta = found[0].get("meta", {}) if found else {}
            return frozenset(
                str(c["code"]).upper()
                for c in [*meta.get("security", []), *meta.get("tag", [])]
                if c.get("code")
            )

        return self._cached("labels", tenant, patient, compute)

    def _cached(
        self, what: str, tenant: str, patient: str, compute: Callable[[], frozenset[str]]
    ) -> frozenset[str]:
        key = (what, tenant, patient)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        value = compute()
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now, value)
        return value

    def _search(
        self, tenant: str, resource_type: str, pairs: list[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        with read_connection(self._store.platform.engine) as conn:
            finder = Finder(conn, self._store, tenant)
            plan = plan_of(self._store, resource_type, pairs, strict=False)
            page = finder.page(plan, count=_MAX_MATCHES, offset=0)
        return [s.resource for s in page.matches if s.resource is not None]
