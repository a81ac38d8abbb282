"""Admin rules and queries: installed models, user accounts (audited), the audit log."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.admin.schemas import AuditPage, AuditRow, ModelDetail, ModelOut, NewUser, UserRow
from app.audit import service as audit_service
from app.auth import service as auth_service
from app.errors import NotFound, Refused
from app.jobs import timings as jobs_timings
from app.tables import AiModel, AuditEvent, Role, User

PAGE_SIZE = 50


def list_models(session: Session) -> list[ModelOut]:
    """Every registered model, active ones first, then by name and version."""
    rows = session.scalars(select(AiModel).order_by(AiModel.is_active.desc(), AiModel.name, AiModel.version))
    return [ModelOut(**_model_fields(row), timings=jobs_timings.model_timings(session, model_id=row.id))
            for row in rows]


def get_model(session: Session, *, model_id: int) -> ModelDetail:
    """One model with its whole card, or NotFound."""
    row = session.get(AiModel, model_id)
    if row is None:
        raise NotFound(f"model {model_id} does not exist", what=f"Model {model_id}")
    return ModelDetail(**_model_fields(row), card=dict(row.card),
                       timings=jobs_timings.model_timings(session, model_id=row.id))


def _model_fields(row: AiModel) -> dict[str, Any]:
    card = row.card or {}
    metrics = dict(card.get("metrics") or {})
    return {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "task": row.task,
        "labels": list(row.labels),
        "modalities": list(row.modalities),
        "is_active": row.is_active,
        "serve_automatically": bool(card.get("serve_automatically", True)),
        "calibration_temperature": row.calibration_temperature,
        "uncertainty_threshold": row.uncertainty_threshold,
        "weights_sha256": row.weights_sha256,
        "metrics_split": str(metrics.get("split", "")),
        "metrics": metrics,
        "training_data": str(card.get("training_data", "")),
        "licence": str(card.get("licence", "")),
        "intended_use": str(card.get("intended_use", "")),
        "created_at": row.created_at,
    }


def flat_items(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested card sections as (dotted key, value) pairs, in the card's order, for a readable table."""
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            items += flat_items(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def list_users(session: Session) -> list[UserRow]:
    """Every account, oldest first."""
    return [UserRow.model_validate(user) for user in session.scalars(select(User).order_by(User.id))]


def create_user(session: Session, *, actor_id: int, new: NewUser, ip: str = "") -> User:
    """Create an account (auth_service.UserExistsError for a taken email) and audit it."""
    user = auth_service.create_user(
        session, email=new.email, password=new.password, role=new.role, full_name=new.full_name,
        specialty=new.specialty,
    )
    audit_service.record(
        session, action="user_created", user_id=actor_id, object_type="user", object_id=user.id, ip=ip,
        detail={"email": user.email, "role": user.role.value},
    )
    return user


def change_role(session: Session, *, actor_id: int, user_id: int, role: Role, ip: str = "") -> User:
    """Give an account another role and audit it; an admin may not change their own (Refused)."""
    user = _other_user(session, actor_id=actor_id, user_id=user_id, what="change your own role")
    if user.role != role:
        audit_service.record(
            session, action="user_role_changed", user_id=actor_id, object_type="user", object_id=user.id, ip=ip,
            detail={"email": user.email, "from": user.role.value, "to": role.value},
        )
        user.role = role
    return user


def set_active(session: Session, *, actor_id: int, user_id: int, active: bool, ip: str = "") -> User:
    """Deactivate (no sign-in, tokens refused) or reactivate an account and audit it; never one's own."""
    user = _other_user(session, actor_id=actor_id, user_id=user_id, what="deactivate your own account")
    if user.is_active != active:
        audit_service.record(
            session, action="user_reactivated" if active else "user_deactivated", user_id=actor_id,
            object_type="user", object_id=user.id, ip=ip, detail={"email": user.email},
        )
        user.is_active = active
    return user


def _other_user(session: Session, *, actor_id: int, user_id: int, what: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist", what=f"User {user_id}")
    if user.id == actor_id:
        # Otherwise the last admin could lock everyone out of these pages.
        raise Refused(f"You cannot {what}: ask another admin to do it.")
    return user


def audit_page(session: Session, *, action: str = "", email: str = "", page: int = 1) -> AuditPage:
    """Audit events newest first, PAGE_SIZE a page, filtered by action and by (part of) the user's email.

    Events without a signed-in user (failed sign-ins) match on the email that was tried.
    """
    action, email = action.strip(), email.strip().lower()
    query = select(AuditEvent, User.email).outerjoin(User, User.id == AuditEvent.user_id)
    if action:
        query = query.where(AuditEvent.action == action)
    if email:
        pattern = "%" + email.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        tried = AuditEvent.detail["email"].as_string()
        query = query.where(
            or_(User.email.ilike(pattern, escape="\\"),
                and_(AuditEvent.user_id.is_(None), tried.ilike(pattern, escape="\\")))
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(max(1, page), pages)
    rows = session.execute(
        query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
    ).all()
    actions = list(session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))
    return AuditPage(
        rows=[_audit_row(event, user_email) for event, user_email in rows],
        page=page, pages=pages, total=total, action=action, email=email, actions=actions,
    )


def _audit_row(event: AuditEvent, user_email: str | None) -> AuditRow:
    return AuditRow(
        id=event.id, at=event.at, action=event.action, user_email=user_email, object_type=event.object_type,
        object_id=event.object_id, detail=dict(event.detail or {}), ip=event.ip,
    )
