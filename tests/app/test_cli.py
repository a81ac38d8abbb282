"""What `lumen serve` tells a user once it answers, on the test database."""

from __future__ import annotations

import secrets

from app import cli
from app.auth import service as auth_service
from app.config import get_settings
from app.db import session_scope
from app.tables import Role


def _user(password: str) -> str:
    email = f"welcome-{secrets.token_hex(4)}@example.org"
    with session_scope() as session:
        auth_service.create_user(session, email=email, password=password, role=Role.admin)
    return email


def test_the_sign_in_shown_is_one_that_works(monkeypatch) -> None:
    email = _user("demo-password-1")
    monkeypatch.setattr(cli, "DEMO_EMAIL", email)
    monkeypatch.setattr(cli, "DEMO_PASSWORD", "demo-password-1")
    assert cli._welcome("0.0.0.0", 8123, None) == [
        "Lumen is running at http://127.0.0.1:8123/",
        f"Sign in as {email} with the password demo-password-1",
    ]
    # Someone changed the demo password: the old one is not advertised any more.
    monkeypatch.setattr(cli, "DEMO_PASSWORD", "not-the-password")
    assert cli._welcome("127.0.0.1", 8000, None)[-1].startswith("Sign in with your account")


def test_production_never_shows_a_password(monkeypatch) -> None:
    email = _user("demo-password-2")
    monkeypatch.setattr(cli, "DEMO_EMAIL", email)
    monkeypatch.setattr(cli, "DEMO_PASSWORD", "demo-password-2")
    monkeypatch.setattr(get_settings(), "environment", "production")
    assert "demo-password-2" not in "\n".join(cli._welcome("127.0.0.1", 8000, None))
