"""The sweeper: every few seconds, take back the jobs of workers that stopped beating and re-send the jobs that
the broker lost (app.jobs.service.resend_stale; docs/faults.md). Runs inside `lumen serve`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from app.config import get_settings
from app.db import session_scope
from app.jobs import service as jobs_service

logger = logging.getLogger(__name__)


def sweep_once() -> jobs_service.Sweep:
    """One pass of the sweeper in its own unit of work; what it did. Its messages go once the pass commits."""
    with session_scope() as session:
        return jobs_service.resend_stale(session)


async def _loop(interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(sweep_once)
        except Exception:
            logger.exception("sweeper pass failed; trying again in %s s", interval)


@asynccontextmanager
async def running_in_background(*, enabled: bool) -> AsyncIterator[None]:
    if not enabled:
        yield
        return
    task = asyncio.create_task(_loop(get_settings().sweep_interval_seconds))
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
