"""The one error of ingest: an HTTP-like status and a reason that names the file."""

from __future__ import annotations

from app.errors import AppError


class IngestError(AppError):
    """An upload or import refused as a whole; nothing of it was stored. Its status says why: 400 no file,
    409 a different file with a stored SOPInstanceUID, 413 too large, 415 not an image, 422 unreadable."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = self.status = status
        self.reason = reason
