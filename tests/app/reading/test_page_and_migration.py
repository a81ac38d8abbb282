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
    ("entropy", "threshold", "referral", "level", "words"),
    [
        (0.71, 0.5, True, "uncertain", "Uncertain: 0.71 entropy, above this model's referral threshold (0.50)"),
        (0.21, 0.5, False, "confident", "Confident: 0.21 entropy, below this model's referral threshold (0.50)"),
        (0.3, None, False, "unknown", "no referral threshold"),
        (None, None, False, "unknown", "No uncertainty estimate"),
    ],
)
def test_uncertainty_in_plain_words(entropy, threshold, referral, level, words):
    result = uncertainty_of(entropy=entropy, threshold=threshold, referral=referral)
    assert result.level == level and words in result.text


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
