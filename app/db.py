"""Engine, the request session dependency (commit or roll back) and session_scope() for workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app import sqlite
from app.config import get_settings


class Base(DeclarativeBase):
    """Declarative base of every Lumen table."""


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    url = settings.sqlalchemy_url
    pool = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_seconds,
    }
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, "timeout": sqlite.LOCK_WAIT_SECONDS}
        engine = create_engine(url, connect_args=connect_args, **pool)
        sqlite.configure(engine)
        return engine
    connect_args = {"connect_timeout": settings.db_connect_timeout_seconds}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **pool)


@lru_cache
def _session_factory(writes: bool) -> sessionmaker[Session]:
    engine = get_engine()
    # The option matters to SQLite only (app/sqlite.py); on Postgres both engines are the same.
    bind = engine.execution_options(**{sqlite.WRITES_OPTION: True}) if writes else engine
    return sessionmaker(bind=bind, expire_on_commit=False)


def reset_engine() -> None:
    """Forget the cached engine (tests switch databases between sessions)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    _session_factory.cache_clear()


class UndeclaredWrite(RuntimeError):
    """A unit of work opened to read tried to write: its GET route must declare `dependencies=[WRITES]`."""


def _refuse_writes(session: Session, _context: object, _instances: object) -> None:
    if session.new or session.deleted or any(session.is_modified(row) for row in session.dirty):
        raise UndeclaredWrite("this request's unit of work reads only; a GET route that writes declares WRITES")


@contextmanager
def session_scope(*, writes: bool = True) -> Iterator[Session]:
    """A unit of work for workers and the CLI: commit on success, roll back on error. `writes=False` for one
    that only reads (on SQLite it then does not take the write lock)."""
    session = _session_factory(writes)()
    if not writes:
        event.listen(session, "before_flush", _refuse_writes)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_session(request: Request) -> Iterator[Session]:
    """Request-scoped session; the request boundary commits. GET requests read, unless their route declares
    WRITES; other methods write."""
    writes = request.method not in _SAFE_METHODS or getattr(request.state, "writes", False)
    with session_scope(writes=writes) as session:
        yield session


def _declare_writes(request: Request) -> None:
    request.state.writes = True


# A GET route that writes (the audit record of a study viewed, of an export) says so with
# `dependencies=[WRITES]`: route dependencies are solved first, so its unit of work begins as a writing one (on
# SQLite, with the write lock; a read that turns into a write fails when another writer committed meanwhile).
WRITES = Depends(_declare_writes)


# scope="function": the session commits (and queued tasks are sent) before the response goes out, so a
# client that follows a redirect or polls a job id at once always finds the committed rows.
DbSession = Annotated[Session, Depends(get_session, scope="function")]
