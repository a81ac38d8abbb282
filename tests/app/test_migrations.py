"""Alembic: upgrade head and downgrade base on Postgres and SQLite; no drift between ORM and migrations."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect

from app.db import Base
from app.migrations import downgrade, upgrade
from tests.conftest import POSTGRES_ADMIN_URL

EXPECTED_TABLES = {
    "users", "sessions", "audit_events", "studies", "series", "instances", "ai_models", "jobs",
    "predictions", "heatmaps",
}


@pytest.fixture
def postgres_engine() -> Iterator[Engine]:
    name = f"lumen_migrations_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
                           + "/" + name)
    yield engine
    engine.dispose()
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'lumen.db'}")
    yield engine
    engine.dispose()


@pytest.mark.parametrize("engine_fixture", ["postgres_engine", "sqlite_engine"])
def test_upgrade_then_downgrade_round_trip(engine_fixture: str, request: pytest.FixtureRequest) -> None:
    engine: Engine = request.getfixturevalue(engine_fixture)
    with engine.begin() as connection:
        upgrade("head", connection=connection)
    assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
    with engine.begin() as connection:
        downgrade("base", connection=connection)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    with engine.begin() as connection:
        upgrade("head", connection=connection)
    assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES


@pytest.mark.parametrize("engine_fixture", ["postgres_engine", "sqlite_engine"])
def test_migrations_match_the_orm(engine_fixture: str, request: pytest.FixtureRequest) -> None:
    engine: Engine = request.getfixturevalue(engine_fixture)
    with engine.begin() as connection:
        upgrade("head", connection=connection)
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        drift = compare_metadata(context, Base.metadata)
    assert drift == []
