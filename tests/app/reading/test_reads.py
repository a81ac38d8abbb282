"""PUT /api/reads/{client_id} (autosave) and POST /api/reads/{client_id}/submit (idempotent)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from app.tables import Read
from tests.app.viewer import factories

DR_ANSWERS = {"dr_grade": 2, "dme": False, "confidence": 4}


def _count(db_session, client_id: str) -> int:
    return db_session.scalar(select(func.count()).select_from(Read).where(Read.client_id == client_id))


def test_draft_autosave_then_submit_once(app_client, auth_headers, fundus_study, db_session):
    study = fundus_study()
    headers = auth_headers("reader")
    client_id = str(uuid.uuid4())
    url = f"/api/reads/{client_id}"
    first = app_client.put(url, json={"study_id": study.study_id, "answers": {"dr_grade": 1}}, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["state"] == "draft" and first.json()["form"] == "dr"
    body = {"study_id": study.study_id, "instance_id": study.instance_id, "answers": {"dr_grade": 2, "dme": True},
            "time_spent_seconds": 12.5}
    second = app_client.put(url, json=body, headers=headers)
    assert second.status_code == 200
    assert second.json()["dr_grade"] == 2 and second.json()["dme"] is True
    assert second.json()["id"] == first.json()["id"]

    submit = {
        "study_id": study.study_id,
        "instance_id": study.instance_id,
        "answers": DR_ANSWERS,
        "time_spent_seconds": 31.2,
        "assistance": {"visible": True, "method": "gradcam", "opacity": 0.6, "colormap": "jet", "threshold": 0.1},
    }
    done = app_client.post(f"{url}/submit", json=submit, headers=headers)
    assert done.status_code == 201, done.text
    read = done.json()
    assert read["state"] == "submitted" and read["submitted_at"] and read["assisted"] is True
    assert (read["dr_grade"], read["dme"], read["confidence"]) == (2, False, 4)
    assert read["answers"] == DR_ANSWERS and read["assistance"]["method"] == "gradcam"
    assert read["time_spent_seconds"] == 31.2 and read["assignment_id"] is None

    # A retry (lost response) with other values returns the stored read unchanged: no duplicate.
    again = app_client.post(f"{url}/submit", json={**submit, "answers": {**DR_ANSWERS, "dr_grade": 4}}, headers=headers)
    assert again.status_code == 200 and again.json() == read
    assert _count(db_session, client_id) == 1
    late = app_client.put(url, json={"study_id": study.study_id, "answers": {"dr_grade": 3}}, headers=headers)
    assert late.status_code == 409 and "submitted" in late.json()["detail"]
    assert app_client.get(url, headers=headers).json() == read
    # Another reader neither sees this read nor collides with its client id.
    other = auth_headers("reader")
    assert app_client.get(url, headers=other).status_code == 404
    assert app_client.post(f"{url}/submit", json=submit, headers=other).status_code == 201
    assert _count(db_session, client_id) == 2


def test_submit_without_draft_and_finding_form(app_client, auth_headers, db_session):
    data, header = factories.ct_small()
    stored = factories.insert_study(
        db_session, data=data, source_format="dicom", rows=header.Rows, columns=header.Columns, modality="CT"
    )
    db_session.commit()
    headers = auth_headers("coordinator")
    body = {"study_id": stored.study_id, "answers": {"finding": "nodule", "confidence": 3}, "time_spent_seconds": 4}
    response = app_client.post(f"/api/reads/{uuid.uuid4()}/submit", json=body, headers=headers)
    assert response.status_code == 201, response.text
    read = response.json()
    assert (read["form"], read["finding"], read["confidence"], read["assisted"]) == ("finding", "nodule", 3, False)


def test_read_validation_errors(app_client, auth_headers, fundus_study):
    study = fundus_study()
    headers = auth_headers("reader")
    url = f"/api/reads/{uuid.uuid4()}"

    def put(answers: dict, **extra: object):
        return app_client.put(url, json={"study_id": study.study_id, "answers": answers, **extra}, headers=headers)

    def reason(response) -> str:
        assert response.status_code == 422, response.text
        return str(response.json()["detail"])

    assert "less than or equal to 4" in reason(put({"dr_grade": 5}))
    assert "greater than or equal to 1" in reason(put({"confidence": 0}))
    assert "unknown finding" in reason(put({"finding": "tumour"}))
    assert "not asked by the dr form" in reason(put({"finding": "nodule"}))
    assert "Extra inputs" in reason(put({"birads": 3}))
    assert "does not exist" in reason(app_client.put(url, json={"study_id": 999999}, headers=headers))
    assert "not an image of study" in reason(put({}, instance_id=999999))
    incomplete = app_client.post(f"{url}/submit", json={"study_id": study.study_id, "answers": {"dr_grade": 1}},
                                 headers=headers)
    assert "must answer confidence, dme" in reason(incomplete)
    not_uuid = app_client.put("/api/reads/not-a-uuid", json={"study_id": study.study_id}, headers=headers)
    assert not_uuid.status_code == 422


def test_reads_need_a_signed_in_user_and_csrf_for_cookies(app_client, fundus_study, make_user):
    from fastapi.testclient import TestClient

    from tests.app.auth.helpers import sign_in

    study = fundus_study()
    url = f"/api/reads/{uuid.uuid4()}"
    assert app_client.put(url, json={"study_id": study.study_id}).status_code == 401
    user, _ = make_user("reader")
    with TestClient(app_client.app) as browser:
        csrf = sign_in(browser, user.email)
        assert browser.put(url, json={"study_id": study.study_id}).status_code == 403
        ok = browser.put(url, json={"study_id": study.study_id}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 201, ok.text
