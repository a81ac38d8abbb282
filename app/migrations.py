"""Run Alembic from code: `lumen migrate`, the embedded start-up and the tests use this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

_ROOT = Path(__file__).resolve().parent.parent


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config; with a connection, migrations run on it instead of the settings' database."""
    config = Config(str(_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(_ROOT / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(revision: str = "head", *, connection: Connection | None = None) -> None:
    command.upgrade(alembic_config(connection), revision)


def downgrade(revision: str = "base", *, connection: Connection | None = None) -> None:
    command.downgrade(alembic_config(connection), revision)
