"""What the database keeps of a session or bearer token: HMAC-SHA256 under LUMEN_SECRET_KEY, never the token or
its plain sha256; another key ends every session."""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import select

from app.auth import service as auth_service
from app.config import get_settings
from app.tables import AuthSession
from tests.app.auth.helpers import PASSWORD


def test_the_row_holds_the_tokens_hmac_under_the_secret_key(app_client, make_user, db_session) -> None:
    user, _ = make_user("reader")
    token = app_client.post("/api/auth/token", data={"username": user.email, "password": PASSWORD}).json()
    clear = token["access_token"]
    rows = db_session.scalars(select(AuthSession).where(AuthSession.user_id == user.id)).all()
    expected = hmac.new(get_settings().secret_key.encode(), clear.encode(), hashlib.sha256).hexdigest()
    assert expected in {row.token_hmac for row in rows}
    stored = {value for row in rows for value in (row.token_hmac, row.csrf_token)}
    assert clear not in stored and hashlib.sha256(clear.encode()).hexdigest() not in stored


def test_a_new_secret_key_ends_every_session(app_client, make_user, monkeypatch) -> None:
    _, token = make_user("coordinator")
    headers = {"Authorization": f"Bearer {token}"}
    assert app_client.get("/api/auth/me", headers=headers).status_code == 200
    monkeypatch.setattr(get_settings(), "secret_key", "another-secret-key-of-more-than-32-characters")
    assert app_client.get("/api/auth/me", headers=headers).status_code == 401


def test_a_database_copy_alone_cannot_replay_a_session(make_user, db_session) -> None:
    """Someone who read the sessions table has digests; sending a digest as a token resolves to nothing."""
    user, token = make_user("admin")
    row = db_session.scalar(select(AuthSession).where(AuthSession.user_id == user.id))
    assert auth_service.resolve_token(db_session, token=token, kind="bearer") is not None
    assert auth_service.resolve_token(db_session, token=row.token_hmac, kind="bearer") is None
