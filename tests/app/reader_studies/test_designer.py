"""The designer's rules on the server: a case the study's task does not read is refused when it is added (with
the reason), the picker offers only what the task reads, the read form follows the task and the image, and an
arm without a heatmap carries no rating questions."""

from __future__ import annotations

import io
import uuid

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from app.reading import room, vocabulary
from app.tables import Series, StudyCase
from tests.app.reader_studies.conftest import create_study, open_study
from tests.app.reading.conftest import fundus_jpeg
from tests.app.viewer import factories


def _png(mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3) if mode == "RGB" else (32, 48), 90, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _stored(session, *, modality: str, body_part: str, colour: bool, description: str) -> int:
    """A stored study of one image, as an upload with this modality and body part would leave it."""
    stored = factories.insert_study(
        session,
        data=_png("RGB" if colour else "L") if modality != "OP" else fundus_jpeg(),
        source_format="png" if modality != "OP" else "jpeg",
        rows=32,
        columns=48,
        modality=modality,
        photometric="RGB" if colour else "MONOCHROME2",
        description=description,
    )
    series = session.scalar(select(Series).where(Series.study_id == stored.study_id))
    series.body_part, series.description = body_part, description
    return stored.study_id


def _case_count(session, reader_study_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(StudyCase).where(StudyCase.reader_study_id == reader_study_id)
    )


def test_a_case_of_the_wrong_kind_is_refused_when_added_with_the_reason(app_client, coordinator, db_session):
    mr = _stored(db_session, modality="MR", body_part="SHOULDER", colour=False, description="Shoulder sag T1")
    chest = _stored(db_session, modality="CR", body_part="CHEST", colour=False, description="CR chest images")
    grey_op = _stored(db_session, modality="OP", body_part="EYE", colour=False, description="Grey photograph")
    fundus = _stored(db_session, modality="OP", body_part="EYE", colour=True, description="Fundus photographs")
    db_session.commit()

    dr = create_study(app_client, coordinator)
    url = f"/api/reader-studies/{dr['id']}/cases"
    refused = app_client.post(url, json={"study_ids": [fundus, mr, chest]}, headers=coordinator)
    assert refused.status_code == 422
    reason = refused.json()["detail"]
    assert f"study {mr} (MR SHOULDER, Shoulder sag T1): not a colour fundus photograph (OP or XC)" in reason
    assert f"study {chest} (CR CHEST, CR chest images): not a colour fundus photograph" in reason
    assert "the only image a DR grading study reads" in reason and f"study {fundus} " not in reason
    assert _case_count(db_session, dr["id"]) == 0  # the good one was not added either
    grey = app_client.post(url, json={"study_ids": [grey_op]}, headers=coordinator)
    assert grey.status_code == 422 and "not a colour fundus photograph" in grey.json()["detail"]
    assert app_client.post(url, json={"study_ids": [fundus]}, headers=coordinator).json() == {"added": 1}

    finding = create_study(app_client, coordinator, task="binary_finding", finding="effusion")
    url = f"/api/reader-studies/{finding['id']}/cases"
    wrong = app_client.post(url, json={"study_ids": [fundus]}, headers=coordinator)
    assert wrong.status_code == 422
    assert "not a chest radiograph (CR or DX of the chest), the only image a binary finding study reads" in wrong.text
    assert app_client.post(url, json={"study_ids": [chest]}, headers=coordinator).json() == {"added": 1}
    # The reference CSV adds its cases through the same check.
    uid = app_client.get(f"/api/studies/{mr}", headers=coordinator).json()["study_instance_uid"]
    csv = app_client.post(
        f"/api/reader-studies/{finding['id']}/reference",
        content=f"study_instance_uid,finding\n{uid},present\n",
        headers={**coordinator, "Content-Type": "text/csv"},
    )
    assert csv.status_code == 422 and "MR SHOULDER" in csv.text


def test_the_picker_offers_only_what_the_task_reads(app_client, coordinator, db_session):
    mr = _stored(db_session, modality="MR", body_part="SHOULDER", colour=False, description="Shoulder sag T1")
    chest = _stored(db_session, modality="DX", body_part="CHEST", colour=False, description="PA chest")
    fundus = _stored(db_session, modality="OP", body_part="EYE", colour=True, description="Fundus photographs")
    db_session.commit()
    for task, offered, not_offered in (("dr_grading", fundus, (mr, chest)), ("binary_finding", chest, (mr, fundus))):
        study = create_study(app_client, coordinator, task=task, finding="effusion" if task == "binary_finding" else "")
        answer = app_client.get(f"/api/reader-studies/{study['id']}/candidates", headers=coordinator)
        assert answer.status_code == 200, answer.text
        listed = {item["study_id"]: item for item in answer.json()["candidates"]}
        assert offered in listed and not set(not_offered) & set(listed)
        assert answer.json()["not_shown"] >= 2
        item = listed[offered]
        assert (
            item["accepted"] and item["thumbnail_url"] == f"/api/instances/{item['instance_id']}/image.png?max_size=512"
        )
        assert app_client.get(item["thumbnail_url"], headers=coordinator).headers["content-type"] == "image/png"
        page = app_client.get(f"/reader-studies/{study['id']}", headers=coordinator).text
        assert f'data-study-id="{offered}"' in page and f'data-study-id="{not_offered[0]}"' not in page
        assert item["description"] in page


def test_one_vocabulary_gives_the_form_per_modality_and_body_part(app_client, auth_headers, db_session):
    assert vocabulary.form_for("OP", "EYE") == vocabulary.form_for("XC") == "dr"
    assert vocabulary.form_for("CR", "CHEST") == vocabulary.form_for("DX") == vocabulary.form_for("CT") == "finding"
    assert vocabulary.form_for("MR", "SHOULDER") == vocabulary.form_for("CR", "HAND") == "generic"
    assert vocabulary.form_for("US") == vocabulary.form_for("OT") == "generic"
    assert vocabulary.image_kind("OP", "EYE", colour=False) == "other"
    chest, generic = room.form_config("finding"), room.form_config("generic")
    assert [c.label for c in chest.findings] == ["Nodule", "No nodule", "Other finding"]
    assert [c.value for c in generic.findings] == ["present", "absent"]

    # A clinical read of a shoulder MR: the generic form, which has no nodule.
    mr = _stored(db_session, modality="MR", body_part="SHOULDER", colour=False, description="Shoulder sag T1")
    db_session.commit()
    headers = auth_headers("coordinator")
    page = app_client.get(f"/studies/{mr}/read", headers=headers)
    assert page.status_code == 200 and "Finding present" in page.text and "Nodule" not in page.text
    url = f"/api/reads/{uuid.uuid4()}/submit"
    nodule = app_client.post(
        url, json={"study_id": mr, "answers": {"finding": "nodule", "confidence": 3}}, headers=headers
    )
    assert nodule.status_code == 422 and "the generic form's findings are present, absent" in nodule.text
    body = {"study_id": mr, "answers": {"finding": "present", "confidence": 3, "note": "rotator cuff tear"}}
    read = app_client.post(url, json=body, headers=headers)
    assert read.status_code == 201, read.text
    assert (read.json()["form"], read.json()["finding"]) == ("generic", "present")


def test_an_arm_without_a_heatmap_asks_no_rating_questions(app_client, coordinator, make_cases, readers):
    cases = make_cases(3)
    ((user, headers),) = readers(1)
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user], seed=5)
    questions = {}
    for _ in range(3):
        queue = app_client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()
        item = next(entry for entry in queue["assignments"] if entry["available"])
        view = app_client.get(f"/api/assignments/{item['id']}", headers=headers).json()
        kind = view["assignment"]["kind"]
        questions[kind] = [q["value"] for q in view["form"]["questions"]]
        heatmaps = (view["instances"][0]["assistance"] or {}).get("heatmaps", [])
        assert (len(heatmaps) == 1) == (kind == "prediction_heatmap")
        body = {"answers": {"dr_grade": 1, "dme": False, "confidence": 3}, "time_spent_seconds": 2}
        submitted = app_client.post(
            f"/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit", json=body, headers=headers
        )
        assert submitted.status_code == 201, submitted.text
    assert questions == {"unassisted": [], "prediction": [], "prediction_heatmap": ["relevant", "trust", "misleading"]}
