"""The importer shares one commit between consecutive transaction Bundles (``bulk._Group``).

What must still hold, on both backends: each bundle is all or nothing (a failing one is
rolled back alone, the bundles around it in the same group are kept), and a file is reported
done only once the commit holding it is durable (visible to another connection).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from synthea_store import service_caller

from hdsvault.platform import Platform
from hdsvault.records import bulk, searching
from hdsvault.records.store import RecordStore


def _bundle(family: str, *, broken: bool = False) -> dict[str, Any]:
    patient = "urn:uuid:00000000-0000-4000-8000-000000000001"
    # Found missing only inside the database transaction, after the group has begun.
    subject = "Patient/no-such-patient" if broken else patient
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient,
                "resource": {"resourceType": "Patient", "name": [{"family": family}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "weight"},
                    "subject": {"reference": subject},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


def _found(store: RecordStore, tenant: str, family: str) -> int:
    result = searching.search(store, service_caller(tenant), "Patient", [("family", family)])
    return result.page.total


def test_a_failing_bundle_is_rolled_back_alone_and_files_are_done_once_durable(
    platform: Platform, tenant: str, tmp_path: Path
) -> None:
    store = RecordStore(platform)
    families = {"a.json": "Alpha", "b.json": "Bravo", "c.json": "Charlie"}
    for name, family in families.items():
        (tmp_path / name).write_bytes(orjson.dumps(_bundle(family, broken=name == "b.json")))
    seen: dict[str, int] = {}

    def done(path: Path) -> None:  # runs after the commit: another connection sees the data
        seen[path.name] = _found(store, tenant, families[path.name])

    report = bulk.import_paths(store, service_caller(tenant), [tmp_path], file_done=done)

    assert [name for name, _ in report.errors] == ["b.json"]
    assert "Patient/no-such-patient does not exist" in report.errors[0][1]
    assert report.counts == {"Patient": 2, "Observation": 2}
    assert seen == {"a.json": 1, "b.json": 0, "c.json": 1}
    assert report.bundles == 2


def test_the_import_collects_garbage_less_often_and_restores_the_collector(
    platform: Platform, tenant: str, tmp_path: Path
) -> None:
    """The cyclic GC runs every 100,000 allocations during an import, as before after it.

    Checked from inside the import (the progress callback) and after it, including after an
    import that raised, and with nested scopes (the setting is process-wide).
    """
    import gc

    store = RecordStore(platform)
    (tmp_path / "a.json").write_bytes(orjson.dumps(_bundle("Gcfamily")))
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []
    report = bulk.import_paths(
        store,
        service_caller(tenant),
        [tmp_path / "a.json"],
        progress=lambda _n: during.append(gc.get_threshold()),
    )
    assert report.resources == 2 and not report.errors
    assert during and all(t[0] >= bulk.GC_YOUNG_THRESHOLD for t in during)
    assert all(t[1:] == before[1:] for t in during)
    assert gc.get_threshold() == before
    assert _found(store, tenant, "Gcfamily") == 1

    def boom(_n: int) -> None:
        raise RuntimeError("progress display died")

    (tmp_path / "b.json").write_bytes(orjson.dumps(_bundle("Gcother")))
    with pytest.raises(RuntimeError):
        bulk.import_paths(store, service_caller(tenant), [tmp_path / "b.json"], progress=boom)
    assert gc.get_threshold() == before

    with bulk._fewer_collections():
        with bulk._fewer_collections():
            assert gc.get_threshold()[0] >= bulk.GC_YOUNG_THRESHOLD
        assert gc.get_threshold()[0] >= bulk.GC_YOUNG_THRESHOLD
    assert gc.get_threshold() == before
