"""A study's priors (GET /api/studies/{id}/priors and the study page's list): the other studies with its
PatientID, newest first, each with its first image; descriptions only for roles that see identity; none for a
study without a PatientID; and never a study that the caller has reader-study reads pending on."""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from app.tables import Study
from tests.app.auth.helpers import sign_in
from tests.app.live.conftest import NO_AI_FIRST
from tests.app.reader_studies.conftest import open_study
from tests.app.viewer import factories


def _study(session: Session, *, patient_id: str, date: str, description: str = "Chest PA") -> int:
    stored = factories.insert_study(
        session, data=factories.png_bytes(), source_format="png", rows=48, columns=64, modality="CR",
        description=description,
    )
    study = session.get_one(Study, stored.study_id)
    study.patient_id, study.study_date = patient_id, date
    session.flush()
    return stored.study_id


def test_priors_newest_first_with_their_first_image(app_client, auth_headers, db_session):
    patient = f"PRI-{secrets.token_hex(4)}"
    current = _study(db_session, patient_id=patient, date="20261201")
    older = _study(db_session, patient_id=patient, date="20240502", description="Chest AP portable")
    newer = _study(db_session, patient_id=patient, date="20270103")
    middle = _study(db_session, patient_id=patient, date="20250101")
    undated = _study(db_session, patient_id=patient, date="")
    _study(db_session, patient_id=f"OTHER-{secrets.token_hex(4)}", date="20250101")
    db_session.commit()

    answer = app_client.get(f"/api/studies/{current}/priors", headers=auth_headers("coordinator"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["label"] == "Current 2026-12-01"
    first_instance = db_session.get_one(Study, current).series[0].instances[0]
    assert body["first_image"] == {"id": first_instance.id, "modality": "CR", "rows": 48, "columns": 64,
                                   "frames": 1, "colour": False}
    assert [prior["id"] for prior in body["priors"]] == [newer, middle, older, undated]
    assert [prior["label"] for prior in body["priors"]] == [
        "Later 2027-01-03", "Prior 2025-01-01", "Prior 2024-05-02", "Undated"]
    prior = body["priors"][2]
    assert (prior["study_date"], prior["modality"], prior["description"], prior["instances"]) == (
        "2024-05-02", "CR", "Chest AP portable", 1)
    assert prior["first_image"]["id"] == db_session.get_one(Study, older).series[0].instances[0].id

    # A reader sees the same studies and dates (PS3.15's longitudinal dates), not their free-text descriptions.
    seen = app_client.get(f"/api/studies/{current}/priors", headers=auth_headers("reader")).json()
    assert [item["id"] for item in seen["priors"]] == [newer, middle, older, undated]
    assert {item["description"] for item in seen["priors"]} == {""}
    assert app_client.get("/api/studies/987654321/priors", headers=auth_headers("reader")).status_code == 404


def test_the_study_page_lists_them_or_says_there_are_none(client, make_user, db_session):
    patient = f"PRI-{secrets.token_hex(4)}"
    current = _study(db_session, patient_id=patient, date="20261201")
    older = _study(db_session, patient_id=patient, date="20240502")
    # Image uploads have no PatientID: they are nobody's priors, not each other's.
    lone = factories.insert_study(db_session, data=factories.png_bytes(), source_format="png", rows=48, columns=64)
    other_lone = factories.insert_study(
        db_session, data=factories.png_bytes(), source_format="png", rows=48, columns=64
    )
    for stored in (lone, other_lone):
        db_session.get_one(Study, stored.study_id).patient_id = ""
    db_session.commit()
    user, _ = make_user("reader")
    sign_in(client, user.email)

    page = client.get(f"/studies/{current}").text
    assert f'<li data-study-id="{older}">' in page and "2024-05-02" in page
    assert f'class="button-secondary compare-button" data-study-id="{older}"' in page
    assert "No prior studies of this patient" not in page and 'id="priors-data"' in page
    page = client.get(f"/studies/{lone.study_id}").text
    assert "No prior studies of this patient" in page and "compare-button" not in page
    assert client.get(f"/api/studies/{lone.study_id}/priors").json()["priors"] == []


def test_a_reader_gets_no_priors_of_a_blinded_case(app_client, coordinator, make_cases, readers, db_session):
    earlier, case = make_cases(2)
    db_session.get_one(Study, earlier.study_id).study_date = "20230101"
    db_session.get_one(Study, case.study_id).patient_id = earlier.patient_id
    db_session.commit()
    (reader, headers), (_, other_headers) = readers(2)
    open_study(app_client, coordinator, cases=[case], reader_users=[reader], **NO_AI_FIRST)

    # The case itself is refused as its study page is; from the patient's other study it is not listed.
    refused = app_client.get(f"/api/studies/{case.study_id}/priors", headers=headers)
    assert refused.status_code == 403 and "reader study" in refused.json()["detail"]
    assert app_client.get(f"/api/studies/{earlier.study_id}/priors", headers=headers).json()["priors"] == []
    # A reader without reads of it pending, and the coordinator, get it.
    for caller in (other_headers, coordinator):
        listed = app_client.get(f"/api/studies/{earlier.study_id}/priors", headers=caller).json()["priors"]
        assert [prior["id"] for prior in listed] == [case.study_id]
        back = app_client.get(f"/api/studies/{case.study_id}/priors", headers=caller).json()["priors"]
        assert [prior["id"] for prior in back] == [earlier.study_id]
