"""Worklist page and /api/worklist, the study page, its 404 and its audit row."""

from __future__ import annotations

import re

from sqlalchemy import select

from app import visibility
from app.tables import AuditEvent, JobState, Study
from tests.app.auth.helpers import sign_in
from tests.app.viewer import factories


def _row_html(page: str, study_id: int) -> str:
    match = re.search(rf'<tr data-study-id="{study_id}".*?</tr>', page, re.S)
    assert match, f"no worklist row for study {study_id}"
    return match.group(0)


def test_anonymous_visitor_is_sent_to_login(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/"
    assert client.get("/studies/1", follow_redirects=False).headers["location"] == "/login?next=/studies/1"
    assert client.get("/api/worklist").status_code == 401


def test_worklist_shows_every_ai_state_newest_first(client, make_user, db_session):
    png = factories.png_bytes()
    plain = factories.insert_study(
        db_session, data=png, source_format="png", rows=48, columns=64, patient_name="No^Model"
    )
    running = factories.insert_study(db_session, data=png, source_format="png", rows=48, columns=64)
    factories.add_job(db_session, running, state=JobState.running, progress=40)
    failed = factories.insert_study(db_session, data=png, source_format="png", rows=48, columns=64)
    factories.add_job(db_session, failed, state=JobState.failed, error="CUDA out of memory")
    done = factories.done_study(db_session, patient_name="Done^Dora")
    db_session.commit()
    user, _ = make_user("reader")
    sign_in(client, user.email)

    page = client.get("/").text
    assert "no model for this modality" in _row_html(page, plain.study_id)
    # A reader sees the patient's pseudonym in place of the name, and no patient ID.
    stored = db_session.get(Study, plain.study_id)
    assert "No^Model" not in _row_html(page, plain.study_id) and stored.patient_id not in page
    assert visibility.patient_pseudonym(stored) in _row_html(page, plain.study_id)
    # The bar's width as a data attribute (worklist.js applies it: the CSP refuses style attributes).
    assert 'class="progress-bar" data-width="40"' in _row_html(page, running.study_id)
    assert "CUDA out of memory" in _row_html(page, failed.study_id)
    assert "abnormal" in _row_html(page, done.study_id)
    assert "2024-01-31" in _row_html(page, done.study_id)
    order = [int(found) for found in re.findall(r'<tr data-study-id="(\d+)"', page)]
    assert order.index(done.study_id) < order.index(failed.study_id) < order.index(plain.study_id)
    assert 'data-active="true"' in page
    assert "/static/worklist.js" in page


def test_worklist_api(app_client, auth_headers, db_session):
    done = factories.done_study(db_session)
    db_session.commit()
    response = app_client.get("/api/worklist", headers=auth_headers("reader"))
    assert response.status_code == 200
    body = response.json()
    row = next(row for row in body["studies"] if row["id"] == done.study_id)
    assert row["ai_state"] == "done" and row["ai_progress"] == 100 and row["ai_label"] == "abnormal"
    assert row["instances"] == 1 and row["modality"] == "CT" and row["study_date"] == "2024-01-31"
    assert isinstance(body["active"], bool)
    one = app_client.get(f"/api/worklist/{done.study_id}", headers=auth_headers("reader"))
    assert one.json() == row
    assert app_client.get("/api/worklist/999999", headers=auth_headers("reader")).status_code == 404


def test_study_page_shows_image_prediction_heatmap_and_is_audited(client, make_user, db_session):
    done = factories.done_study(db_session, patient_name="Seen^Sam")
    db_session.commit()
    user, _ = make_user("reader")
    sign_in(client, user.email)
    response = client.get(f"/studies/{done.study_id}")
    assert response.status_code == 200
    page = response.text
    assert "Seen^Sam" not in page and visibility.patient_pseudonym(db_session.get(Study, done.study_id)) in page
    assert f"/api/instances/{done.instance_id}/image.png" in page
    assert f"/api/heatmaps/{done.heatmap_id}.png" in page
    assert "abnormal" in page and "83.0%" in page and "17.0%" in page
    assert "test-net" in page
    assert "Research demonstration, not for clinical use." in page
    assert 'id="assist-toggle"' in page and 'class="opacity-slider"' in page
    event = db_session.scalar(
        select(AuditEvent).where(
            AuditEvent.action == "view", AuditEvent.user_id == user.id, AuditEvent.object_id == str(done.study_id)
        )
    )
    assert event is not None and event.object_type == "study"


def test_study_page_job_states(client, make_user, db_session):
    png = factories.png_bytes()
    plain = factories.insert_study(db_session, data=png, source_format="png", rows=48, columns=64)
    queued = factories.insert_study(db_session, data=png, source_format="png", rows=48, columns=64)
    factories.add_job(db_session, queued, state=JobState.queued)
    failed = factories.insert_study(db_session, data=png, source_format="png", rows=48, columns=64)
    factories.add_job(db_session, failed, state=JobState.failed, error="weights checksum mismatch")
    db_session.commit()
    user, _ = make_user("coordinator")
    sign_in(client, user.email)
    assert "no model for this modality" in client.get(f"/studies/{plain.study_id}").text
    assert 'data-ai-state="queued"' in client.get(f"/studies/{queued.study_id}").text
    assert "weights checksum mismatch" in client.get(f"/studies/{failed.study_id}").text


def test_missing_study_is_a_404_page(client, make_user):
    user, _ = make_user("reader")
    sign_in(client, user.email)
    response = client.get("/studies/987654")
    assert response.status_code == 404
    assert "Study 987654 does not exist" in response.text
