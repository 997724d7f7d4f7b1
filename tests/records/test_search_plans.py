"""The finder's alternative plans give the same answers as the plain ones.

An AND of token parameters walks the smallest set and probes the others (``_probed``) when
one set has at most ``_PROBE_LIMIT`` rows, else uses INTERSECT; wide range groups are tested
on the candidates' token sets (``_wide``) when another parameter drives the query, else in
SQL. Small test data always takes the first branches: here each query also runs with the
other branch forced, and both must give the same totals and pages (on both backends).
"""

from __future__ import annotations

from typing import Any

import pytest

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.platform import Platform
from hdsvault.records import finder, searching, writes
from hdsvault.records.model import Caller
from hdsvault.records.store import RecordStore

LOINC = "http://loinc.org"


def _caller(tenant: str) -> Caller:
    return Caller(Principal("plans-test", tenant, Role.SERVICE), tenant)


def _obs(patient: str, code: str, when: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "kg"},
    }


QUERIES: list[list[tuple[str, str]]] = [
    [("subject", "Patient/p1"), ("code", f"{LOINC}|29463-7")],
    [("code", f"{LOINC}|29463-7"), ("subject", "Patient/p1")],
    [("subject", "Patient/p1,Patient/p2"), ("code", f"{LOINC}|29463-7,{LOINC}|8302-2")],
    [("subject", "Patient/p1"), ("code", f"{LOINC}|29463-7"), ("status", "final")],
    [("subject", "Patient/p3"), ("code", f"{LOINC}|29463-7")],
    [("subject", "Patient/p1"), ("date", "ge2015-01-01")],
    [("subject", "Patient/p2"), ("date", "lt2016-06-01")],
    [("subject", "Patient/p1"), ("date", "ge2015-01-01"), ("value-quantity", "gt70")],
    [("code", f"{LOINC}|29463-7"), ("date", "ge2019"), ("_sort", "-date")],
    [("subject", "Patient/p1"), ("date", "ge2015-01-01"), ("date", "lt2021-01-01")],
]


def _answers(store: RecordStore, tenant: str) -> list[tuple[int, list[str]]]:
    out = []
    for pairs in QUERIES:
        page = searching.search(store, _caller(tenant), "Observation", pairs).page
        out.append((page.total, [s.id for s in page.matches]))
    return out


def test_walk_and_probe_and_wide_groups_answer_like_intersect_and_sql(
    platform: Platform, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RecordStore(platform)
    n = 0
    for patient in ("p1", "p2"):
        writes.update(
            store,
            _caller(tenant),
            "Patient",
            patient,
            {"resourceType": "Patient", "id": patient, "name": [{"family": "Plan"}]},
        )
        for year in range(2012, 2024):
            for code, value in (("29463-7", 60 + year % 20), ("8302-2", 170.0)):
                n += 1
                rid = f"o{n}"
                obs = {**_obs(patient, code, f"{year}-0{1 + year % 9}-15T08:00:00Z", value)}
                writes.update(store, _caller(tenant), "Observation", rid, {**obs, "id": rid})
    fast = _answers(store, tenant)
    # Non-trivial answers: several matches, some empty, some partial.
    assert fast[0][0] == 12 and fast[4] == (0, [])
    assert 0 < fast[5][0] < 24 and 0 < fast[7][0] < fast[5][0]

    monkeypatch.setattr(finder, "_PROBE_LIMIT", 0)  # INTERSECT
    monkeypatch.setattr(finder, "_WIDE_GROUP", 10**9)  # every group in SQL
    assert _answers(store, tenant) == fast
