"""The Synthea corpus imported once per session and backend (shared by several test modules)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.config import load_settings
from hdsvault.platform import Platform, init_platform
from hdsvault.records import bulk
from hdsvault.records.model import Caller
from hdsvault.records.store import RecordStore
from hdsvault.tenants.service import add_tenant

SYNTHEA = Path("/work/shared/data/synthea-r4")
TENANT = "750712184"


@cache
def bundles() -> list[dict[str, Any]]:
    out = []
    for path in sorted(SYNTHEA.glob("*.json.gz")):
        with gzip.open(path) as f:
            out.append(json.load(f))
    return out


def expected_counts() -> Counter[str]:
    c: Counter[str] = Counter()
    for b in bundles():
        for e in b["entry"]:
            c[e["resource"]["resourceType"]] += 1
    return c


def service_caller(tenant: str) -> Caller:
    return Caller(Principal("test:importer", tenant, Role.SERVICE), tenant)


@dataclass
class SyntheaStore:
    platform: Platform
    store: RecordStore
    report: bulk.ImportReport
    backend: str
    url: str
    data_dir: Path


def open_synthea(backend: str, url: str, data_dir: Path, *, validate: bool) -> SyntheaStore:
    settings = load_settings(
        data_dir=data_dir, database={"url": url}, fhir={"max_bundle_entries": 10_000}
    )
    init_platform(settings)
    platform = Platform.open(settings)
    add_tenant(platform, TENANT, "Hôpital Synthea", by="test")
    store = RecordStore(platform)
    report = bulk.import_paths(
        store, service_caller(TENANT), [SYNTHEA], validate_resources=validate
    )
    return SyntheaStore(platform, store, report, backend, url, data_dir)
