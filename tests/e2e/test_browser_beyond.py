"""Explanations beyond heatmaps in a real browser: the reading room of a fundus photograph that the served DR
model read (a real job, run in this process) shows its written justification, its concept evidence and its five
nearest confirmed cases with their thumbnails, each rateable; in a reader study each assistance condition shows
its own explanation and nothing of the others.

Same harness as test_browser_live.py (whose sign-in it uses): the app under uvicorn in a thread, Debian's Chromium
via Playwright, at 1280 x 800.
"""

from __future__ import annotations

import io
import secrets
import uuid
from datetime import UTC, datetime

import pytest
from PIL import Image
from sqlalchemy import select

from app.db import session_scope
from app.reading import beyond
from app.tables import ExplanationRating, Job, Prediction
from tests.app.viewer import factories
from tests.e2e.helpers import FUNDUS_IN_DOMAIN, fresh_jpeg
from tests.e2e.test_browser_live import _signed_in
from tests.workers.jobs import fundus_model_id
from workers import pipeline

pytestmark = pytest.mark.browser
PANELS = {"justification": ".beyond-justification", "concepts": ".beyond-concepts", "similar_cases": ".beyond-similar"}


def _read_fundus(max_side: int = 512) -> tuple[int, int]:
    """A fundus photograph stored as a study and read by the served DR model; (study id, prediction id)."""
    photo = fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=max_side)
    width, height = Image.open(io.BytesIO(photo)).size
    model_id = fundus_model_id()
    with session_scope() as session:
        stored = factories.insert_study(session, data=photo, source_format="jpeg", rows=height, columns=width,
                                        modality="OP", photometric="RGB", description="Fundus",
                                        patient_name=f"Beyond^{secrets.token_hex(3)}")
        job = Job(study_id=stored.study_id, instance_id=stored.instance_id, model_id=model_id, methods=["gradcam"],
                  queue="gpu", sent_at=datetime.now(UTC))
        session.add(job)
        session.flush()
        job_id = job.id
    assert pipeline.run_job(job_id, worker="browser-test") == pipeline.Outcome.done
    with session_scope() as session:
        prediction_id = session.scalar(select(Prediction.id).where(Prediction.job_id == job_id))
        return stored.study_id, prediction_id


def _thumbnails_loaded(page) -> int:
    return page.evaluate(
        "() => [...document.querySelectorAll('#beyond-view img')].filter(i => i.complete && i.naturalWidth > 0)"
        ".length"
    )


def test_the_reading_room_shows_and_rates_each_explanation(server, browser, make_user, test_output):
    study_id, prediction_id = _read_fundus()
    reader, _ = make_user("reader")
    context, page, errors = _signed_in(browser, server, reader)
    page.goto(f"{server}/studies/{study_id}/read")
    page.wait_for_function("() => performance.getEntriesByName('lumen:overlay').length > 0", timeout=20_000)
    with session_scope() as session:
        prediction = session.get(Prediction, prediction_id)
        label, similar, concepts = prediction.label, prediction.similar_cases, prediction.concepts
        composed = beyond.justification_of(prediction, top_probability=beyond.top_probability(prediction))
    # Listed with the heatmap methods; the map is what opens, with its controls.
    beyond_options = page.eval_on_selector_all('#method optgroup[label="Beyond heatmaps"] option',
                                               "options => options.map(o => o.value)")
    assert beyond_options == ["beyond:justification", "beyond:concepts", "beyond:similar_cases"]
    assert page.locator("#beyond-view").is_hidden() and page.locator("#opacity").is_visible()
    panel = page.locator("#ai-panel").bounding_box()

    page.select_option("#method", "beyond:justification")
    sentences = page.locator("#beyond-view .justification-sentence").all_inner_texts()
    assert sentences == composed and sentences[0].startswith(f"The model grades this image {label}")
    assert page.locator("#opacity").is_hidden()  # in the map controls' place: the panel keeps its size
    assert page.locator("#ai-panel").bounding_box() == panel

    page.select_option("#method", "beyond:concepts")
    assert page.locator("#beyond-view .concept").count() == len(concepts)
    assert page.locator("#beyond-view .concept-name").first.inner_text() == concepts[0]["concept"]
    page.locator("#ai-panel").screenshot(path=str(test_output / "beyond-panel-concepts.png"))

    page.select_option("#method", "beyond:similar_cases")
    assert page.locator("#beyond-view .similar-case").count() == 5
    agreeing = sum(_label_index(page) in case["label_indices"] for case in similar)
    summary = page.inner_text("#beyond-view .similar-summary")
    assert summary == f"{agreeing} of the 5 most similar confirmed cases were graded {label}."
    page.wait_for_function(
        "() => [...document.querySelectorAll('#beyond-view img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=10_000,
    )
    assert _thumbnails_loaded(page) == 5
    page.locator("#ai-panel").screenshot(path=str(test_output / "beyond-panel-similar.png"))

    # The rating form rates the explanation picked.
    assert page.inner_text("#rating-method").startswith("Similar confirmed cases")
    page.click('#rating-form fieldset[data-question="trust"] label:has(input[value="4"])')
    page.click('#rating-form button[type="submit"]')
    page.wait_for_function("() => document.getElementById('rating-status').textContent.includes('Rating saved')")
    with session_scope() as session:
        rating = session.scalar(select(ExplanationRating).where(ExplanationRating.reader_id == reader.id))
        assert (rating.method, rating.prediction_id, rating.heatmap_id) == ("similar_cases", prediction_id, None)
        assert rating.answers == {"trust": 4}
    # Turning to a heatmap method brings the map controls back and puts the form on the map.
    page.select_option("#method", index=0)
    assert page.locator("#beyond-view").is_hidden() and page.locator("#opacity").is_visible()
    assert not page.inner_text("#rating-method").startswith("Similar")
    assert errors == []
    context.close()


def _label_index(page) -> int:
    return page.evaluate("() => JSON.parse(document.getElementById('reading-data').textContent)"
                         ".instances[0].assistance.label_index")


def test_each_assistance_condition_shows_only_its_explanation(server, browser, make_user, test_output):
    import httpx

    studies = [_read_fundus(max_side=384)[0] for _ in range(3)]
    coordinator, coordinator_token = make_user("coordinator")
    reader, _ = make_user("reader")
    headers = {"Authorization": f"Bearer {coordinator_token}"}
    conditions = [
        {"key": "similar", "kind": "prediction_similar", "label": "Similar cases"},
        {"key": "concepts", "kind": "prediction_concepts", "label": "Concept evidence"},
        {"key": "text", "kind": "prediction_justification", "label": "Justification"},
    ]
    with httpx.Client(base_url=server, headers=headers) as api, session_scope() as session:
        from app.tables import Study

        uids = [session.get(Study, study_id).study_instance_uid for study_id in studies]
        created = api.post("/api/reader-studies", json={"name": f"beyond-{uuid.uuid4().hex[:6]}",
                                                         "conditions": conditions, "seed": 2})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        csv_text = "study_instance_uid,dr_grade,dme\n" + "".join(f"{uid},2,no\n" for uid in uids)
        assert api.post(f"/api/reader-studies/{sid}/reference", content=csv_text,
                        headers={"Content-Type": "text/csv"}).status_code == 200
        assert api.post(f"/api/reader-studies/{sid}/readers", json={"emails": [reader.email]}).status_code == 200
        assert api.post(f"/api/reader-studies/{sid}/open", json={}).status_code == 200

    context, page, errors = _signed_in(browser, server, reader)
    seen = {}
    for _ in range(3):
        page.goto(f"{server}/reader-studies/{sid}/queue?go=next")
        page.wait_for_selector("#ai-panel .assist-instance", timeout=20_000)
        kind = page.evaluate("() => JSON.parse(document.getElementById('reading-data').textContent).assignment.kind")
        page.wait_for_timeout(200)
        shown = {name for name, selector in PANELS.items() if page.locator(selector).count()}
        seen[kind] = shown
        page.locator("#ai-panel").screenshot(path=str(test_output / f"beyond-{kind}.png"))
        # The one explanation shown is the list's only entry, open at once, and what the rating form rates.
        [only] = page.eval_on_selector_all("#method option", "os => os.map(o => o.value)")
        assert only == f"beyond:{next(iter(shown))}" and page.locator("#beyond-view").is_visible()
        assert page.inner_text("#rating-method").split(" (")[0] in {
            "Similar confirmed cases", "Concept evidence", "Written justification"}
        for name, value in (("dr_grade", "2"), ("dme", "false"), ("confidence", "4")):
            page.click(f'label:has(input[name="{name}"][value="{value}"])')
        page.click("#submit-read")
        page.wait_for_selector("#next-case:not([hidden])", timeout=10_000)
    assert seen == {"prediction_similar": {"similar_cases"}, "prediction_concepts": {"concepts"},
                    "prediction_justification": {"justification"}}
    assert errors == []
    context.close()
