"""Work `lumen serve` repeats in the background (the sweeper, the outage monitor): one step every so many
seconds, a failed step logged and tried again at the next, the loop stopped with the server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

logger = logging.getLogger(__name__)


async def _repeat(step: Callable[[], Awaitable[object]], *, interval: float, what: str, first_wait: float) -> None:
    await asyncio.sleep(first_wait)
    while True:
        try:
            await step()
        except Exception:
            logger.exception("%s failed; trying again in %s s", what, interval)
        await asyncio.sleep(interval)


@asynccontextmanager
async def repeating(
    step: Callable[[], Awaitable[object]], *, interval: float, what: str, enabled: bool, first_wait: float = 0.0
) -> AsyncIterator[None]:
    """Run `step` every `interval` seconds (after `first_wait`) while the block runs, if `enabled`."""
    if not enabled:
        yield
        return
    task = asyncio.create_task(_repeat(step, interval=interval, what=what, first_wait=first_wait))
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
