"""The reading room in a real browser: window/level, the assistance switch that moves nothing, heatmap
opacity and method, a submitted grade and an explanation rating, checked in Postgres.

Same harness as test_browser_worklist.py: the app under uvicorn in a thread, Debian's Chromium via Playwright.
"""

from __future__ import annotations

import secrets

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from app.db import session_scope
from app.tables import AiModel, AssistanceEvent, ExplanationRating, Job, JobState, Prediction, Read
from tests.app.reading.conftest import add_heatmap
from tests.app.viewer import factories
from tests.conftest import FIXTURES
from tests.e2e.helpers import DEMO, fresh_dicom, fresh_jpeg, sign_in

pytestmark = pytest.mark.browser

ICDR = ["none", "mild", "moderate", "severe NPDR", "PDR"]
# Elements that must not move when the assistance is hidden.
STILL = ["#stage", ".toolbar", "#ai-panel", "#read-form", "#submit-read", "#heatmap-controls", ".grade-panel"]


def fundus_with_heatmaps() -> tuple[int, list[int]]:
    """A real fundus photograph (IDRiD) with a 5-grade DR prediction, unsure, and two heatmaps."""
    with session_scope() as session:
        data = fresh_jpeg(DEMO / "IDRiD_02.jpg", max_side=1024)
        stored = factories.insert_study(session, data=data, source_format="jpeg", rows=680, columns=1024,
                                        modality="OP", photometric="RGB", patient_name="Fundus^Reader",
                                        description="Fundus photographs")
        model = AiModel(name="dr-densenet", version=secrets.token_hex(4), task="dr_grading", labels=ICDR,
                        modalities=["ZZ"], input_spec={}, weights_sha256="0" * 64, card={}, is_active=False,
                        uncertainty_threshold=0.5)
        session.add(model)
        session.flush()
        job = Job(study_id=stored.study_id, instance_id=stored.instance_id, model_id=model.id,
                  methods=["gradcam", "integrated_gradients"], state=JobState.done, progress=100)
        session.add(job)
        session.flush()
        prediction = Prediction(job_id=job.id, instance_id=stored.instance_id, model_id=model.id,
                                probabilities=[0.05, 0.15, 0.55, 0.2, 0.05], label="moderate", label_index=2,
                                predictive_entropy=0.71, referral=True)
        session.add(prediction)
        session.flush()
        y, x = np.mgrid[0:170, 0:256].astype(np.float32)
        blob = np.exp(-(((y - 70) / 30) ** 2 + ((x - 150) / 40) ** 2))
        signed = blob - 0.6 * np.exp(-(((y - 110) / 25) ** 2 + ((x - 80) / 30) ** 2))
        ids = [add_heatmap(session, prediction.id, method=method, array=array, target_class=2).id
               for method, array in (("gradcam", blob), ("integrated_gradients", signed))]
        return stored.study_id, ids


def _boxes(page) -> dict[str, dict]:
    return {selector: page.locator(selector).bounding_box() for selector in STILL}


def _centre_pixels(page) -> list[int]:
    return page.evaluate("""() => {
        const c = document.getElementById('image-canvas');
        const d = c.getContext('2d').getImageData(c.width / 2 - 40, c.height / 2 - 40, 80, 80).data;
        return Array.from(d.filter((_, i) => i % 64 === 0));
    }""")


def _wait_mark(page, name: str) -> None:
    page.wait_for_function(f"() => performance.getEntriesByName('lumen:{name}').length > 0", timeout=20_000)


def test_reading_room(server, browser, make_user, test_output):
    coordinator, token = make_user("coordinator")
    upload = httpx.post(f"{server}/api/studies", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                        files={"files": ("rg1.dcm", fresh_dicom(FIXTURES / "dicom" / "RG1_J2KI.dcm"))})
    assert upload.status_code == 201, upload.text
    radiograph = upload.json()["id"]
    fundus, heatmap_ids = fundus_with_heatmaps()
    reader, _ = make_user("reader")

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, reader.email)

    # The worklist: filter, then j and Enter open the reading room. A reader's worklist names patients by
    # pseudonym (app/visibility.py): filter by the radiograph's. Every upload of RG1 in this session's database
    # is the same patient, so the filter keeps them all: j walks down them to this test's.
    pseudonym = page.inner_text(f'tr[data-study-id="{radiograph}"] a.patient')
    assert pseudonym.startswith("P-") and "RG1" not in page.content()
    page.fill("#filter-text", pseudonym)
    assert page.locator(f'tr[data-study-id="{fundus}"]').is_hidden()
    shown = page.eval_on_selector_all("tr[data-study-id]", "rows => rows.filter((r) => !r.hidden).map((r) => "
                                      "r.querySelector('a.patient').textContent)")
    assert shown and set(shown) == {pseudonym}
    page.keyboard.press("Escape")
    walked = []
    for _ in shown:
        page.keyboard.press("j")
        walked.append(page.evaluate("() => document.querySelector('tr.selected')?.dataset.studyId"))
        if walked[-1] == str(radiograph):
            break
    assert walked[-1] == str(radiograph) and len(set(walked)) == len(walked), walked  # one row further each time
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server}/studies/{radiograph}/read")

    # The radiograph: raw values windowed in the browser; a preset key and a drag change the pixels.
    _wait_mark(page, "full-image")
    assert "W 30000" in page.inner_text("#hud-window")
    before = _centre_pixels(page)
    page.keyboard.press("2")  # Auto (1-99th percentile)
    page.wait_for_function("() => !document.getElementById('hud-window').textContent.includes('W 30000')")
    after_preset = _centre_pixels(page)
    assert after_preset != before
    box = page.locator("#stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2 + 60, steps=4)
    page.mouse.up()
    page.wait_for_timeout(100)
    assert _centre_pixels(page) != after_preset
    assert "nodule" in page.inner_text(".grade-panel").lower()
    page.screenshot(path=str(test_output / "reading-radiograph.png"))

    # The fundus photograph with its overlay; the assistance switch (key A) moves nothing.
    page.goto(f"{server}/studies/{fundus}/read")
    _wait_mark(page, "overlay")
    assert "Refer or read carefully: the model is unsure of this image (entropy 0.71, above its referral threshold " \
        "0.50)" in page.inner_text("#ai-panel")
    boxes = _boxes(page)
    page.keyboard.press("a")
    assert page.eval_on_selector("#overlay-canvas", "el => getComputedStyle(el).visibility") == "hidden"
    assert not page.locator(".histogram").is_visible()
    assert page.locator(".assist-off-note").is_visible()
    assert _boxes(page) == boxes
    page.keyboard.press("a")
    assert page.eval_on_selector("#overlay-canvas", "el => getComputedStyle(el).visibility") == "visible"
    assert _boxes(page) == boxes

    page.fill("#opacity", "80")
    assert page.eval_on_selector("#overlay-canvas", "el => el.style.opacity") == "0.8"
    page.dispatch_event("#opacity", "change")
    page.select_option("#method", str(heatmap_ids[1]))
    page.wait_for_function("() => document.getElementById('cb-low').textContent.startsWith('-')")
    assert "Integrated gradients" in page.inner_text("#rating-method")
    page.screenshot(path=str(test_output / "reading-fundus-overlay.png"))

    # Rate the explanation shown, then grade and submit.
    for question, value in (("relevant", 4), ("trust", 3), ("misleading", 2)):
        page.click(f'label:has(input[name="q-{question}"][value="{value}"])')
    page.fill("#rating-comment", "lights up the haemorrhages")
    page.click("#rating-form button[type=submit]")
    page.locator("#rating-status.ok").wait_for(timeout=10_000)
    page.click('label:has(input[name="dr_grade"][value="2"])')
    page.click('label:has(input[name="dme"][value="false"])')
    page.click('label:has(input[name="confidence"][value="4"])')
    page.locator("#read-status", has_text="Draft saved").wait_for(timeout=10_000)
    page.keyboard.press("Control+Enter")
    page.locator("#read-status.ok", has_text="Submitted").wait_for(timeout=10_000)
    page.evaluate("() => window.lumen.events.flush()")
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.screenshot(path=str(test_output / "reading-help.png"))
    assert errors == []

    with session_scope() as session:
        read = session.scalar(select(Read).where(Read.reader_id == reader.id, Read.study_id == fundus))
        assert read is not None and read.state.value == "submitted"
        assert (read.dr_grade, read.dme, read.confidence, read.assisted) == (2, False, 4, True)
        assert read.assistance["method"] == "integrated_gradients" and read.assistance["opacity"] == 0.8
        assert 0 < read.time_spent_seconds < 60
        rating = session.scalar(select(ExplanationRating).where(ExplanationRating.reader_id == reader.id))
        assert rating is not None and rating.heatmap_id == heatmap_ids[1]
        assert rating.method == "integrated_gradients"
        assert rating.answers == {"relevant": 4, "trust": 3, "misleading": 2}
        events = session.scalars(select(AssistanceEvent.event).where(AssistanceEvent.study_id == fundus)).all()
        assert {"shown", "hidden", "opacity_changed", "method_changed"} <= set(events)
