"""Audit log: who did what, to which object, from where.

Every event names the client's address (`ip`, required): a route takes it from `app.audit.dependencies.ClientIp`
and hands it to the service that records. What is recorded: sign-in and sign-out, account changes, uploads,
pages and API reads that show patient data (the worklist and study pages, the reading room, study JSON,
predictions, the first frame of each image and heatmap sent), submitted reads, reader studies opened and exports.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session

from app.db import session_scope
from app.tables import AuditEvent


def record(
    session: Session,
    *,
    action: str,
    user_id: int | None,
    object_type: str = "",
    object_id: str | int = "",
    ip: str,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event to the session (committed with the surrounding unit of work)."""
    event = AuditEvent(
        action=action,
        user_id=user_id,
        object_type=object_type,
        object_id=str(object_id),
        ip=ip,
        detail=detail or {},
    )
    session.add(event)
    return event


def record_when_read(session: Session, **fields: Any) -> None:
    """Record what a reading request showed (a study viewed, an export; the keyword arguments of `record`) once
    its unit of work has committed, in a short unit of work of its own: the request itself stays a read (on
    SQLite it never holds the write lock while it renders), and nothing is recorded for a request that failed."""

    def _record(_session: Session) -> None:
        with session_scope() as own:
            record(own, **fields)

    orm_event.listen(session, "after_commit", _record, once=True)
