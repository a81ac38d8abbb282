"""What a service raises when it refuses a request: one small hierarchy, one status code per kind.

Services raise these (or a subclass named for their domain); routes and pages do not catch them:
app/http_errors.py answers every one of them, `{"detail": message}` with the status below for the JSON API
and an HTML page for a browser's page. The message is shown to the caller as it is: say what was refused and
why, never anything the caller may not know. Plain Python (no web framework): services and workers use it.
"""

from __future__ import annotations

from typing import ClassVar


class AppError(Exception):
    """A request a service refuses; the message is safe to show. Subclass the kind below that fits."""

    status_code: int = 400  # a class's status; an error may carry its own (app.ingest.errors.IngestError)
    # The template (app/templates) a page request gets, with `reason` (the message) in its context.
    page: ClassVar[str] = "error.html"


class Refused(AppError):
    """400: a change the rules forbid whoever asks (e.g. an admin taking away their own role)."""

    status_code = 400


class Forbidden(AppError, PermissionError):
    """403: this caller may not see or do this (a reader-study case still to read, a page for admins)."""

    status_code = 403


class NotFound(AppError, LookupError):
    """404: no such row, or none that this caller may know of.

    `what` names the thing for the not-found page ("Study 12"); without it a page shows the message.
    """

    status_code = 404
    page = "viewer/not_found.html"

    def __init__(self, message: str, *, what: str = "") -> None:
        super().__init__(message)
        self.what = what


class Conflict(AppError, ValueError):
    """409: the state of the thing forbids this now (a submitted read, an open study's design)."""

    status_code = 409


class Invalid(AppError, ValueError):
    """422: the request does not fit (an unknown method, a study that does not exist, a bad CSV row)."""

    status_code = 422


class TooMany(AppError):
    """429: this caller has as much in flight as they may (expensive explanation jobs); `retry_after` is the
    seconds after which asking again may succeed (the Retry-After header)."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
