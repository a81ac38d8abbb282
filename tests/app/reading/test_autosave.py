"""Autosave that never loses a change: drafts numbered by their page (a late one does not overwrite a newer
one), and the beacon twin of PUT that a page being left sends as a form, its CSRF token in the body."""

from __future__ import annotations

import json
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.tables import Read
from tests.app.auth.helpers import sign_in


def _draft(study, seq: int | None, **answers) -> dict:
    return {"study_id": study.study_id, "answers": answers, "client_seq": seq}


def test_an_older_draft_sent_after_a_newer_one_does_not_overwrite_it(app_client, auth_headers, fundus_study):
    study = fundus_study()
    headers = auth_headers("reader")
    url = f"/api/reads/{uuid.uuid4()}"
    first = app_client.put(url, json=_draft(study, 1_000, dr_grade=1), headers=headers)
    assert first.status_code == 201, first.text
    newer = app_client.put(url, json=_draft(study, 3_000, dr_grade=2, confidence=5), headers=headers)
    assert newer.status_code == 200 and newer.json()["client_seq"] == 3_000

    # The keep-alive request of the click before, overtaken by the newer draft: answered with what is stored.
    late = app_client.put(url, json=_draft(study, 2_000, dr_grade=4, confidence=1), headers=headers)
    assert late.status_code == 200, late.text
    assert (late.json()["dr_grade"], late.json()["confidence"], late.json()["client_seq"]) == (2, 5, 3_000)
    # The same draft again changes nothing either, not even its time.
    again = app_client.put(url, json=_draft(study, 3_000, dr_grade=2, confidence=5), headers=headers)
    assert again.json()["updated_at"] == newer.json()["updated_at"]
    stored = app_client.get(url, headers=headers).json()
    assert (stored["dr_grade"], stored["confidence"], stored["answers"]) == (2, 5, {"dr_grade": 2, "confidence": 5})

    # A draft without a number (an older page) is stored as before; a newer number is stored too.
    unnumbered = app_client.put(url, json=_draft(study, None, dr_grade=3), headers=headers)
    assert unnumbered.json()["dr_grade"] == 3 and unnumbered.json()["client_seq"] == 3_000
    assert app_client.put(url, json=_draft(study, 4_000, dr_grade=0), headers=headers).json()["dr_grade"] == 0


def test_submit_keeps_the_highest_number_and_later_drafts_conflict(app_client, auth_headers, fundus_study):
    study = fundus_study()
    headers = auth_headers("reader")
    url = f"/api/reads/{uuid.uuid4()}"
    app_client.put(url, json=_draft(study, 5_000, dr_grade=1), headers=headers)
    answers = {"dr_grade": 2, "dme": False, "confidence": 3}
    done = app_client.post(f"{url}/submit", json={**_draft(study, 4_000), "answers": answers}, headers=headers)
    assert done.status_code == 201, done.text
    assert done.json()["client_seq"] == 5_000 and done.json()["answers"] == answers
    late = app_client.put(url, json=_draft(study, 9_000, dr_grade=4), headers=headers)
    assert late.status_code == 409


def test_beacon_draft_is_a_form_with_the_csrf_token_in_its_body(app_client, make_user, fundus_study, db_session):
    study = fundus_study()
    reader, _ = make_user("reader")
    client_id = str(uuid.uuid4())
    url = f"/api/reads/{client_id}/draft"
    with TestClient(app_client.app) as browser:
        csrf = sign_in(browser, reader.email)
        body = json.dumps(_draft(study, 7_000, dr_grade=3, confidence=2))
        # Without the token (a form posted from another site) the cookie alone does not save anything.
        assert browser.post(url, files={"draft": (None, body)}).status_code == 403
        assert browser.post(url, files={"draft": (None, body), "csrf_token": (None, "wrong")}).status_code == 403
        saved = browser.post(url, files={"draft": (None, body), "csrf_token": (None, csrf)})
        assert saved.status_code == 201, saved.text
        assert (saved.json()["confidence"], saved.json()["client_seq"]) == (2, 7_000)
        older = json.dumps(_draft(study, 6_000, dr_grade=0))
        assert browser.post(url, files={"draft": (None, older), "csrf_token": (None, csrf)}).json()["dr_grade"] == 3
        bad = browser.post(url, files={"draft": (None, '{"answers": {"confidence": 9}}'), "csrf_token": (None, csrf)})
        assert bad.status_code == 422
        assert browser.post(url, files={"draft": (None, "not json"), "csrf_token": (None, csrf)}).status_code == 422
    row = db_session.scalar(select(Read).where(Read.client_id == client_id))
    assert row is not None and (row.reader_id, row.dr_grade, row.confidence) == (reader.id, 3, 2)
