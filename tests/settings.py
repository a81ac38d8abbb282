"""Switching Lumen's settings inside a test: the environment for a block, then the session's own again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def refresh_settings() -> None:
    """Read the settings again and forget what was built from the old ones (engine, S3 clients)."""
    from app.config import get_settings
    from app.db import reset_engine
    from app.storage import reset_blob_store

    get_settings.cache_clear()
    reset_blob_store()
    reset_engine()


@contextmanager
def settings_env(env: dict[str, str | None]) -> Iterator[None]:
    """Lumen's settings with these environment variables for the block (None: unset); the session's own again
    after it."""
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                if value is None:
                    patch.delenv(name, raising=False)
                else:
                    patch.setenv(name, value)
            refresh_settings()
            yield
    finally:
        refresh_settings()
