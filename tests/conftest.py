"""Test session on the real components: a fresh Postgres database with migrations applied, Redis.

Each pytest session creates its own database (dropped at the end), data folder and broker namespace (a
key prefix in Redis, deleted at the end), and points Lumen's settings at them before anything reads the
settings: two suites on one Postgres and one Redis never see each other's rows or messages.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
import redis

if TYPE_CHECKING:
    from tests.s3 import S3Server

POSTGRES_ADMIN_URL = os.environ.get("LUMEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("LUMEN_TEST_REDIS", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEST_OUTPUT = ROOT / "test-output"

_DB_NAME = f"lumen_test_{os.getpid()}_{secrets.token_hex(3)}"
BROKER_NAMESPACE = f"{_DB_NAME}:"
_DATA_DIR = Path(tempfile.mkdtemp(prefix="lumen-test-"))


def _postgres_url(database: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


def _configure_environment() -> None:
    os.environ["DATABASE_URL"] = _postgres_url(_DB_NAME)
    os.environ["BROKER_URL"] = REDIS_TEST_URL
    os.environ["LUMEN_BROKER_NAMESPACE"] = BROKER_NAMESPACE
    os.environ["LUMEN_DATA_DIR"] = str(_DATA_DIR)
    os.environ.pop("LUMEN_MODELS_DIR", None)
    # Blobs in the session's data folder; tests that want S3 say so (tests/s3.py).
    for name in [name for name in os.environ if name.startswith("LUMEN_S3_")]:
        del os.environ[name]
    os.environ["LUMEN_ENV"] = "test"
    # A worker's first load of a model times its batch sizes (seconds a model); the tests of that turn it on.
    os.environ["LUMEN_BATCH_CALIBRATION"] = "off"


_configure_environment()


def broker_redis() -> redis.Redis:
    """The Redis that carries this session's broker keys (see `queue_key`)."""
    return redis.Redis.from_url(REDIS_TEST_URL)


def queue_key(queue: str) -> str:
    """The Redis list that holds this session's messages for a Celery queue."""
    return BROKER_NAMESPACE + queue


def delete_broker_keys() -> int:
    """Delete this session's broker keys (and only those); returns how many there were."""
    client = broker_redis()
    keys = list(client.scan_iter(match=BROKER_NAMESPACE + "*", count=1000))
    return client.delete(*keys) if keys else 0


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """A fresh Postgres database with every migration applied; dropped after the session."""
    from app.config import get_settings
    from app.db import reset_engine
    from app.migrations import upgrade

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{_DB_NAME}"')
    get_settings.cache_clear()
    reset_engine()
    upgrade("head")
    yield os.environ["DATABASE_URL"]
    reset_engine()
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_DB_NAME}" WITH (FORCE)')
    delete_broker_keys()
    shutil.rmtree(_DATA_DIR, ignore_errors=True)


@pytest.fixture
def db_session():
    """A session for arranging and checking rows; commits on exit like a worker's unit of work."""
    from app.db import session_scope

    with session_scope() as session:
        yield session


@pytest.fixture(scope="session")
def app_client():
    """The real app (sweeper off) behind Starlette's TestClient."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(run_sweeper=False)) as client:
        yield client


@pytest.fixture(scope="session")
def make_user() -> Callable[..., tuple[object, str]]:
    """Create a user of a role; returns (user, bearer token)."""
    from app.auth import service as auth_service
    from app.db import session_scope
    from app.tables import Role

    def _make(role: str = "admin", password: str = "correct horse battery") -> tuple[object, str]:
        email = f"{role}-{secrets.token_hex(4)}@example.org"
        with session_scope() as session:
            user = auth_service.create_user(session, email=email, password=password, role=Role(role))
            token, _ = auth_service.issue_token(session, user=user, kind="bearer", hours=1)
            session.expunge(user)
        return user, token

    return _make


@pytest.fixture(scope="session")
def auth_headers(make_user) -> Callable[[str], dict[str, str]]:
    """Bearer headers for a fresh user of the given role."""

    def _headers(role: str = "admin") -> dict[str, str]:
        _, token = make_user(role)
        return {"Authorization": f"Bearer {token}"}

    return _headers


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (`rclone serve s3`) on loopback over a temporary folder (tests/s3.py)."""
    from tests.s3 import start_rclone_s3

    server = start_rclone_s3(tmp_path_factory.mktemp("s3") / "root")
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def test_output() -> Path:
    """Folder for artefacts a person may want to look at (screenshots)."""
    TEST_OUTPUT.mkdir(exist_ok=True)
    return TEST_OUTPUT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A failing test's report carries the log tail of each process tests started that ran meanwhile."""
    from tests import processes

    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for started in processes.running_since(call.start):
            report.sections.append((f"log of {started.name} (pid {started.pid}, {started.log_path})", started.tail()))
