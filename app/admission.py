"""Admission control: at most so many requests of one API process in progress at once.

The others wait their turn in arrival order on the event loop, holding nothing: no thread and no database
connection. Without it, under a crowd, requests that had taken a connection waited for a thread while others
that had a thread waited for a connection, until the pool timed out. A request that waits longer than
`max_wait` seconds is answered 503 with Retry-After. Probes and static files are not counted, nor the live
event streams, which stay open for minutes holding nothing and have their own limits (app/live/streams.py).
"""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app import unavailable

_NOT_COUNTED = ("/healthz", "/readyz", "/static/")
_EVENT_STREAM = re.compile(r"/api/studies/\d+/events")


class AdmissionControl:
    """ASGI middleware: `limit` requests in progress, the rest queued for up to `max_wait` seconds."""

    def __init__(self, app: ASGIApp, *, limit: int, max_wait: float) -> None:
        self.app = app
        self.limit = limit
        self.max_wait = max_wait
        self._slots: asyncio.Semaphore | None = None  # made on the server's event loop, at the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(_NOT_COUNTED) or _EVENT_STREAM.fullmatch(path):
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.max_wait)
        except TimeoutError:
            message = "Lumen is busy: too many requests at once; try again in a few seconds"
            await unavailable.unavailable(Request(scope), message=message)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()
