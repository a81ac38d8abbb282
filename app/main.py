"""create_app(): routers, static files, error handlers. No logic here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app import api_docs, http_errors, unavailable
from app.admin import pages as admin_pages
from app.admin import router as admin_router
from app.admission import AdmissionControl
from app.archive import router as archive_router
from app.auth import pages as auth_pages
from app.auth import router as auth_router
from app.config import get_settings
from app.dicom_results import router as dicom_results_router
from app.dicomweb import router as dicomweb_router
from app.health import monitor
from app.health import router as health_router
from app.jobs import router as jobs_router
from app.jobs import sweeper
from app.live import router as live_router
from app.live.streams import LiveStreams
from app.onboarding import pages as onboarding_pages
from app.onboarding import router as onboarding_router
from app.predictions import router as predictions_router
from app.reader_studies import pages as reader_study_pages
from app.reader_studies import router as reader_study_router
from app.reading import pages as reading_pages
from app.reading import router as reading_router
from app.security_headers import SecurityHeaders
from app.studies import router as studies_router
from app.viewer import pages as viewer_pages
from app.viewer import router as viewer_router

_STATIC = Path(__file__).resolve().parent / "static"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    background = app.state.run_sweeper
    async with (
        sweeper.running_in_background(enabled=background),
        monitor.running_in_background(app, enabled=background),
        app.state.live_streams.stopped_by_signals(),
    ):
        yield


def create_app(*, run_sweeper: bool = True) -> FastAPI:
    # The documentation and the schema are app/api_docs.py's routes: in production they are for admins only.
    app = FastAPI(title="Lumen", version="0.1.0", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.run_sweeper = run_sweeper  # and the outage monitor: the background work of `lumen serve`
    app.state.outage = None
    app.state.live_streams = LiveStreams()  # open event streams: bounded, ended on SIGTERM (app/live/streams.py)
    app.include_router(health_router.router)  # /healthz and /readyz, outside /api: probes need no sign-in
    app.include_router(dicomweb_router.router)  # /dicomweb, where DICOMweb clients expect it (PS3.18)
    # live before viewer: /api/worklist/events is not a study id of /api/worklist/{study_id}.
    api = (auth_router, studies_router, jobs_router, predictions_router, live_router, viewer_router, reading_router,
           reader_study_router, admin_router, onboarding_router, dicom_results_router, archive_router)
    for module in api:
        app.include_router(module.router, prefix="/api")
    for module in (auth_pages, viewer_pages, reading_pages, reader_study_pages, onboarding_pages, admin_pages):
        app.include_router(module.router)
    api_docs.add_docs(app)
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    http_errors.add_handlers(app)  # a service's refusal: JSON for the API, a page for a browser
    unavailable.add_handlers(app)  # the database or the file store out: 503 with Retry-After
    settings = get_settings()
    app.add_middleware(
        AdmissionControl, limit=settings.max_concurrent_requests, max_wait=settings.request_queue_seconds
    )
    # Added last, so outermost: the 503 answers of admission control get the headers too.
    app.add_middleware(SecurityHeaders, hsts=settings.environment == "production")
    return app
