"""The embedded demo: models registered, a demo user, and the demo studies imported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

from app.ai_models import sync as models_sync
from app.auth import service as auth_service
from app.db import session_scope
from app.ingest import service as ingest_service
from app.tables import JobPriority, Role, User


def login_works(*, email: str, password: str) -> bool:
    """True if this user exists and signs in with this password (the demo login was not changed)."""
    with session_scope() as session:
        try:
            auth_service.authenticate(session, email=email, password=password)
        except auth_service.AuthError:
            return False
        session.rollback()  # authenticate may rehash the password: nothing of this check is kept
    return True


def load(*, demo_dir: Path, email: str, password: str) -> Iterator[str]:
    """Idempotent: running it twice adds nothing new (duplicates are recognised by UID + sha256). The demo's
    jobs run at the lowest priority: a newcomer's first upload does not wait for them."""
    yield f"models registered: {models_sync.sync_now()}"
    with session_scope() as session:
        if session.scalar(select(User).where(User.email == email)) is None:
            auth_service.create_user(session, email=email, password=password, role=Role.admin, full_name="Demo")
            yield f"demo user {email} created"
    for path in sorted(demo_dir.glob("*")):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in {".dcm", ".jpg", ".png"}:
            yield f"{path.name}: {ingest_service.import_path(path, priority=JobPriority.demo)}"
