"""/admin/audit: newest first, 50 a page, filtered by action and by user email."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

from app.tables import AuditEvent

_ROW = re.compile(r'<tr data-event-id="(\d+)" data-action="([^"]+)">')


def _rows(html: str) -> list[tuple[int, str]]:
    return [(int(event_id), action) for event_id, action in _ROW.findall(html)]


def _add_events(db_session, *, action: str, user_id: int | None, n: int, start: datetime) -> list[int]:
    """n events one second apart from `start` (in the past: the log's first page stays the real, newest one)."""
    events = [AuditEvent(action=action, user_id=user_id, object_type="test", object_id=str(i),
                         at=start + timedelta(seconds=i)) for i in range(n)]
    db_session.add_all(events)
    db_session.commit()
    return [event.id for event in events]


def test_the_log_shows_real_events_newest_first(admin):
    # Signing in wrote a login event for this admin: it is on the first page, newest first.
    page = admin.client.get("/admin/audit")
    assert page.status_code == 200
    assert f"<td>{admin.user.email}</td>" in page.text
    ids = [event_id for event_id, _ in _rows(page.text)]
    assert ids and len(ids) <= 50


def test_sixty_events_make_two_pages_newest_first(admin, make_user, db_session):
    user, _ = make_user("reader")
    action = f"test_paging_{secrets.token_hex(3)}"
    ids = _add_events(db_session, action=action, user_id=user.id, n=60, start=datetime(2001, 1, 1, tzinfo=UTC))
    first = admin.client.get("/admin/audit", params={"action": action})
    assert first.status_code == 200
    assert "60 events matching" in first.text and "page 1 of 2" in first.text
    assert [event_id for event_id, _ in _rows(first.text)] == ids[::-1][:50]
    assert "page=2" in first.text  # the link to older events keeps the filter
    second = admin.client.get("/admin/audit", params={"action": action, "page": 2})
    assert [event_id for event_id, _ in _rows(second.text)] == ids[::-1][50:]
    assert "page 2 of 2" in second.text
    # A page past the end shows the last one.
    assert _rows(admin.client.get("/admin/audit", params={"action": action, "page": 9}).text) == _rows(second.text)


def test_filter_by_user_email_and_action(admin, make_user, db_session):
    alice, _ = make_user("reader")
    bob, _ = make_user("coordinator")
    action = f"test_filter_{secrets.token_hex(3)}"
    start = datetime(2002, 1, 1, tzinfo=UTC)
    alice_ids = _add_events(db_session, action=action, user_id=alice.id, n=3, start=start)
    bob_ids = _add_events(db_session, action=action, user_id=bob.id, n=2, start=start)
    other_ids = _add_events(db_session, action=f"{action}_other", user_id=alice.id, n=1, start=start)

    by_alice = _rows(admin.client.get("/admin/audit", params={"email": alice.email.upper()}).text)
    assert {event_id for event_id, _ in by_alice} >= set(alice_ids + other_ids)
    assert not {event_id for event_id, _ in by_alice} & set(bob_ids)

    both = _rows(admin.client.get("/admin/audit", params={"action": action, "email": alice.email}).text)
    assert [event_id for event_id, _ in both] == alice_ids[::-1]
    # Part of an address matches too (both users' emails start with their role).
    part = _rows(admin.client.get("/admin/audit", params={"action": action, "email": "coordinator-"}).text)
    assert {event_id for event_id, _ in part} == set(bob_ids)


def test_failed_sign_ins_are_found_by_the_email_tried(admin, db_session):
    tried = f"nobody-{secrets.token_hex(3)}@example.org"
    [event_id] = _add_events(db_session, action="login_failed", user_id=None, n=1, start=datetime.now(UTC))
    db_session.get(AuditEvent, event_id).detail = {"email": tried}
    db_session.commit()
    page = admin.client.get("/admin/audit", params={"email": tried})
    assert _rows(page.text) == [(event_id, "login_failed")]
    assert "not signed in" in page.text


def test_wildcards_in_the_email_filter_are_taken_literally(admin):
    page = admin.client.get("/admin/audit", params={"email": "%"})
    assert page.status_code == 200 and _rows(page.text) == []
    assert admin.client.get("/admin/audit", params={"page": 0}).status_code == 422
