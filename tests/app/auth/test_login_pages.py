"""Browser sign-in: login form with its own CSRF, the session cookie, CSRF on unsafe cookie calls, sign-out."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.auth.pages import LOGIN_CSRF_COOKIE, local_path
from app.config import get_settings
from app.tables import AuditEvent
from tests.app.auth.helpers import PASSWORD, form_csrf, meta_csrf, sign_in


def _set_cookie(response, name: str) -> str:
    headers = [value for value in response.headers.get_list("set-cookie") if value.startswith(f"{name}=")]
    assert headers, f"no Set-Cookie for {name}"
    return headers[0].lower()


def test_login_page_sets_a_short_csrf_cookie_matching_the_form(client):
    response = client.get("/login")
    assert response.status_code == 200
    cookie = _set_cookie(response, LOGIN_CSRF_COOKIE)
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/login" in cookie and "max-age=900" in cookie
    assert client.cookies[LOGIN_CSRF_COOKIE] == form_csrf(response.text)


def test_login_sets_an_httponly_samesite_session_cookie_and_redirects(client, make_user, db_session):
    user, _ = make_user("reader")
    csrf = form_csrf(client.get("/login").text)
    response = client.post(
        "/login",
        data={"email": user.email, "password": PASSWORD, "csrf_token": csrf, "next": "/studies/1?x=1"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/studies/1?x=1"
    cookie = _set_cookie(response, "lumen_session")
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie
    assert client.get("/api/auth/me").json()["email"] == user.email
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "login", AuditEvent.user_id == user.id))
    assert event is not None and event.detail == {"via": "form"}


def test_cookies_are_secure_when_configured(app_client, make_user, monkeypatch):
    monkeypatch.setattr(get_settings(), "secure_cookies", True)
    user, _ = make_user("reader")
    # Secure cookies come back only over HTTPS.
    with TestClient(app_client.app, base_url="https://testserver") as client:
        page = client.get("/login")
        assert "secure" in _set_cookie(page, LOGIN_CSRF_COOKIE).split("; ")
        response = client.post(
            "/login",
            data={"email": user.email, "password": PASSWORD, "csrf_token": form_csrf(page.text)},
            follow_redirects=False,
        )
    assert "secure" in _set_cookie(response, "lumen_session").split("; ")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/studies/3", "/studies/3"),
        ("/?page=2", "/?page=2"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ],
)
def test_next_must_be_a_local_path(target, expected):
    assert local_path(target) == expected


def test_login_without_csrf_is_403_and_with_wrong_csrf_is_400(client, make_user):
    user, _ = make_user("reader")
    credentials = {"email": user.email, "password": PASSWORD}
    assert client.post("/login", data=credentials, follow_redirects=False).status_code == 403  # no cookie, no field
    client.get("/login")
    assert client.post("/login", data=credentials, follow_redirects=False).status_code == 403  # cookie, no field
    wrong = client.post("/login", data={**credentials, "csrf_token": "forged"}, follow_redirects=False)
    assert wrong.status_code == 400
    assert "lumen_session" not in client.cookies


def test_wrong_password_rerenders_the_form_with_401(client, make_user, db_session):
    user, _ = make_user("reader")
    csrf = form_csrf(client.get("/login").text)
    response = client.post("/login", data={"email": user.email, "password": "nope nope", "csrf_token": csrf})
    assert response.status_code == 401
    assert "Wrong email or password." in response.text
    assert user.email in response.text  # the email is kept in the form
    assert "lumen_session" not in client.cookies
    failed = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "login_failed")).all()
    assert any(event.detail.get("email") == user.email for event in failed)


def test_cookie_caller_needs_the_csrf_header_on_unsafe_methods(client, make_user):
    user, _ = make_user("reader")
    csrf = sign_in(client, user.email)
    assert client.post("/api/auth/logout").status_code == 403
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.get("/api/auth/me").status_code == 200  # safe methods need no token
    response = client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 204
    assert client.get("/api/auth/me").status_code == 401


def test_logout_form_revokes_the_session(client, make_user, db_session):
    user, _ = make_user("coordinator")
    sign_in(client, user.email)
    page = client.get("/")
    stolen_cookie = client.cookies["lumen_session"]
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403
    response = client.post("/logout", data={"csrf_token": form_csrf(page.text)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    # The token itself is dead on the server, not just forgotten by this browser.
    client.cookies.set("lumen_session", stolen_cookie)
    assert client.get("/api/auth/me").status_code == 401
    assert client.get("/", follow_redirects=False).status_code == 303
    assert db_session.scalar(select(AuditEvent).where(AuditEvent.action == "logout", AuditEvent.user_id == user.id))


def test_signed_in_visitor_skips_the_login_form(client, make_user):
    user, _ = make_user("reader")
    sign_in(client, user.email)
    response = client.get("/login?next=/studies/7", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/studies/7"


def test_only_coordinators_and_admins_see_the_upload_form(client, make_user):
    for role, shown in (("reader", False), ("coordinator", True), ("admin", True)):
        client.cookies.clear()
        user, _ = make_user(role)
        sign_in(client, user.email)
        page = client.get("/")
        assert ('id="upload-form"' in page.text) is shown, role
        assert meta_csrf(page.text)
