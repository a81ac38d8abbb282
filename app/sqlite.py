"""SQLite for the embedded default: WAL, and write transactions taken in turn.

SQLite has one writer at a time. A unit of work that will write says so (the `WRITES_OPTION` execution option
of the engine it is bound to) and begins with BEGIN IMMEDIATE: it takes the write lock at its start. A deferred
transaction that reads first and writes later fails at once ("database is locked", no waiting) when another
writer committed in between, which is what concurrent readers' posts ran into. Within one process, writers
queue on a lock of their own, which wakes the next one as soon as the lock is free; SQLite's busy handler,
which the other processes (the worker) wait on, polls with sleeps of up to 100 ms and made the tail long.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

WRITES_OPTION = "lumen_writes"
# How long a writer waits for its turn before the request is answered 503 (a write takes milliseconds).
LOCK_WAIT_SECONDS = 15.0
_HOLDS_TURN = "lumen_holds_write_turn"


class _WriteTurns:
    """This process's writers, one at a time; released when the connection goes back to the pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def take(self, connection_info: dict[str, Any]) -> None:
        if connection_info.get(_HOLDS_TURN):  # a second transaction on a connection that holds the turn
            return
        if not self._lock.acquire(timeout=LOCK_WAIT_SECONDS):
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked: no write turn in time"))
        connection_info[_HOLDS_TURN] = True

    def give_back(self, connection_info: dict[str, Any]) -> None:
        if connection_info.pop(_HOLDS_TURN, False):
            self._lock.release()


def configure(engine: Engine) -> None:
    """Install WAL, the busy timeout, foreign keys and the write turns on a SQLite engine."""
    turns = _WriteTurns()

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own BEGIN handling is off: _begin says BEGIN, so that it can say which kind.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL: readers never wait for the writer, nor the writer for readers.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT_SECONDS * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if connection.get_execution_options().get(WRITES_OPTION, False):
            turns.take(connection.info)
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    def _give_back(_dbapi_connection: Any, record: Any, *_more: Any) -> None:
        turns.give_back(record.info)

    # Back in the pool after commit or rollback, or thrown away after an error: the turn goes on.
    for moment in ("checkin", "invalidate", "close"):
        event.listen(engine, moment, _give_back)
