"""The FHIR R4 REST face, mounted at ``/fhir`` as its own ASGI application.

Why a sub-application: everything under ``/fhir`` answers in FHIR (OperationOutcome for
every error, 401 included, ``application/fhir+json``), with its own error handlers and crash
net, without changing how the rest of the API answers.
"""

from __future__ import annotations

from fastapi import FastAPI

from hdsvault.api.fhir import bulk_export, errors
from hdsvault.api.fhir.routes import router
from hdsvault.platform import Platform
from hdsvault.records.store import RecordStore


def create_fhir_app(platform: Platform, oidc_verifier: object | None = None) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.platform = platform
    app.state.oidc_verifier = oidc_verifier  # read by api.auth for OpenID Connect tokens
    app.state.record_store = RecordStore(platform)
    errors.install(app)
    app.include_router(bulk_export.router)  # before /{finess}/{type}: '$export' is no type
    app.include_router(router)
    app.add_middleware(errors.CrashToOutcome)
    return app


def mount_fhir(app: FastAPI, platform: Platform) -> None:
    """Mount the FHIR API on ``app`` at ``/fhir``."""
    app.mount("/fhir", create_fhir_app(platform, getattr(app.state, "oidc_verifier", None)))
