"""The sweeper: every few seconds, take back the jobs of workers that stopped beating and re-send the jobs that
the broker lost (app.jobs.service.resend_stale; docs/faults.md). Runs inside `lumen serve`."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager

from sqlalchemy import text

from app import background
from app.config import get_settings
from app.db import session_scope
from app.jobs import service as jobs_service

logger = logging.getLogger(__name__)


# Several API processes (uvicorn workers, replicas behind a proxy) each run a sweeper: on Postgres one pass at a
# time holds this advisory lock, so two passes never inspect the broker and re-send the same lost job together.
_SWEEPER_LOCK = 0x4C756D656E  # "Lumen"


def sweep_once() -> jobs_service.Sweep:
    """One pass of the sweeper in its own unit of work; what it did. Its messages go once the pass commits.
    A pass that finds another process's pass running does nothing."""
    with session_scope() as session:
        if session.get_bind().dialect.name == "postgresql" and not session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _SWEEPER_LOCK}
        ):
            logger.debug("another process is sweeping; this pass is skipped")
            return jobs_service.Sweep(resent=[], requeued=[], failed=[])
        return jobs_service.resend_stale(session)


def running_in_background(*, enabled: bool) -> AbstractAsyncContextManager[None]:
    interval = get_settings().sweep_interval_seconds
    return background.repeating(
        lambda: asyncio.to_thread(sweep_once), interval=interval, what="sweeper pass", enabled=enabled,
        first_wait=interval,
    )
