"""Sign-in back-off (app/auth/throttle.py): per account and per address, 429 with Retry-After, audited, shared by
every API process, parallel guesses taking turns; on Postgres through the routes, on SQLite through the service.

Each test signs in from an address of its own (TestClient's `client`): the suite's other tests sign in as
"testclient", whose few failures must stay under the address's free ones.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth import throttle
from app.main import create_app
from app.migrations import upgrade
from app.tables import AuditEvent, LoginThrottle
from tests.app.auth.helpers import PASSWORD, form_csrf

WRONG = "not the password at all"


def _address() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


@pytest.fixture
def from_address(app_client: TestClient) -> Iterator[tuple[TestClient, str]]:
    """A client of the session's app that signs in from an address no other test uses."""
    address = _address()
    with TestClient(app_client.app, client=(address, 40000)) as client:
        yield client, address


def _token(client: TestClient, email: str, password: str):  # type: ignore[no-untyped-def]
    return client.post("/api/auth/token", data={"username": email, "password": password})


def _lock_events(db_session: Session, address: str) -> list[AuditEvent]:
    db_session.expire_all()
    query = select(AuditEvent).where(AuditEvent.action == "login_locked", AuditEvent.ip == address)
    return list(db_session.scalars(query.order_by(AuditEvent.id)))


def test_lock_seconds_double_after_the_free_failures_and_stop_at_15_minutes() -> None:
    assert [throttle.lock_seconds(n, "account") for n in range(1, 9)] == [0, 0, 0, 0, 2, 4, 8, 16]
    assert throttle.lock_seconds(19, "address") == 0 and throttle.lock_seconds(20, "address") == 2
    assert throttle.lock_seconds(14, "account") == 900 and throttle.lock_seconds(200, "account") == 900


def test_after_five_wrong_passwords_even_the_right_one_waits(from_address, make_user, db_session) -> None:
    client, address = from_address
    user, _ = make_user("reader")
    assert [_token(client, user.email, WRONG).status_code for _ in range(5)] == [401] * 5
    locked = _token(client, user.email, PASSWORD)
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["retry-after"]) <= 2
    assert locked.json()["detail"] == f"too many failed sign-ins: try again in {locked.headers['retry-after']} seconds"
    [event] = _lock_events(db_session, address)
    assert event.user_id is None
    assert event.detail == {"scope": "account", "email": user.email, "failures": 5, "seconds": 2}
    time.sleep(int(locked.headers["retry-after"]) + 0.1)
    assert _token(client, user.email, PASSWORD).status_code == 200
    # The success cleared the account's count: one more mistake is a plain 401 again.
    assert _token(client, user.email, WRONG).status_code == 401


def test_the_wait_doubles_with_each_failure_after_a_lock(from_address, make_user, db_session) -> None:
    client, address = from_address
    user, _ = make_user("reader")
    for _ in range(5):
        _token(client, user.email, WRONG)
    row = db_session.get(LoginThrottle, throttle.key("account", user.email))
    row.locked_until = datetime.now(UTC) - timedelta(seconds=1)  # the 2 s have passed
    db_session.commit()
    assert _token(client, user.email, WRONG).status_code == 401
    assert int(_token(client, user.email, PASSWORD).headers["retry-after"]) in (3, 4)
    assert [event.detail["seconds"] for event in _lock_events(db_session, address)] == [2, 4]


def test_the_login_page_says_how_long_to_wait(app_client, make_user) -> None:
    user, _ = make_user("coordinator")
    with TestClient(app_client.app, client=(_address(), 40000)) as client:
        for _ in range(5):
            csrf = form_csrf(client.get("/login").text)
            wrong = client.post("/login", data={"email": user.email, "password": WRONG, "csrf_token": csrf})
            assert wrong.status_code == 401
        csrf = form_csrf(client.get("/login").text)
        page = client.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": csrf})
    assert page.status_code == 429
    wait = page.headers["retry-after"]
    assert f"Too many failed sign-ins. Try again in {wait} seconds." in page.text
    assert "lumen_session" not in client.cookies


def test_an_unknown_email_is_throttled_exactly_like_a_known_one(from_address, make_user) -> None:
    client, _address_used = from_address
    user, _ = make_user("reader")
    unknown = f"nobody-{secrets.token_hex(4)}@example.org"
    answers = {}
    for email in (user.email, unknown):
        failures = [_token(client, email, WRONG) for _ in range(5)]
        assert {(r.status_code, r.text) for r in failures} == {(401, '{"detail":"wrong email or password"}')}
        locked = _token(client, email, WRONG)
        answers[email] = (locked.status_code, locked.headers["retry-after"] in ("1", "2"), locked.json())
    assert answers[user.email] == answers[unknown]
    assert answers[unknown][:2] == (429, True)


def test_one_address_is_locked_out_across_accounts(app_client, make_user, db_session) -> None:
    user, _ = make_user("reader")
    address = _address()
    with TestClient(app_client.app, client=(address, 40000)) as client:
        for number in range(20):  # 20 accounts, 1 failure each: no account is locked, the address is
            assert _token(client, f"spray-{number}-{secrets.token_hex(3)}@example.org", WRONG).status_code == 401
        assert _token(client, user.email, PASSWORD).status_code == 429
    [event] = _lock_events(db_session, address)
    assert event.detail == {"scope": "address", "address": address, "failures": 20, "seconds": 2}
    with TestClient(app_client.app, client=(_address(), 40000)) as elsewhere:
        assert _token(elsewhere, user.email, PASSWORD).status_code == 200


def test_api_processes_share_the_counts(make_user) -> None:
    """Two apps, as two `lumen serve --workers` processes would be: failures on either count for both."""
    user, _ = make_user("reader")
    address = _address()
    first, second = create_app(run_sweeper=False), create_app(run_sweeper=False)
    with TestClient(first, client=(address, 1)) as one, TestClient(second, client=(address, 2)) as two:
        assert [_token(one, user.email, WRONG).status_code for _ in range(3)] == [401] * 3
        assert [_token(two, user.email, WRONG).status_code for _ in range(2)] == [401] * 2
        assert _token(one, user.email, PASSWORD).status_code == 429


def test_parallel_guesses_take_turns(app_client, make_user) -> None:
    """Ten guesses at once: five are checked (the free ones), the others find the lock the fifth made."""
    user, _ = make_user("reader")
    address = _address()
    statuses: list[int] = []
    start = threading.Barrier(10)

    def guess() -> None:
        with TestClient(app_client.app, client=(address, 40000)) as client:
            start.wait()
            statuses.append(_token(client, user.email, WRONG).status_code)

    threads = [threading.Thread(target=guess) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [401] * 5 + [429] * 5


def test_an_unknown_email_costs_one_password_check_like_a_known_one(app_client, make_user, monkeypatch) -> None:
    """No timing tells whether an account exists: a known email and an unknown one each cost one argon2 check
    with the same parameters (authenticate checks against a dummy hash)."""
    real = auth_service._password_hash
    checked: list[str] = []

    class CountingHash:
        def verify(self, password: str, hash: str) -> bool:
            checked.append(hash.rsplit("$", 2)[0])  # the algorithm and its cost parameters, not the salt
            return real.verify(password, hash)

        def verify_and_update(self, password: str, hash: str):  # type: ignore[no-untyped-def]
            checked.append(hash.rsplit("$", 2)[0])
            return real.verify_and_update(password, hash)

    user, _ = make_user("reader")
    monkeypatch.setattr(auth_service, "_password_hash", CountingHash())
    with TestClient(app_client.app, client=(_address(), 40000)) as client:
        assert _token(client, user.email, WRONG).status_code == 401
        assert _token(client, f"ghost-{secrets.token_hex(4)}@example.org", WRONG).status_code == 401
    assert len(checked) == 2 and checked[0] == checked[1]


def test_the_back_off_works_on_sqlite_too(tmp_path) -> None:
    """The embedded default: the same rows and answers through the service on a migrated SQLite database."""
    engine = create_engine(f"sqlite:///{tmp_path / 'lumen.db'}")
    with engine.begin() as connection:
        upgrade("head", connection=connection)
    waits = []
    for _ in range(6):
        with Session(engine) as session, session.begin():
            attempt = throttle.begin(session, email="Someone@Example.org ", ip="192.0.2.7")
            waits.append(attempt.retry_after)
            if not attempt.retry_after:
                throttle.failed(session, attempt)
    assert waits[:5] == [0] * 5 and waits[5] in (1, 2)
    with Session(engine) as session:
        row = session.get(LoginThrottle, throttle.key("account", "someone@example.org"))
        assert row is not None and row.failures == 5
        assert session.scalar(select(AuditEvent.detail).where(AuditEvent.action == "login_locked"))["seconds"] == 2
    engine.dispose()
