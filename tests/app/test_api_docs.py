"""/docs and /openapi.json: open in development, signed-in admins only in production (app/api_docs.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import get_settings
from tests.app.auth.helpers import sign_in


@pytest.fixture
def production(monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "environment", "production")


@pytest.fixture
def fresh(app_client: TestClient) -> Iterator[TestClient]:
    with TestClient(app_client.app) as client:
        yield client


def test_open_outside_production(fresh) -> None:
    assert fresh.get("/docs").status_code == 200
    assert "/api/studies" in fresh.get("/openapi.json").json()["paths"]


def test_production_sends_an_anonymous_visitor_to_sign_in(production, fresh) -> None:
    page = fresh.get("/docs", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/docs"
    schema = fresh.get("/openapi.json")
    assert schema.status_code == 401 and "paths" not in schema.text


@pytest.mark.parametrize("role", ["reader", "coordinator"])
def test_production_refuses_everyone_but_admins(production, fresh, make_user, auth_headers, role) -> None:
    user, _ = make_user(role)
    sign_in(fresh, user.email)
    page = fresh.get("/docs")
    assert page.status_code == 403 and "swagger-ui" not in page.text
    assert fresh.get("/openapi.json").status_code == 403
    assert fresh.get("/openapi.json", headers=auth_headers(role)).status_code == 403


def test_production_shows_them_to_a_signed_in_admin(production, fresh, make_user, auth_headers) -> None:
    user, _ = make_user("admin")
    sign_in(fresh, user.email)
    page = fresh.get("/docs")
    assert page.status_code == 200 and 'id="swagger-ui"' in page.text
    assert "/api/auth/token" in fresh.get("/openapi.json").json()["paths"]
    with TestClient(fresh.app) as script:  # a bearer token of an admin works as well as the cookie
        assert script.get("/openapi.json", headers=auth_headers("admin")).status_code == 200
