"""Readers' own evidence saved with the read (Read.evidence_marks): validated marks in normalised image coordinates,
kept by the draft autosave and the submit, frozen once submitted."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.reading.schemas import MAX_EVIDENCE_MARKS, MAX_EVIDENCE_POINTS, MAX_STROKE_POINTS
from app.tables import Read
from tests.app.auth.helpers import sign_in

DR_ANSWERS = {"dr_grade": 2, "dme": False, "confidence": 4}


def _marks(instance_id: int) -> list[dict]:
    return [
        {"kind": "box", "instance_id": instance_id, "frame": 0, "box": [0.125, 0.25, 0.5, 0.75]},
        {
            "kind": "brush",
            "instance_id": instance_id,
            "frame": 0,
            "radius": [0.02, 0.03],
            "points": [[0.6, 0.2], [0.7, 0.25], [0.8, 0.3]],
        },
        {"kind": "erase", "instance_id": instance_id, "frame": 0, "radius": [0.01, 0.015], "points": [[0.7, 0.25]]},
    ]


def _stored(db_session, client_id: str) -> Read:
    db_session.expire_all()
    return db_session.scalar(select(Read).where(Read.client_id == client_id))


def _reason(response) -> str:
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else json.dumps(detail)


@pytest.mark.parametrize(
    ("mark", "reason"),
    [
        ({"kind": "box", "box": [0.1, 0.2, 1.2, 0.4]}, "less than or equal to 1"),
        ({"kind": "box", "box": [0.6, 0.2, 0.3, 0.4]}, "x0 < x1 and y0 < y1"),
        ({"kind": "box", "box": [0.1, 0.2, 0.3]}, "box"),
        ({"kind": "lasso", "points": [[0.1, 0.1]]}, "does not match any of the expected tags"),
        ({"kind": "brush", "radius": [0.02, 0.02], "points": []}, "at least 1 item"),
        ({"kind": "brush", "radius": [0.0, 0.02], "points": [[0.1, 0.1]]}, "greater than 0"),
        ({"kind": "erase", "radius": [0.02, 0.02], "points": [[0.1, -0.1]]}, "greater than or equal to 0"),
        (
            {"kind": "brush", "radius": [0.02, 0.02], "points": [[0.5, 0.5]] * (MAX_STROKE_POINTS + 1)},
            f"at most {MAX_STROKE_POINTS} items",
        ),
    ],
)
def test_an_invalid_mark_is_refused_with_its_reason(app_client, auth_headers, fundus_study, mark, reason):
    study = fundus_study()
    headers = auth_headers("reader")
    body = {"study_id": study.study_id, "evidence_marks": [{**mark, "instance_id": study.instance_id}]}
    response = app_client.put(f"/api/reads/{uuid.uuid4()}", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert reason in _reason(response) and "evidence_marks" in _reason(response)


def test_too_many_marks_or_points_and_marks_on_another_image_are_refused(app_client, auth_headers, fundus_study):
    study, other = fundus_study(), fundus_study()
    headers = auth_headers("reader")
    url = f"/api/reads/{uuid.uuid4()}"
    box = {"kind": "box", "instance_id": study.instance_id, "box": [0.1, 0.1, 0.2, 0.2]}
    many = app_client.put(
        url, json={"study_id": study.study_id, "evidence_marks": [box] * (MAX_EVIDENCE_MARKS + 1)}, headers=headers
    )
    assert many.status_code == 422 and f"at most {MAX_EVIDENCE_MARKS} items" in _reason(many)
    stroke = {
        "kind": "brush",
        "instance_id": study.instance_id,
        "radius": [0.01, 0.01],
        "points": [[0.5, 0.5]] * MAX_STROKE_POINTS,
    }
    strokes = [stroke] * (MAX_EVIDENCE_POINTS // MAX_STROKE_POINTS + 1)
    heavy = app_client.put(url, json={"study_id": study.study_id, "evidence_marks": strokes}, headers=headers)
    assert heavy.status_code == 422 and f"at most {MAX_EVIDENCE_POINTS}" in _reason(heavy)
    elsewhere = app_client.put(
        url, json={"study_id": study.study_id, "evidence_marks": _marks(other.instance_id)}, headers=headers
    )
    assert elsewhere.status_code == 422
    assert _reason(elsewhere) == f"an evidence mark is on image {other.instance_id}, which is not an image of this read"
    assert app_client.get(url, headers=headers).status_code == 404  # nothing was stored


def test_marks_survive_draft_to_submit_and_freeze_there(app_client, auth_headers, fundus_study, db_session):
    study = fundus_study()
    headers = auth_headers("reader")
    client_id = str(uuid.uuid4())
    url = f"/api/reads/{client_id}"
    marks = _marks(study.instance_id)
    base = {"study_id": study.study_id, "instance_id": study.instance_id}
    draft = app_client.put(
        url, json={**base, "answers": {"dr_grade": 1}, "evidence_marks": marks, "client_seq": 1}, headers=headers
    )
    assert draft.status_code == 201, draft.text
    assert draft.json()["evidence_marks"] == marks
    # A draft that does not send marks (a page without the tool) leaves them; [] would clear them.
    kept = app_client.put(url, json={**base, "answers": {"dr_grade": 2}, "client_seq": 2}, headers=headers)
    assert kept.json()["evidence_marks"] == marks and kept.json()["dr_grade"] == 2
    assert app_client.get(url, headers=headers).json()["evidence_marks"] == marks

    done = app_client.post(f"{url}/submit", json={**base, "answers": DR_ANSWERS, "client_seq": 3}, headers=headers)
    assert done.status_code == 201, done.text
    assert done.json()["evidence_marks"] == marks
    assert _stored(db_session, client_id).evidence_marks == marks

    # Submitted: a later draft is refused, a resubmission with other marks returns the stored read unchanged.
    late = app_client.put(url, json={**base, "evidence_marks": [], "client_seq": 4}, headers=headers)
    assert late.status_code == 409
    again = app_client.post(
        f"{url}/submit", json={**base, "answers": DR_ANSWERS, "evidence_marks": marks[:1]}, headers=headers
    )
    assert again.status_code == 200 and again.json()["evidence_marks"] == marks
    assert _stored(db_session, client_id).evidence_marks == marks


def test_a_draft_can_clear_its_marks_and_the_beacon_carries_them(app_client, make_user, fundus_study, db_session):
    study = fundus_study()
    reader, _ = make_user("reader")
    client_id = str(uuid.uuid4())
    marks = _marks(study.instance_id)
    with TestClient(app_client.app) as browser:
        csrf = sign_in(browser, reader.email)
        body = json.dumps({"study_id": study.study_id, "evidence_marks": marks, "client_seq": 10})
        saved = browser.post(f"/api/reads/{client_id}/draft", files={"draft": (None, body), "csrf_token": (None, csrf)})
        assert saved.status_code == 201, saved.text
        assert _stored(db_session, client_id).evidence_marks == marks
        cleared = browser.put(
            f"/api/reads/{client_id}",
            json={"study_id": study.study_id, "evidence_marks": [], "client_seq": 11},
            headers={"X-CSRF-Token": csrf},
        )
        assert cleared.status_code == 200 and cleared.json()["evidence_marks"] == []
    assert _stored(db_session, client_id).evidence_marks == []
