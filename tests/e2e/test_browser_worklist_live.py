"""The worklist follows the AI without a reload, in a real browser: a worklist opened while a study's job is
queued shows a study uploaded meanwhile at the top, and the job's end (state, the model's label) once the real
pipeline has run it in this process; by the server's event stream, or by polling where EventSource is missing.
With assistance switched off for the session (cookie lumen_assist=off) the label stays hidden after the update.

Same harness as the other browser tests (tests/e2e/conftest.py): the app under uvicorn in a thread, Chromium.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.ai_models import sync as models_sync
from app.db import session_scope
from app.jobs import service as jobs_service
from app.tables import AiModel, Job, Prediction
from tests.app.viewer import factories
from tests.e2e.helpers import FUNDUS_IN_DOMAIN, fresh_jpeg, sign_in
from tests.workers.conftest import no_leftover_queued_jobs  # noqa: F401 (autouse: run_job runs older urgent jobs first)
from tests.workers.jobs import queued_photo_job
from workers import pipeline

pytestmark = pytest.mark.browser


def _queued_fundus_job() -> tuple[int, int]:
    """A fundus photograph in the DR model's domain with its job queued (not sent: the test runs it); ids of
    the study and the job."""
    models_sync.sync_now()
    with session_scope() as session:
        model = jobs_service.model_for_modality(session, modality="OP")
        assert isinstance(model, AiModel)
        model_id = model.id
    job_id = queued_photo_job(fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=256), model_id=model_id, methods=["gradcam"])
    with session_scope() as session:
        return session.get_one(Job, job_id).study_id, job_id


def _shown(page, selector: str) -> int:
    return sum(1 for node in page.locator(selector).all() if node.is_visible())


@pytest.mark.parametrize(("mode", "assist"), [("stream", "on"), ("poll", "off")], ids=["event-stream", "polling"])
def test_the_worklist_shows_the_job_end_without_a_reload(server, browser, make_user, mode: str, assist: str):
    study_id, job_id = _queued_fundus_job()
    user, _ = make_user("coordinator")
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.add_cookies([{"name": "lumen_assist", "value": assist, "url": server}])
    if mode == "poll":
        context.add_init_script("delete window.EventSource")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, user.email)
    row = page.locator(f'tr[data-study-id="{study_id}"]')
    assert row.locator(".badge-queued").is_visible()
    page.wait_for_function("(mode) => window.lumen.live.follower.mode === mode", arg=mode)
    page.evaluate("() => { window.__opened = true; }")

    # A study uploaded meanwhile comes in at the top.
    with session_scope() as session:
        new = factories.insert_study(
            session, data=factories.png_bytes(width=80), source_format="png", rows=48, columns=80,
            patient_name="Arrived^Meanwhile",
        )
    page.locator(f'tbody tr:first-child[data-study-id="{new.study_id}"]').wait_for(timeout=20_000)
    assert "Arrived^Meanwhile" in page.inner_text("tbody tr:first-child")

    assert pipeline.run_job(job_id, worker="browser-test") == pipeline.Outcome.done
    with session_scope() as session:
        label = session.scalars(select(Prediction.label).where(Prediction.job_id == job_id)).one()
    row.locator(".badge-done").wait_for(timeout=15_000)
    assert row.locator(".ai-label").inner_text() == label
    if assist == "on":
        assert row.locator(".ai-label").is_visible()
    else:  # in the page, as the server renders it, and hidden with the rest of the assistance
        assert page.evaluate("() => document.body.classList.contains('assist-off')")
        assert _shown(page, ".ai-label") == 0 and _shown(page, ".badge-refer") == 0

    assert page.evaluate("() => window.__opened") is True  # never reloaded
    assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1
    assert errors == []
    context.close()
