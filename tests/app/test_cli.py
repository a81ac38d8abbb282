"""What `lumen serve` tells a user once it answers, on the test database."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import select

from app import cli
from app.auth import passwords
from app.auth import service as auth_service
from app.config import get_settings
from app.db import session_scope
from app.tables import Role, User


def _user(password: str) -> str:
    email = f"welcome-{secrets.token_hex(4)}@example.org"
    with session_scope() as session:
        auth_service.create_user(session, email=email, password=password, role=Role.admin)
    return email


def test_the_sign_in_shown_is_one_that_works(monkeypatch) -> None:
    email = _user("demo-password-1")
    monkeypatch.setattr(get_settings(), "environment", "development")
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


def test_only_development_shows_the_demo_login(monkeypatch) -> None:
    email = _user("demo-password-3")
    monkeypatch.setattr(cli, "DEMO_EMAIL", email)
    monkeypatch.setattr(cli, "DEMO_PASSWORD", "demo-password-3")
    for environment in ("test", "staging", "production"):
        monkeypatch.setattr(get_settings(), "environment", environment)
        assert "demo-password-3" not in "\n".join(cli._welcome("127.0.0.1", 8000, None)), environment


def test_load_demo_is_refused_in_production(monkeypatch, capsys) -> None:
    monkeypatch.setattr(get_settings(), "environment", "production")
    monkeypatch.setattr(cli, "DEMO_EMAIL", f"demo-{secrets.token_hex(4)}@example.org")
    assert cli.main(["load-demo"]) == 2
    assert "refused with LUMEN_ENV=production" in capsys.readouterr().err
    with session_scope() as session:
        assert session.scalar(select(User).where(User.email == cli.DEMO_EMAIL)) is None


def test_the_demo_password_passes_the_policy() -> None:
    passwords.check_password(cli.DEMO_PASSWORD, email=cli.DEMO_EMAIL)
    passwords.check_password(cli.DEMO_PASSWORD, email="reader1@lumen.local")  # the demo readers share it


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("password", "at least 12 characters"),
        ("12345678", "at least 12 characters"),
        ("123456789012", "too easy to guess"),
        ("password1234", "too easy to guess"),
    ],
)
def test_create_user_refuses_a_weak_password(monkeypatch, capsys, password, reason) -> None:
    email = f"weak-{secrets.token_hex(4)}@example.org"
    monkeypatch.setenv("LUMEN_PASSWORD", password)
    assert cli.main(["create-user", email, "--role", "admin"]) == 2
    assert reason in capsys.readouterr().err
    with session_scope() as session:
        assert session.scalar(select(User).where(User.email == email)) is None


def test_create_user_takes_a_strong_password(monkeypatch, capsys) -> None:
    email = f"strong-{secrets.token_hex(4)}@example.org"
    monkeypatch.setenv("LUMEN_PASSWORD", "maple orbit tundra fiddle")
    assert cli.main(["create-user", email, "--role", "reader"]) == 0
    assert f"created reader {email}" in capsys.readouterr().out
