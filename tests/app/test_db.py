"""Units of work: one that reads never writes; on SQLite one that writes takes the lock when it begins."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from app.db import UndeclaredWrite, get_engine, session_scope
from app.migrations import upgrade
from app.tables import AuditEvent
from tests.settings import settings_env


def _event(action: str) -> AuditEvent:
    return AuditEvent(action=action, object_type="test", detail={})


def test_a_reading_unit_of_work_refuses_to_write() -> None:
    with pytest.raises(UndeclaredWrite), session_scope(writes=False) as session:
        session.add(_event("not-declared"))
        session.flush()
    with session_scope(writes=False) as session:
        assert session.scalar(select(func.count()).where(AuditEvent.action == "not-declared")) == 0


def test_on_sqlite_a_writer_waits_its_turn_where_a_read_turned_write_would_fail(tmp_path) -> None:
    with settings_env({"DATABASE_URL": None, "LUMEN_DATA_DIR": str(tmp_path)}):
        upgrade("head")
        with session_scope() as session:
            session.add(_event("first"))
        committed = threading.Event()

        def other_writer() -> None:
            with session_scope() as other:
                other.add(_event("other"))
            committed.set()

        # A read that turns into a write after another writer committed: SQLite refuses it at once.
        with get_engine().connect() as connection:  # no writes option: BEGIN (deferred), as a GET's session
            connection.execute(select(func.count()).select_from(AuditEvent))
            threading.Thread(target=other_writer).start()
            assert committed.wait(10)
            with pytest.raises(OperationalError, match="database is locked"):
                connection.execute(insert(AuditEvent).values(action="late", object_type="test", detail={}))
        # A writing unit of work holds the lock from its start: the other writer waits, then gets its turn.
        done = threading.Event()
        with session_scope() as session:
            session.scalar(select(func.count()).select_from(AuditEvent))
            thread = threading.Thread(target=lambda: (other_writer(), done.set()))
            thread.start()
            assert not done.wait(0.5)  # waiting for the lock, not failing
            session.add(_event("mine"))
        thread.join(10)
        assert done.is_set()
        with session_scope(writes=False) as session:
            actions = sorted(session.scalars(select(AuditEvent.action)))
        assert actions == ["first", "mine", "other", "other"]
