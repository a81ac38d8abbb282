"""Audit log: who did what, to which object, from where."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.tables import AuditEvent


def record(
    session: Session,
    *,
    action: str,
    user_id: int | None,
    object_type: str = "",
    object_id: str | int = "",
    ip: str = "",
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
