"""Bearer tokens: POST /api/auth/token, /api/auth/me, /api/auth/logout, audit rows."""

from __future__ import annotations

from sqlalchemy import select

from app.tables import AuditEvent, User
from tests.app.auth.helpers import PASSWORD


def test_token_for_right_credentials_works_as_bearer(app_client, make_user):
    user, _ = make_user("reader")
    response = app_client.post("/api/auth/token", data={"username": user.email, "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["access_token"] and body["expires_at"]
    me = app_client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json() == {"id": user.id, "email": user.email, "full_name": "", "role": "reader", "specialty": ""}


def test_wrong_password_is_401_with_reason_and_audited(app_client, make_user, db_session):
    user, _ = make_user("reader")
    response = app_client.post("/api/auth/token", data={"username": user.email, "password": "not the password"})
    assert response.status_code == 401
    assert response.json() == {"detail": "wrong email or password"}
    assert response.headers["www-authenticate"] == "Bearer"
    failed = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "login_failed")).all()
    assert any(event.detail.get("email") == user.email and event.user_id is None for event in failed)


def test_login_is_audited(app_client, make_user, db_session):
    user, _ = make_user("coordinator")
    assert app_client.post("/api/auth/token", data={"username": user.email, "password": PASSWORD}).status_code == 200
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "login", AuditEvent.user_id == user.id))
    assert event is not None
    assert event.detail == {"via": "token"}
    assert event.ip


def test_inactive_user_gets_no_token(app_client, make_user, db_session):
    user, token = make_user("reader")
    db_session.get(User, user.id).is_active = False
    db_session.commit()
    response = app_client.post("/api/auth/token", data={"username": user.email, "password": PASSWORD})
    assert response.status_code == 401
    # Tokens issued before the account was switched off stop working too.
    assert app_client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_missing_form_fields_are_422(app_client):
    assert app_client.post("/api/auth/token", data={"username": "someone@example.org"}).status_code == 422


def test_garbage_or_missing_bearer_is_401(app_client):
    assert app_client.get("/api/auth/me", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert app_client.get("/api/auth/me").status_code == 401


def test_logout_revokes_the_bearer_token(app_client, make_user, db_session):
    _, token = make_user("reader")
    headers = {"Authorization": f"Bearer {token}"}
    assert app_client.post("/api/auth/logout", headers=headers).status_code == 204
    assert app_client.get("/api/auth/me", headers=headers).status_code == 401
    assert app_client.post("/api/auth/logout", headers=headers).status_code == 401


def test_reader_may_not_upload(app_client, auth_headers):
    files = {"files": ("x.png", b"not really a png", "image/png")}
    response = app_client.post("/api/studies", files=files, headers=auth_headers("reader"))
    assert response.status_code == 403
    assert "reader" in response.json()["detail"]


def test_a_nul_in_the_email_or_password_is_a_422_not_a_500(app_client, make_user):
    user, _ = make_user("reader")
    for username, password in ((f"{user.email}\x00", PASSWORD), (user.email, f"{PASSWORD}\x00")):
        response = app_client.post("/api/auth/token", data={"username": username, "password": password})
        assert response.status_code == 422 and "NUL" in response.json()["detail"]
    page = app_client.get("/login")
    csrf = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    form = app_client.post("/login", data={"email": "a\x00@b.org", "password": "x", "csrf_token": csrf},
                           follow_redirects=False)
    assert form.status_code == 422 and "NUL" in form.text
    # The account was not counted as a failure: the right password still works at once.
    assert app_client.post("/api/auth/token", data={"username": user.email, "password": PASSWORD}).status_code == 200
