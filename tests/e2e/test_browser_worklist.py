"""The pages in a real browser: sign in, worklist with live progress and upload, study page with overlay.

The real app runs under uvicorn in a thread (same database and settings as the test session); Playwright
drives Debian's Chromium. Screenshots go to test-output/ for a person to look at.
"""

from __future__ import annotations

import pytest
from PIL import Image
from sqlalchemy import select

from app.db import session_scope
from app.tables import Job, JobState, Study
from tests.app.auth.helpers import PASSWORD
from tests.app.viewer import factories
from tests.conftest import FIXTURES
from tests.e2e.helpers import fresh_dicom

pytestmark = pytest.mark.browser



def _chest_study() -> factories.StoredStudy:
    """A real chest radiograph (JPEG 2000, MONOCHROME1) with a finished job, prediction and heatmap."""
    with session_scope() as session:
        stored = factories.insert_study(
            session,
            data=fresh_dicom(FIXTURES / "dicom" / "RG1_J2KI.dcm"),
            source_format="dicom",
            rows=1955,
            columns=1841,
            modality="CR",
            photometric="MONOCHROME1",
            patient_name="Browser^Test",
            description="Chest PA",
        )
        job = factories.add_job(session, stored, state=JobState.done, progress=100)
        prediction, heatmap = factories.add_prediction(session, job)
        return factories.StoredStudy(stored.study_id, stored.instance_id, job.id, prediction.id, heatmap.id)


def _running_study() -> tuple[factories.StoredStudy, int]:
    with session_scope() as session:
        png = factories.png_bytes(width=96, height=64)
        stored = factories.insert_study(
            session, data=png, source_format="png", rows=64, columns=96, patient_name="Live^Progress"
        )
        job = factories.add_job(session, stored, state=JobState.running, progress=30)
        return stored, job.id


def _set_job(job_id: int, *, state: JobState, progress: int) -> None:
    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        job.state, job.progress = state, progress
        if state == JobState.done:
            factories.add_prediction(session, job)


def test_sign_in_worklist_study_page_and_assistance_toggle(server, browser, make_user, test_output, tmp_path):
    user, _ = make_user("coordinator")
    chest = _chest_study()
    live, live_job = _running_study()
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # Signing in: anonymous visitors land on the login form, and come back to the worklist.
    page.goto(server + "/")
    assert "/login" in page.url
    page.fill('input[name="email"]', user.email)
    page.fill('input[name="password"]', "wrong password")
    page.click('button[type="submit"]')
    assert "Wrong email or password." in page.inner_text(".alert-error")
    page.screenshot(path=str(test_output / "browser-login-error.png"))
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url(server + "/")

    # The worklist, with live progress: the page polls /api/worklist while a job runs.
    chest_row = page.locator(f'tr[data-study-id="{chest.study_id}"]')
    assert "Browser^Test" in chest_row.inner_text() and "abnormal" in chest_row.inner_text()
    live_row = page.locator(f'tr[data-study-id="{live.study_id}"]')
    assert "30%" in live_row.inner_text()
    _set_job(live_job, state=JobState.running, progress=80)
    live_row.locator(".progress-text", has_text="80%").wait_for(timeout=10_000)
    page.screenshot(path=str(test_output / "browser-worklist-running.png"))
    _set_job(live_job, state=JobState.done, progress=100)
    live_row.locator(".badge-done").wait_for(timeout=10_000)
    assert "abnormal" in live_row.inner_text()

    # Upload through the form (fetch with the CSRF header): a refusal shows the API's reason...
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files('#upload-form input[type="file"]', str(bad))
    page.click("#upload-form button")
    page.locator("#upload-status.error").wait_for(timeout=10_000)
    assert "Upload refused" in page.inner_text("#upload-status")
    # ...and a real file becomes a new row.
    good = tmp_path / "chest.dcm"
    good.write_bytes(fresh_dicom(FIXTURES / "dicom" / "RG1_J2KI.dcm"))
    page.set_input_files('#upload-form input[type="file"]', str(good))
    page.click("#upload-form button")
    page.locator("#upload-status.ok").wait_for(timeout=30_000)
    new_id = int(page.inner_text("#upload-status").split()[1])
    page.locator(f'tr[data-study-id="{new_id}"]').wait_for(timeout=10_000)
    # A chest radiograph as a PNG has no header: without saying what it shows it is refused with the field to
    # fill; as a CR chest radiograph it is stored as one (never graded as a fundus photograph).
    png = tmp_path / "radiograph.png"
    Image.open(FIXTURES.parent.parent / "data" / "cxr" / "00000001_000.png").convert("L").resize((256, 256)).save(png)
    page.set_input_files('#upload-form input[type="file"]', str(png))
    page.click("#upload-form button")
    page.locator("#upload-status.error").wait_for(timeout=10_000)
    assert "'modality'" in page.inner_text("#upload-status")
    page.select_option("#image-origin", "CR|CHEST")
    page.set_input_files('#upload-form input[type="file"]', str(png))
    page.click("#upload-form button")
    page.locator("#upload-status.ok").wait_for(timeout=30_000)
    chest_png_id = int(page.inner_text("#upload-status").split()[1])
    with session_scope() as session:
        stored = session.get(Study, chest_png_id)
        assert stored is not None and stored.modality == "CR" and stored.series[0].body_part == "CHEST"
    page.screenshot(path=str(test_output / "browser-worklist.png"), full_page=True)

    # The study page: the image loads, the heatmap lies over it, and one switch hides all assistance.
    chest_row.locator("a.patient").click()
    page.wait_for_url(f"{server}/studies/{chest.study_id}")
    page.wait_for_function(
        "() => { const i = document.querySelector('img.frame'); return i.complete && i.naturalWidth > 0; }"
    )
    page.wait_for_function("() => document.querySelector('img.overlay').naturalWidth > 0")
    assert page.locator("img.overlay").is_visible()
    assert "abnormal" in page.inner_text("#ai-panel")
    page.fill(".opacity-slider", "80")
    assert page.eval_on_selector("img.overlay", "el => el.style.opacity") == "0.8"
    page.screenshot(path=str(test_output / "browser-study.png"), full_page=True)
    page.uncheck("#assist-toggle")
    assert not page.locator("img.overlay").is_visible()
    assert not page.locator("#ai-panel").is_visible()
    assert page.locator(".assist-hidden-note").is_visible()
    page.screenshot(path=str(test_output / "browser-study-unassisted.png"), full_page=True)
    page.check("#assist-toggle")
    assert page.locator("img.overlay").is_visible()

    # Signing out ends the session.
    page.click("text=Sign out")
    page.wait_for_url(server + "/login")
    page.goto(server + "/")
    assert "/login" in page.url
    assert errors == []
