"""While `lumen serve` runs: check the database and the broker every few seconds and keep, in
`app.state.outage`, the sentence every page shows in a banner while one of them is out (None when all is well)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import background
from app.config import get_settings
from app.health import service as health_service
from app.health.schemas import Health, Readiness

logger = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 10.0
_MESSAGES = {
    "database": "Lumen cannot reach its database: pages and saving may fail until it is back.",
    "broker": "Lumen cannot reach its job queue: new studies are stored, and their AI results wait until it is back.",
}


def outage_message(readiness: Readiness) -> str | None:
    """The banner's sentence for what is down, or None."""
    down = [name for name, component in readiness.components.items() if component.status != Health.ok]
    return " ".join(_MESSAGES[name] for name in _MESSAGES if name in down) or None


async def check_once(app: FastAPI) -> None:
    readiness = await asyncio.to_thread(health_service.readiness, settings=get_settings())
    message = outage_message(readiness)
    if message != app.state.outage:
        logger.warning("outage banner: %s", message or "cleared")
    app.state.outage = message


@asynccontextmanager
async def running_in_background(app: FastAPI, *, enabled: bool) -> AsyncIterator[None]:
    app.state.outage = None
    async with background.repeating(
        lambda: check_once(app), interval=CHECK_INTERVAL_SECONDS, what="health check", enabled=enabled
    ):
        yield
