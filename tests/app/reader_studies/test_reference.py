"""The reference standard (app/reader_studies/reference.py): an open study's reference changes only when the
upload confirms it (409 listing each case, old -> new, otherwise), and every change is audited with the old
and the new value of each case."""

from __future__ import annotations

from sqlalchemy import select

from app.tables import AuditEvent
from tests.app.reader_studies.conftest import create_study, open_study, reference_csv


def _reference_audits(db_session, study_id: int) -> list[AuditEvent]:
    db_session.expire_all()
    return list(db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "reference_changed", AuditEvent.object_id == str(study_id))
        .order_by(AuditEvent.id)
    ))


def _references(client, headers, study_id: int) -> list[dict | None]:
    detail = client.get(f"/api/reader-studies/{study_id}", headers=headers).json()
    return [case["reference"] for case in detail["case_list"]]


def test_a_draft_takes_its_reference_at_once_and_the_change_is_audited(app_client, make_user, make_cases,
                                                                         db_session):
    user, token = make_user("coordinator")
    coordinator = {"Authorization": f"Bearer {token}"}
    csv_headers = {**coordinator, "Content-Type": "text/csv"}
    cases = make_cases(2)
    study = create_study(app_client, coordinator)
    url = f"/api/reader-studies/{study['id']}/reference"
    assert app_client.post(url, content=reference_csv(cases, [1, 4]), headers=csv_headers).status_code == 200
    [audit] = _reference_audits(db_session, study["id"])
    assert (audit.user_id, audit.ip, audit.object_type) == (user.id, "testclient", "reader_study")
    assert audit.detail == {
        "state": "draft",
        "confirmed": False,
        "changes": [
            {"case": "C0001", "study_id": cases[0].study_id, "old": None, "new": {"dr_grade": 1, "dme": False}},
            {"case": "C0002", "study_id": cases[1].study_id, "old": None, "new": {"dr_grade": 4, "dme": True}},
        ],
    }
    # The same file again changes nothing, and so records nothing.
    assert app_client.post(url, content=reference_csv(cases, [1, 4]), headers=csv_headers).status_code == 200
    assert len(_reference_audits(db_session, study["id"])) == 1


def test_an_open_study_changes_its_reference_only_when_confirmed(app_client, make_user, make_cases, readers,
                                                                  db_session):
    user, token = make_user("coordinator")
    coordinator = {"Authorization": f"Bearer {token}"}
    csv_headers = {**coordinator, "Content-Type": "text/csv"}
    cases = make_cases(3)
    study = open_study(app_client, coordinator, cases=cases, reader_users=[u for u, _ in readers(1)],
                       grades=[0, 2, 4])
    url = f"/api/reader-studies/{study['id']}/reference"
    before = _references(app_client, coordinator, study["id"])
    audits_before = len(_reference_audits(db_session, study["id"]))

    changed = reference_csv(cases, [0, 3, 4])
    refused = app_client.post(url, content=changed, headers=csv_headers)
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert "is open" in detail and "1 case(s)" in detail and "confirm=true" in detail
    assert "C0002: dr_grade=2 dme=False -> dr_grade=3 dme=True" in detail
    assert _references(app_client, coordinator, study["id"]) == before
    assert len(_reference_audits(db_session, study["id"])) == audits_before

    # Unchanged values need no confirmation (nothing to confirm, nothing audited).
    same = app_client.post(url, content=reference_csv(cases, [0, 2, 4]), headers=csv_headers)
    assert same.status_code == 200 and len(_reference_audits(db_session, study["id"])) == audits_before

    confirmed = app_client.post(f"{url}?confirm=true", content=changed, headers=csv_headers)
    assert confirmed.status_code == 200, confirmed.text
    assert _references(app_client, coordinator, study["id"])[1] == {"dr_grade": 3, "dme": True}
    audit = _reference_audits(db_session, study["id"])[-1]
    assert audit.user_id == user.id and audit.ip == "testclient"
    assert audit.detail == {
        "state": "open",
        "confirmed": True,
        "changes": [{"case": "C0002", "study_id": cases[1].study_id, "old": {"dr_grade": 2, "dme": False},
                     "new": {"dr_grade": 3, "dme": True}}],
    }


def test_the_dashboard_offers_the_confirmation(app_client, make_user, make_cases, readers):
    _, token = make_user("coordinator")
    coordinator = {"Authorization": f"Bearer {token}"}
    study = open_study(app_client, coordinator, cases=make_cases(3), reader_users=[u for u, _ in readers(1)])
    page = app_client.get(f"/reader-studies/{study['id']}", headers=coordinator)
    assert page.status_code == 200
    assert 'id="reference-confirm"' in page.text and 'id="reference-confirm-apply"' in page.text
