"""Readiness: can this process reach the database and the broker. Every check is bounded by a timeout."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from app import queue
from app.config import Settings
from app.health.schemas import ComponentHealth, Health, Readiness

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0


def readiness(*, settings: Settings, timeout: float = CHECK_TIMEOUT_SECONDS) -> Readiness:
    """Check the database and the broker side by side; answers within about `timeout` s whatever they do."""
    checks: dict[str, Callable[[], None]] = {
        "database": lambda: check_database(url=settings.sqlalchemy_url, timeout=timeout),
        "broker": lambda: queue.check_broker(settings, timeout=timeout),
    }
    started = time.monotonic()
    # Not a `with` block: leaving it would wait for a check that hangs past its own timeout.
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readyz")
    futures = {name: pool.submit(check) for name, check in checks.items()}
    components = {name: _wait(name, future, started=started, timeout=timeout) for name, future in futures.items()}
    pool.shutdown(wait=False, cancel_futures=True)
    status = Health.ok if all(c.status == Health.ok for c in components.values()) else Health.down
    return Readiness(status=status, components=components)


def _wait(name: str, future: Future[None], *, started: float, timeout: float) -> ComponentHealth:
    error = None
    try:
        future.result(timeout=max(0.0, started + timeout - time.monotonic()))
    except FutureTimeout:
        error = f"no answer within {timeout:g} s"
    except Exception as exc:
        logger.warning("readiness: %s is down: %s", name, exc)
        error = type(exc).__name__
    seconds = round(time.monotonic() - started, 3)
    if error is not None:
        return ComponentHealth(status=Health.down, seconds=seconds, error=error)
    return ComponentHealth(status=Health.ok, seconds=seconds)


def check_database(*, url: str, timeout: float) -> None:
    """`SELECT 1` on a connection of its own; raises if the database does not answer."""
    if url.startswith("sqlite"):
        connect_args: dict[str, object] = {"timeout": timeout}
    else:
        # libpq counts whole seconds (2 at the least); the statement gets the same bound.
        connect_args = {
            "connect_timeout": max(2, round(timeout)),
            "options": f"-c statement_timeout={int(timeout * 1000)}",
        }
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()
