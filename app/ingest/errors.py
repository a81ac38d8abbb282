"""The one error of ingest: an HTTP-like status and a reason that names the file."""

from __future__ import annotations


class IngestError(Exception):
    """An upload or import refused as a whole; nothing of it was stored."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
