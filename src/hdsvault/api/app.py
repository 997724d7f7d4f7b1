"""The ASGI application: probes, metrics and the authenticated API routers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from hdsvault import __version__
from hdsvault.access import control as access_control
from hdsvault.access.context import register_patient_context
from hdsvault.access.oidc import OidcVerifier
from hdsvault.api import access_admin, dicomweb
from hdsvault.api.auth import CurrentPrincipal
from hdsvault.api.fhir import mount_fhir
from hdsvault.api.hot_routes import HotRoutes
from hdsvault.api.observability import RequestObservability
from hdsvault.api.perimeter import Perimeter
from hdsvault.api.shared_limits import SharedLimits
from hdsvault.blobs import open_blob_store
from hdsvault.db.engine import KeptReadConnection, is_sqlite
from hdsvault.heap import freeze_startup_heap
from hdsvault.imaging.fhir import load_models
from hdsvault.journal import service as journal
from hdsvault.platform import Platform
from hdsvault.records import bulk_export
from hdsvault.records.patient_context import RecordsPatientContext
from hdsvault.records.store import RecordStore


def create_app(
    platform: Platform, *, freeze_heap: bool = False, limits: SharedLimits | None = None
) -> FastAPI:
    """Build the application around an opened platform; ``freeze_heap`` (the serving
    commands): once started, settle the process's heap (:mod:`hdsvault.heap`)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = [
            journal.sequencer_task(platform),
            bulk_export.expiry_task(
                RecordStore(platform), open_blob_store(platform.settings, platform.engine)
            ),
        ]
        for task in tasks:
            task.start()
        control = access_control.AccessControl.open(
            platform.engine, platform.keyring, platform.settings.access
        )
        access_control.install(control)
        previous_context = None
        if platform.settings.access.policy != "baseline":
            # Relationship rules need the patient's encounters, care team and labels.
            previous_context = register_patient_context(
                RecordsPatientContext(RecordStore(platform))
            )
        load_models()  # STOW-RS syncs ImagingStudy resources here too
        if freeze_heap:  # last: what is alive now lives as long as the server
            freeze_startup_heap()
        try:
            yield
        finally:
            if previous_context is not None:
                register_patient_context(previous_context)
            access_control.uninstall(control)
            oidc.close()
            for task in tasks:
                task.stop()
            if app.state.loop_reads is not None:
                app.state.loop_reads.close()
            imaging = getattr(app.state, "imaging_store", None)  # made by the first request
            if imaging is not None:
                imaging.close()  # its blob-put threads and blob store, before the platform
            platform.close()

    app = FastAPI(
        title="hdsvault",
        version=__version__,
        docs_url=None,  # no debug or documentation endpoints by default
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry is off, whatever the environment says
        # (FASTAPI_OTEL_AUTO_CONFIGURE): request URLs and errors go nowhere but hdsvault's
        # logs and metrics, and no request pays for looking up unconfigured providers.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.state.platform = platform
    # WADO-RS retrievals served on the event loop read on this one (api/held_retrieval).
    app.state.loop_reads = (
        KeptReadConnection(platform.engine) if is_sqlite(platform.engine) else None
    )
    oidc = OidcVerifier(platform.settings.oidc)
    app.state.oidc_verifier = oidc

    # STOW-RS, QIDO-RS and metadata; WADO-RS retrievals are served ahead of the router
    # (HotRoutes, below).
    app.include_router(dicomweb.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        if platform.is_ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        registry = REGISTRY
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/whoami")
    def whoami(principal: CurrentPrincipal) -> dict[str, str | None]:
        return {"subject": principal.subject, "tenant": principal.tenant, "role": principal.role}

    app.include_router(access_admin.router)
    # Innermost: served after the perimeter and the request's observability, like any route.
    app.add_middleware(
        HotRoutes,
        routes=dicomweb.WADO_ROUTES,
        prefix=dicomweb.router.prefix.split("{", 1)[0],
        handlers=app.exception_handlers,
    )
    # Security headers, limits and request metadata (pure ASGI), inside the request id/metrics.
    app.add_middleware(
        Perimeter, settings=platform.settings.perimeter, tls=platform.settings.tls, limits=limits
    )
    mount_fhir(app, platform)
    app.add_middleware(RequestObservability, router=app.router)
    return app


def multiprocess_dir() -> str | None:
    """Set by ``hdsvault serve`` when workers share metrics (prometheus_client's protocol)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")
