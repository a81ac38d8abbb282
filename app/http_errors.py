"""The one place where a refusal becomes an HTTP answer: `{"detail": message}` with the error's status for the
JSON API (/api/... and /dicomweb/...), the error's page for a browser's page. Routes and pages raise, they do not catch.

The kinds and their status codes are in app/errors.py. Outages of the database or the file store are answered
by app/unavailable.py (503); an anonymous visitor of a page is sent to the login page from here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.auth.dependencies import LoginRequired, SignedIn
from app.errors import AppError, Invalid, NotFound, TooMany
from app.ingest.pixels import PixelDecodeError
from app.storage import BlobNotFound
from app.viewer.images import FrameOutOfRange
from app.viewer.raw import NotGrayscale

templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")

# Errors of the pixel modules, which predate app.errors: a frame past the last one, pixels that cannot be
# decoded (ingest checks every file; a missing decoder may still refuse a frame), raw values of a colour image.
PIXEL_ERRORS: dict[type[Exception], int] = {FrameOutOfRange: 404, PixelDecodeError: 422, NotGrayscale: 422}


logger = logging.getLogger(__name__)


def _is_api(request: Request) -> bool:
    # DICOMweb (/dicomweb) is an API too: its clients read {"detail": ...}, never a page.
    return request.url.path.startswith(("/api/", "/dicomweb/"))


def _page(request: Request, exc: AppError) -> Response:
    """The error's page, with who is signed in (app.auth.dependencies keeps it on the request) for the top bar;
    a not-found error without a name for its thing gets the plain error page."""
    signed_in: SignedIn | None = getattr(request.state, "signed_in", None)
    what = exc.what if isinstance(exc, NotFound) else ""
    page = exc.page if what or exc.page != NotFound.page else AppError.page
    context = {
        "caller": signed_in,
        "csrf_token": signed_in.csrf_token if signed_in else None,
        "reason": str(exc),
        "what": what,
    }
    return templates.TemplateResponse(request, page, context, status_code=exc.status_code)


async def _refused(request: Request, exc: Exception) -> Response:
    error = cast(AppError, exc)  # registered for AppError only
    if _is_api(request):
        response: Response = JSONResponse({"detail": str(error)}, status_code=error.status_code)
    else:
        response = _page(request, error)
    if isinstance(error, TooMany):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """A request whose path, query or form does not fit its route (an id past 2**31 - 1, a NUL byte): FastAPI's
    422 with the invalid fields for the API, the error page saying which for a browser."""
    error = cast(RequestValidationError, exc)  # registered for RequestValidationError only
    if _is_api(request):
        return await request_validation_exception_handler(request, error)
    reasons = "; ".join(f"{_field(item['loc'])}: {item['msg']}" for item in error.errors()[:5])
    return _page(request, Invalid(f"the request does not fit this page: {reasons}"))


def _field(location: tuple[int | str, ...] | list[int | str]) -> str:
    """"study_id" of ("path", "study_id"); the place alone ("body") when nothing follows it."""
    if not location:
        return "request"
    return ".".join(str(part) for part in location[1:]) or str(location[0])


async def _pixels_refused(_request: Request, exc: Exception) -> Response:
    status_code = next(code for kind, code in PIXEL_ERRORS.items() if isinstance(exc, kind))
    return JSONResponse({"detail": str(exc)}, status_code=status_code)


async def _file_missing(request: Request, exc: Exception) -> Response:
    # A row whose stored file is gone (deleted from the store by hand, a restore that missed it): the client
    # can do nothing about it, but it is told which file, and the operators see it in the log.
    logger.error("%s %s: a stored file is missing: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": f"the stored file of this image is missing from the blob store ({exc})"},
                        status_code=404)


async def _to_login(request: Request, _exc: Exception) -> Response:
    return RedirectResponse(f"/login?next={request.url.path}", status_code=303)


def add_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _refused)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    for error in PIXEL_ERRORS:
        app.add_exception_handler(error, _pixels_refused)
    app.add_exception_handler(LoginRequired, _to_login)
    app.add_exception_handler(BlobNotFound, _file_missing)
