"""Admin pages are for admins: readers and coordinators get a 403 page saying why, visitors the login page. The
models' pages are also the coordinators' (they bring models in: docs/onboarding.md)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.tables import AiModel, User

PAGES = ["/admin", "/admin/models", "/admin/models/{model_id}", "/admin/users", "/admin/audit"]
MODEL_PAGES = ["/admin/models", "/admin/models/{model_id}", "/admin/models/add"]


def _first_model_id(db_session) -> int:
    return db_session.scalars(select(AiModel.id).order_by(AiModel.id)).first()


@pytest.mark.parametrize("role", ["reader", "coordinator"])
def test_non_admins_get_a_403_page_with_the_reason(browser, db_session, role):
    caller = browser(role)
    model_id = _first_model_id(db_session)
    for path in PAGES:
        if role == "coordinator" and path in MODEL_PAGES:
            continue
        response = caller.client.get(path.format(model_id=model_id), follow_redirects=False)
        assert response.status_code == 403, path
        assert "Admins only" in response.text and f"<strong>{role}</strong> role" in response.text
        # No admin link in their navigation either; a coordinator's goes to the models only.
        assert ('href="/admin/models"' in response.text) == (role == "coordinator")
        assert 'href="/admin/users"' not in response.text


def test_coordinators_see_the_models_and_may_add_one_but_not_the_users_or_the_audit(browser, db_session):
    caller = browser("coordinator")
    model_id = _first_model_id(db_session)
    for path in MODEL_PAGES:
        response = caller.client.get(path.format(model_id=model_id), follow_redirects=False)
        assert response.status_code == 200, path
        assert 'href="/admin/users"' not in response.text and 'href="/admin/audit"' not in response.text
    assert 'id="add-model"' in caller.client.get("/admin/models").text


@pytest.mark.parametrize("role", ["reader", "coordinator"])
def test_non_admins_cannot_create_users_or_change_roles(browser, db_session, role):
    caller = browser(role)
    email = f"sneaky-{role}@example.org"
    form = {"csrf_token": caller.csrf, "email": email, "role": "admin", "password": "a long enough password"}
    assert caller.client.post("/admin/users", data=form, follow_redirects=False).status_code == 403
    assert db_session.scalar(select(User).where(User.email == email)) is None
    response = caller.client.post(f"/admin/users/{caller.user.id}/role", data={"csrf_token": caller.csrf,
                                                                              "role": "admin"})
    assert response.status_code == 403
    db_session.expire_all()
    assert db_session.get(User, caller.user.id).role.value == role


def test_admins_see_the_admin_link_and_pages(admin):
    worklist = admin.client.get("/")
    assert 'href="/admin/models"' in worklist.text
    for path in ("/admin/models", "/admin/users", "/admin/audit"):
        assert admin.client.get(path).status_code == 200, path
    response = admin.client.get("/admin", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin/models"


def test_visitors_are_sent_to_the_login_page(app_client):
    with TestClient(app_client.app) as anonymous:
        response = anonymous.get("/admin/users", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/admin/users"
