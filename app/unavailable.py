"""When a service Lumen depends on is out (the database, the file store): 503 with Retry-After, as JSON for the
API and as a page that retries by itself for a browser. Never a 500, never a request left waiting."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import exc as db_errors

from app.storage import BlobStoreError

logger = logging.getLogger(__name__)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")

RETRY_AFTER_SECONDS = 5
# Errors of the database or of the way to it, not of a statement: connection refused or lost, server
# restarting, SQLite's write lock not free in time (OperationalError); no pooled connection free in time
# (TimeoutError).
DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    db_errors.OperationalError,
    db_errors.InterfaceError,
    db_errors.TimeoutError,
)


def unavailable(request: Request, *, message: str) -> Response:
    """503 + Retry-After: a page for a browser's page request, JSON for everything else."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", ""):
        context = {"message": message, "retry_after": RETRY_AFTER_SECONDS}
        return templates.TemplateResponse(request, "unavailable.html", context, 503, headers=headers)
    return JSONResponse({"detail": message}, status_code=503, headers=headers)


async def _database_outage(request: Request, exc: Exception) -> Response:
    logger.error("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    if isinstance(exc, db_errors.TimeoutError):
        message = "Lumen is busy: no database connection was free in time; try again in a few seconds"
    else:
        message = "Lumen cannot reach its database; try again in a few seconds"
    return unavailable(request, message=message)


async def _store_outage(request: Request, exc: Exception) -> Response:
    # The reason names the bucket and endpoint: for the log, not for the client.
    logger.error("%s %s: file store unavailable: %s", request.method, request.url.path, exc)
    return unavailable(request, message="the file store is not reachable; try again in a few seconds")


def add_handlers(app: FastAPI) -> None:
    for outage in DATABASE_OUTAGES:
        app.add_exception_handler(outage, _database_outage)
    app.add_exception_handler(BlobStoreError, _store_outage)
