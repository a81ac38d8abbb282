"""/admin/users: create accounts through the form, change roles, deactivate; every change audited."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import func, select

from app.auth import service as auth_service
from app.tables import AuditEvent, Role, User

PASSWORD = "twelve chars!"


def _email() -> str:
    return f"new-{secrets.token_hex(4)}@example.org"


def _events(db_session, action: str, object_id: int) -> list[AuditEvent]:
    return list(db_session.scalars(select(AuditEvent).where(AuditEvent.action == action,
                                                              AuditEvent.object_id == str(object_id))))


def test_users_page_lists_accounts_with_role_specialty_state_and_creation(admin, make_user):
    reader, _ = make_user("reader")
    page = admin.client.get("/admin/users")
    assert page.status_code == 200
    row = page.text[page.text.index(f'data-user-id="{reader.id}"'):]
    row = row[: row.index("</tr>")]
    assert f'data-email="{reader.email}"' in row and 'data-role="reader"' in row and 'data-active="true"' in row
    assert reader.created_at.strftime("%Y-%m-%d") in row
    assert 'name="csrf_token"' in page.text and admin.csrf in page.text


def test_create_a_user_through_the_form(admin, db_session):
    email = _email()
    form = {"csrf_token": admin.csrf, "email": f"  {email.upper()} ", "full_name": "Ada Reader", "role": "reader",
            "specialty": "ophthalmology", "password": PASSWORD}
    response = admin.client.post("/admin/users", data=form, follow_redirects=False)
    assert response.status_code == 303
    user = db_session.scalar(select(User).where(User.email == email))
    assert user is not None
    assert (user.full_name, user.role, user.specialty, user.is_active) == ("Ada Reader", Role.reader,
                                                                           "ophthalmology", True)
    assert response.headers["location"] == f"/admin/users?done=created&user={user.id}"
    assert f"Account {email} created." in admin.client.get(response.headers["location"]).text
    assert auth_service.authenticate(db_session, email=email, password=PASSWORD).id == user.id
    [event] = _events(db_session, "user_created", user.id)
    assert event.user_id == admin.user.id and event.detail == {"email": email, "role": "reader"}


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ({"password": "eleven char"}, 422, "Password: the password must have at least 12 characters."),
        # Long enough, but on zxcvbn's lists of common passwords (app/auth/passwords.py).
        ({"password": "123456789012"}, 422, "Password: the password is too easy to guess"),
        ({"password": "password1234"}, 422, "Password: the password is too easy to guess"),
        ({"email": "ada.lovelace@example.org", "password": "ada.lovelace-rules"}, 422,
         "Password: the password must not contain the email address."),
        ({"role": "superuser"}, 422, "Role: Input should be &#39;admin&#39;, &#39;coordinator&#39; or &#39;reader"),
        ({"role": ""}, 422, "Role: Input should be"),
        ({"email": "not-an-email"}, 422, "Email: enter an email address"),
    ],
)
def test_bad_input_is_refused_with_a_reason_and_creates_nothing(admin, db_session, change, status, reason):
    email = _email()
    form = {"csrf_token": admin.csrf, "email": email, "full_name": "Kept", "role": "reader", "password": PASSWORD,
            **change}
    response = admin.client.post("/admin/users", data=form)
    assert response.status_code == status
    assert reason in response.text
    assert db_session.scalar(select(User).where(User.email == email)) is None
    # The form keeps what was typed, except the password.
    assert 'value="Kept"' in response.text and PASSWORD not in response.text


def test_a_duplicate_email_is_refused_and_creates_nothing(admin, make_user, db_session):
    existing, _ = make_user("reader")
    users_before = db_session.scalar(select(func.count()).select_from(User))
    form = {"csrf_token": admin.csrf, "email": existing.email.upper(), "role": "admin", "password": PASSWORD}
    response = admin.client.post("/admin/users", data=form)
    assert response.status_code == 409
    assert f"A user with email {existing.email} exists already." in response.text
    assert db_session.scalar(select(func.count()).select_from(User)) == users_before
    db_session.expire_all()
    assert db_session.get(User, existing.id).role == Role.reader
    assert not db_session.scalars(select(AuditEvent).where(AuditEvent.action == "user_created",
                                                          AuditEvent.user_id == admin.user.id)).all()


def test_the_form_needs_the_csrf_token(admin, db_session):
    email = _email()
    response = admin.client.post("/admin/users", data={"email": email, "role": "reader", "password": PASSWORD})
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert db_session.scalar(select(User).where(User.email == email)) is None


def test_changing_a_role_writes_an_audit_event(admin, make_user, db_session):
    reader, _ = make_user("reader")
    response = admin.client.post(f"/admin/users/{reader.id}/role", data={"csrf_token": admin.csrf,
                                                                         "role": "coordinator"},
                                 follow_redirects=False)
    assert response.status_code == 303
    assert f"{reader.email} is now coordinator." in admin.client.get(response.headers["location"]).text
    assert db_session.get(User, reader.id).role == Role.coordinator
    [event] = _events(db_session, "user_role_changed", reader.id)
    assert event.user_id == admin.user.id and event.object_type == "user"
    assert event.detail == {"email": reader.email, "from": "reader", "to": "coordinator"}


def test_an_unknown_role_is_refused(admin, make_user, db_session):
    reader, _ = make_user("reader")
    response = admin.client.post(f"/admin/users/{reader.id}/role", data={"csrf_token": admin.csrf, "role": "root"})
    assert response.status_code == 422 and "Unknown role &#39;root&#39;" in response.text
    assert db_session.get(User, reader.id).role == Role.reader
    assert not _events(db_session, "user_role_changed", reader.id)


def test_deactivating_writes_an_audit_event_and_locks_the_account(admin, make_user, app_client, db_session):
    reader, token = make_user("reader")
    headers = {"Authorization": f"Bearer {token}"}
    assert app_client.get("/api/auth/me", headers=headers).status_code == 200
    response = admin.client.post(f"/admin/users/{reader.id}/active", data={"csrf_token": admin.csrf,
                                                                           "active": "false"},
                                 follow_redirects=False)
    assert response.status_code == 303
    assert db_session.get(User, reader.id).is_active is False
    [event] = _events(db_session, "user_deactivated", reader.id)
    assert event.user_id == admin.user.id and event.detail == {"email": reader.email}
    assert app_client.get("/api/auth/me", headers=headers).status_code == 401
    # And back.
    admin.client.post(f"/admin/users/{reader.id}/active", data={"csrf_token": admin.csrf, "active": "true"})
    db_session.expire_all()
    assert db_session.get(User, reader.id).is_active is True
    assert len(_events(db_session, "user_reactivated", reader.id)) == 1
    assert app_client.get("/api/auth/me", headers=headers).status_code == 200


def test_deactivating_yourself_is_refused_with_a_clear_message(admin, db_session):
    response = admin.client.post(f"/admin/users/{admin.user.id}/active", data={"csrf_token": admin.csrf,
                                                                               "active": "false"})
    assert response.status_code == 400
    assert "You cannot deactivate your own account: ask another admin to do it." in response.text
    assert db_session.get(User, admin.user.id).is_active is True
    assert not _events(db_session, "user_deactivated", admin.user.id)
    # Nor may an admin demote themselves (the last admin would lock everyone out).
    response = admin.client.post(f"/admin/users/{admin.user.id}/role", data={"csrf_token": admin.csrf,
                                                                             "role": "reader"})
    assert response.status_code == 400 and "You cannot change your own role" in response.text
    assert db_session.get(User, admin.user.id).role == Role.admin


def test_changes_to_an_unknown_user_are_404(admin):
    for path, data in (("/admin/users/999999/role", {"role": "reader"}), ("/admin/users/999999/active",
                                                                           {"active": "false"})):
        response = admin.client.post(path, data={"csrf_token": admin.csrf, **data})
        assert response.status_code == 404 and "There is no user 999999." in response.text
