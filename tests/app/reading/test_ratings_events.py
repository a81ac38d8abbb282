"""POST /api/ratings (idempotent Likert ratings of heatmaps) and POST /api/assistance-events."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from app.tables import AssistanceEvent, ExplanationRating, Read


def test_rating_is_stored_once_per_client_id(app_client, auth_headers, fundus_study, db_session):
    study = fundus_study()
    headers = auth_headers("reader")
    body = {
        "client_id": str(uuid.uuid4()),
        "heatmap_id": study.heatmap_id,
        "answers": {"relevant": 4, "trust": 5, "misleading": 1},
        "comment": "  follows the lesions  ",
    }
    first = app_client.post("/api/ratings", json=body, headers=headers)
    assert first.status_code == 201, first.text
    rating = first.json()
    assert rating["method"] == "gradcam" and rating["comment"] == "follows the lesions"
    again = app_client.post("/api/ratings", json={**body, "comment": "changed my mind"}, headers=headers)
    assert again.status_code == 200 and again.json() == rating
    rows = db_session.scalars(select(ExplanationRating).where(ExplanationRating.client_id == body["client_id"])).all()
    assert len(rows) == 1
    assert rows[0].answers == {"relevant": 4, "trust": 5, "misleading": 1} and rows[0].heatmap_id == study.heatmap_id
    assert rows[0].created_at is not None


def test_rating_validation(app_client, auth_headers, fundus_study):
    study = fundus_study()
    headers = auth_headers("reader")

    def post(**changes: object):
        body = {"client_id": str(uuid.uuid4()), "heatmap_id": study.heatmap_id, "answers": {"relevant": 3}}
        response = app_client.post("/api/ratings", json={**body, **changes}, headers=headers)
        assert response.status_code == 422, response.text
        return str(response.json()["detail"])

    assert "less than or equal to 5" in post(answers={"relevant": 6})
    assert "greater than or equal to 1" in post(answers={"trust": 0})
    assert "unknown question(s) beauty" in post(answers={"beauty": 3})
    assert "at least 1 item" in post(answers={})
    assert "heatmap 999999 does not exist" in post(heatmap_id=999999)
    assert "valid UUID" in post(client_id="abc")
    assert app_client.post("/api/ratings", json={}, headers={}).status_code == 401


def test_assistance_events_are_stored_with_their_read(app_client, auth_headers, fundus_study, db_session):
    study = fundus_study()
    headers = auth_headers("reader")
    client_id = str(uuid.uuid4())
    app_client.put(f"/api/reads/{client_id}", json={"study_id": study.study_id}, headers=headers)
    events = [
        {"event": "shown", "study_id": study.study_id, "instance_id": study.instance_id, "read_client_id": client_id,
         "detail": {"method": "gradcam"}, "client_at": "2026-11-26T10:00:00Z"},
        {"event": "opacity_changed", "study_id": study.study_id, "detail": {"opacity": 0.8}},
        {"event": "hidden", "study_id": study.study_id, "read_client_id": str(uuid.uuid4())},
    ]
    response = app_client.post("/api/assistance-events", json={"events": events}, headers=headers)
    assert response.status_code == 201 and response.json() == {"stored": 3}
    rows = db_session.scalars(
        select(AssistanceEvent).where(AssistanceEvent.study_id == study.study_id).order_by(AssistanceEvent.id)
    ).all()
    read_id = db_session.scalar(select(Read.id).where(Read.client_id == client_id))
    assert [row.event for row in rows] == ["shown", "opacity_changed", "hidden"]
    assert [row.read_id for row in rows] == [read_id, None, None]
    assert rows[0].detail == {"method": "gradcam"} and rows[0].client_at.year == 2026
    assert rows[0].instance_id == study.instance_id and rows[0].at is not None

    bad = app_client.post("/api/assistance-events", json={"events": [{"event": "winked", "study_id": study.study_id}]},
                          headers=headers)
    assert bad.status_code == 422
    unknown = app_client.post("/api/assistance-events", json={"events": [{"event": "shown", "study_id": 999999}]},
                              headers=headers)
    assert unknown.status_code == 422 and "study 999999 does not exist" in unknown.json()["detail"]
    assert app_client.post("/api/assistance-events", json={"events": []}, headers=headers).status_code == 422
