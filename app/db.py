"""Engine, the request session dependency (commit or roll back) and session_scope() for workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.config import get_settings


class Base(DeclarativeBase):
    """Declarative base of every Lumen table."""


# Execution option of the engine a writing unit of work uses: on SQLite it begins with BEGIN IMMEDIATE.
_WRITES = "lumen_writes"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# How long a SQLite writer waits for the lock before the request is answered 503 (writes take milliseconds).
_SQLITE_LOCK_WAIT_MS = 15_000


def _on_sqlite_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # The driver's own BEGIN handling is off: _on_sqlite_begin says BEGIN, so it can say which kind.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL: readers never wait for the writer, nor the writer for readers; one writer at a time.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_LOCK_WAIT_MS}")
    cursor.close()


def _on_sqlite_begin(connection) -> None:  # type: ignore[no-untyped-def]
    # A unit of work that will write takes the write lock when it begins and waits its turn (busy_timeout). A
    # deferred transaction that reads first and writes later fails at once ("database is locked", no wait)
    # when another writer committed in between, which concurrent readers' posts did.
    writes = connection.get_execution_options().get(_WRITES, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")



@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": _SQLITE_LOCK_WAIT_MS / 1000}
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args={"connect_timeout": settings.db_connect_timeout_seconds},
    )


@lru_cache
def _session_factory(writes: bool) -> sessionmaker[Session]:
    engine = get_engine()
    return sessionmaker(bind=engine.execution_options(**{_WRITES: True}) if writes else engine, expire_on_commit=False)


def reset_engine() -> None:
    """Forget the cached engine (tests switch databases between sessions)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    _session_factory.cache_clear()


@contextmanager
def session_scope(*, writes: bool = True) -> Iterator[Session]:
    """A unit of work for workers and the CLI: commit on success, roll back on error. `writes=False` for one
    that only reads (on SQLite it then does not take the write lock)."""
    session = _session_factory(writes)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_session(request: Request) -> Iterator[Session]:
    """Request-scoped session; the request boundary commits. GET requests read; other methods write."""
    with session_scope(writes=request.method not in _SAFE_METHODS) as session:
        yield session


# scope="function": the session commits (and queued tasks are sent) before the response goes out, so a
# client that follows a redirect or polls a job id at once always finds the committed rows.
DbSession = Annotated[Session, Depends(get_session, scope="function")]
