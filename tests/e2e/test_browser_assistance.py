"""One assistance switch per browser session, in a real browser: switched off on the study page, the worklist
(in the same tab, and in another tab at once) shows no model labels or referral flags, and the reading room
opens with the assistance hidden; switched on again, they come back.

Same harness as test_browser_worklist.py: the app under uvicorn in a thread, Debian's Chromium via Playwright.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from app.db import session_scope
from app.tables import Prediction
from tests.app.viewer import factories
from tests.e2e.helpers import sign_in

pytestmark = pytest.mark.browser


def _referred_study() -> int:
    """A study whose model said "abnormal", unsure: a label and a referral flag on the worklist."""
    with session_scope() as session:
        stored = factories.done_study(session, patient_name="Assist^Ada")
        session.execute(update(Prediction).where(Prediction.id == stored.prediction_id).values(referral=True))
        return stored.study_id


def _shown(page, selector: str) -> int:
    return sum(1 for node in page.locator(selector).all() if node.is_visible())


def test_assistance_off_on_the_study_page_hides_ai_on_the_worklist(server, browser, make_user):
    study_id = _referred_study()
    user, _ = make_user("coordinator")
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, user.email)
    row = f'tr[data-study-id="{study_id}"]'
    assert page.locator(f"{row} .ai-label").inner_text() == "abnormal"
    assert page.locator(f"{row} .badge-refer").is_visible()
    other = context.new_page()  # a second tab of the same session, on the worklist
    other.goto(server + "/")
    assert other.locator(f"{row} .badge-refer").is_visible()

    page.goto(f"{server}/studies/{study_id}")
    page.uncheck("#assist-toggle")
    # The other tab follows at once, without a reload.
    other.wait_for_function("() => document.body.classList.contains('assist-off')", timeout=5_000)
    assert _shown(other, ".ai-label") == 0 and _shown(other, ".badge-refer") == 0

    # The worklist in the same tab: no model label, no referral flag, from the server's first answer on.
    response = page.goto(server + "/")
    assert response is not None and '<body class="assist-off">' in response.text()
    assert page.locator(f"{row} .ai-label").count() == 1  # in the page, not on screen
    assert _shown(page, ".ai-label") == 0 and _shown(page, ".badge-refer") == 0
    assert page.locator(f"{row} .badge-done").is_visible()  # the job's state is not assistance

    # The reading room opens with the assistance off, its switch unchecked.
    page.goto(f"{server}/studies/{study_id}/read")
    assert page.evaluate("() => document.body.classList.contains('assist-off')")
    assert not page.is_checked("#assist-toggle")

    # Switched on again there: the other tab shows the label again when it gets the focus.
    page.keyboard.press("a")
    assert page.is_checked("#assist-toggle")
    other.bring_to_front()
    other.wait_for_function("() => !document.body.classList.contains('assist-off')", timeout=5_000)
    assert other.locator(f"{row} .ai-label").is_visible() and other.locator(f"{row} .badge-refer").is_visible()
    page.goto(server + "/")
    assert page.locator(f"{row} .ai-label").is_visible()
    assert errors == []
    context.close()
