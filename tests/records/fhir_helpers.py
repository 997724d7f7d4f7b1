"""Helpers of the record-store tests: tokens, the FHIR test client, resources, assertions.

``fhir`` is a FastAPI TestClient on the real application (lifespan included) for each
database backend (SQLite file, real PostgreSQL cluster), authenticated as a clinician of
establishment 750712184. ``live_server`` runs the same application under uvicorn on a free
loopback port, for real FHIR clients (fhirpy, fhirclient).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


from hdsvault.access.roles import Role  # noqa: E402
from hdsvault.access.tokens import create_token  # noqa: E402
from hdsvault.platform import Platform  # noqa: E402

TENANT = "750712184"
OTHER_TENANT = "130786049"
FHIR_JSON = "application/fhir+json"


def token_for(platform: Platform, tenant: str | None, role: Role) -> str:
    return create_token(
        platform.engine, tenant=tenant, role=role, ttl=timedelta(days=1), by="test"
    ).token


@dataclass
class Fhir:
    """A TestClient bound to the tenant's FHIR base, with a clinician token."""

    client: TestClient
    platform: Platform
    token: str
    base: str = f"/fhir/{TENANT}"

    def headers(
        self, extra: dict[str, str] | None = None, token: str | None = None
    ) -> dict[str, str]:
        h = {"Authorization": f"Bearer {token or self.token}", "Content-Type": FHIR_JSON}
        h.update(extra or {})
        return h

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(
            self.base + path,
            headers=self.headers(kw.pop("headers", None), kw.pop("token", None)),
            **kw,
        )

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        if body is not None and not isinstance(body, (bytes, str)):
            kw["json"] = body
        elif body is not None:
            kw["content"] = body
        return self.client.post(
            self.base + path,
            headers=self.headers(kw.pop("headers", None), kw.pop("token", None)),
            **kw,
        )

    def put(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        if body is not None and not isinstance(body, (bytes, str)):
            kw["json"] = body
        elif body is not None:
            kw["content"] = body
        return self.client.put(
            self.base + path,
            headers=self.headers(kw.pop("headers", None), kw.pop("token", None)),
            **kw,
        )

    def patch(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        headers = {"Content-Type": "application/json-patch+json", **(kw.pop("headers", None) or {})}
        return self.client.patch(
            self.base + path, json=body, headers=self.headers(headers, kw.pop("token", None)), **kw
        )

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.delete(
            self.base + path,
            headers=self.headers(kw.pop("headers", None), kw.pop("token", None)),
            **kw,
        )


@dataclass
class LiveServer:
    url: str
    token: str
    platform: Platform


def patient(family: str = "Dupont", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Jean"]}],
        "gender": "male",
        "birthDate": "1970-01-02",
        **extra,
    }


def observation(subject: str, code: str = "8302-2", value: float = 180.0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2020-03-15T10:00:00Z",
        "valueQuantity": {
            "value": value,
            "unit": "cm",
            "system": "http://unitsofmeasure.org",
            "code": "cm",
        },
    }


def assert_outcome(r: Any, status: int, fragment: str | None = None) -> dict[str, Any]:
    """``r`` is an OperationOutcome with ``status`` (mentioning ``fragment``)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and body["issue"][0]["diagnostics"]
    if fragment is not None:
        assert fragment in json.dumps(body), body
    return body


def create(fhir: Fhir, resource: dict[str, Any]) -> dict[str, Any]:
    r = fhir.post(f"/{resource['resourceType']}", resource)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body
