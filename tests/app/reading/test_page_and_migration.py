"""The reading room page, the uncertainty wording, and migration 0002 up and down."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect

from app.migrations import downgrade, upgrade
from app.reading.room import uncertainty_of
from tests.app.auth.helpers import sign_in

READING_TABLES = {"reads", "assistance_events", "explanation_ratings"}


def _page_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="reading-data">(.*?)</script>', html, re.S)
    assert match, "the page has no reading data"
    return json.loads(match.group(1))


def test_reading_page_shows_forms_assistance_and_the_draft(app_client, fundus_study, make_user):
    study = fundus_study()
    user, token = make_user("reader")
    client_id = str(uuid.uuid4())
    app_client.put(f"/api/reads/{client_id}", json={"study_id": study.study_id, "answers": {"dr_grade": 3}},
                   headers={"Authorization": f"Bearer {token}"})
    with TestClient(app_client.app) as browser:
        assert "/login" in str(browser.get(f"/studies/{study.study_id}/read").url)
        sign_in(browser, user.email)
        page = browser.get(f"/studies/{study.study_id}/read")
        assert page.status_code == 200
        assert "Diabetic retinopathy (ICDR)" in page.text and "Proliferative DR" in page.text
        assert "Highlights the clinically relevant features" in page.text
        assert 'id="assist-toggle"' in page.text and "Keyboard shortcuts" in page.text
        data = _page_data(page.text)
        assert data["form"]["kind"] == "dr" and data["read"]["client_id"] == client_id
        instance = data["instances"][0]
        assert instance["colour"] is True
        methods = [heatmap["method"] for heatmap in instance["assistance"]["heatmaps"]]
        assert methods == ["gradcam", "saliency"]
        assert [h["signed"] for h in instance["assistance"]["heatmaps"]] == [False, True]
        assert browser.get("/studies/999999/read").status_code == 404


@pytest.mark.parametrize(
    ("entropy", "threshold", "referral", "top", "level", "words"),
    [
        (0.71, 0.5, True, 0.6, "uncertain", "Refer or read carefully: the model is unsure of this image (entropy 0.71, "
         "above its referral threshold 0.50)"),
        (0.21, 0.5, False, 0.9, "not_referred", "Not flagged for referral (entropy 0.21, at or below its referral "
         "threshold 0.50). Its answer has a calibrated probability of 90%."),
        # The case: 44 % was called "Confident". Never confident; and more likely wrong than right.
        (1.38, 1.488106, False, 0.44, "not_referred", "calibrated probability of 44%: by its own estimate more likely "
         "wrong than right"),
        # At the threshold the numbers never read alike beside "above": as many decimals as tell them apart.
        (1.4885, 1.488106, True, 0.3, "uncertain", "(entropy 1.4885, above its referral threshold 1.4881)"),
        (0.3, None, False, None, "unknown", "no referral threshold"),
        (None, None, False, None, "unknown", "No uncertainty estimate"),
    ],
)
def test_uncertainty_in_plain_words(entropy, threshold, referral, top, level, words):
    result = uncertainty_of(entropy=entropy, threshold=threshold, referral=referral, top_probability=top)
    assert result.level == level and words in result.text
    assert "onfident" not in result.text


def test_migration_0002_adds_and_drops_the_reading_tables(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'lumen.db'}")
    with engine.begin() as connection:
        upgrade("0001", connection=connection)
    assert not READING_TABLES & set(inspect(engine).get_table_names())
    with engine.begin() as connection:
        upgrade("0002", connection=connection)
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) >= READING_TABLES
    columns = {column["name"]: column for column in inspector.get_columns("reads")}
    assert columns["assignment_id"]["nullable"]
    assert all(fk["constrained_columns"] != ["assignment_id"] for fk in inspector.get_foreign_keys("reads"))
    with engine.begin() as connection:
        downgrade("0001", connection=connection)
    assert not READING_TABLES & set(inspect(engine).get_table_names())
    engine.dispose()


def test_an_image_outside_the_models_domain_shows_why_and_no_prediction(app_client, make_user):
    from app.db import session_scope
    from app.tables import JobState
    from tests.app.viewer import factories

    with session_scope() as session:
        data, header = factories.ct_small()
        stored = factories.insert_study(session, data=data, source_format="dicom", rows=header.Rows,
                                        columns=header.Columns, modality="CT", patient_name="Gate^Kept")
        job = factories.add_job(session, stored, state=JobState.done, progress=100)
        job.model.card = {"domain": {"body_part": "eye fundus", "photometric": "colour fundus photographs"}}
        # What the worker records when the gate refuses the image (workers/pipeline.py).
        job.timings = {"out_of_domain": 1.0, "ood_score": 880.4, "ood_threshold": 123.9, "total_s": 0.4}
        model_name = job.model.name
    user, token = make_user("reader")
    with TestClient(app_client.app) as browser:
        sign_in(browser, user.email)
        page = browser.get(f"/studies/{stored.study_id}/read")
        [instance] = _page_data(page.text)["instances"]
        assert instance["assistance"] is None
        assert instance["refusal"] == (
            f"Outside this model's domain: {model_name} was trained on colour fundus photographs, and this image "
            "does not look like them (score 880, threshold 124). No prediction or heatmap is shown."
        )
        assert "Outside this model&#39;s domain" in page.text
    worklist = app_client.get("/api/worklist", headers={"Authorization": f"Bearer {token}"}).json()["studies"]
    [row] = [row for row in worklist if row["id"] == stored.study_id]
    assert row["ai_state"] == "done" and row["ai_label"] == "outside the model's domain"


def test_the_models_best_ranked_method_comes_first_with_its_rank(app_client, fundus_study, make_user, db_session):
    from app.tables import Job

    study = fundus_study()  # gradcam and saliency maps: alphabetically gradcam would open the room
    model = db_session.get(Job, study.job_id).model
    model.card = {**model.card, "evaluation": {"explanations": {"ranking": ["integrated_gradients", "saliency",
                                                                           "gradcam"]}}}
    db_session.commit()
    user, _ = make_user("reader")
    with TestClient(app_client.app) as browser:
        sign_in(browser, user.email)
        heatmaps = _page_data(browser.get(f"/studies/{study.study_id}/read").text)["instances"][0]["assistance"][
            "heatmaps"]
    assert [(h["method"], h["rank"]) for h in heatmaps] == [("saliency", 2), ("gradcam", 3)]


def test_the_measured_accuracy_of_a_probability_band_is_quoted():
    from app.reading.room import measured_accuracy

    card = {"metrics": {"served": {"reliability": [
        {"low": 0.4, "high": 0.5, "n": 53, "accuracy": 0.3396}, {"low": 0.9, "high": 1.0, "n": 87, "accuracy": 0.8736},
    ]}}}
    assert measured_accuracy(card, 0.44) == (" On its 53 test images answered with 40%-50%, the model was right 34% "
                                             "of the time.")
    assert "87 test images" in measured_accuracy(card, 1.0)
    assert measured_accuracy(card, 0.7) == "" and measured_accuracy({}, 0.44) == ""
    text = uncertainty_of(entropy=1.38, threshold=1.49, referral=False, top_probability=0.44,
                          measured=measured_accuracy(card, 0.44)).text
    assert text.endswith("more likely wrong than right. On its 53 test images answered with 40%-50%, the model "
                         "was right 34% of the time.")


def test_the_referral_rule_quotes_what_the_card_measured():
    from app.reading.room import _referral_rule

    card = {"metrics": {"referral": {"referred_fraction": 0.2125, "threshold": 1.488106}}}
    assert _referral_rule(card) == "The threshold was fitted on validation images; it refers 21% of the test images."
    assert _referral_rule({"metrics": {}}) == "" and _referral_rule({}) == ""
