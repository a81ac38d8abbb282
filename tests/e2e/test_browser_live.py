"""Live updates in a real browser: a reading room and a study page opened while the study's job runs show the
prediction, each heatmap and its scores as the test commits them (what the worker commits), without a reload,
keeping the reader's form, zoom and window; with EventSource taken away, the study page polls instead.

Same harness as test_browser_reading.py: the app under uvicorn in a thread, Debian's Chromium via Playwright.
"""

from __future__ import annotations

import pytest

from app.db import session_scope
from tests.app.live.conftest import LiveJob, queued_study
from tests.e2e.helpers import sign_in

pytestmark = pytest.mark.browser
VIEWPORT = {"width": 1280, "height": 800}


def _signed_in(browser, server: str, user, *, without_event_source: bool = False):
    context = browser.new_context(viewport=VIEWPORT)
    if without_event_source:
        context.add_init_script("delete window.EventSource")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, user.email)
    return context, page, errors


def _text_has(page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.textContent.includes(text)",
        arg=[selector, text],
        timeout=10_000,
    )


def test_the_reading_room_follows_the_job(server, browser, make_user, test_output):
    with session_scope() as session:
        live: LiveJob = queued_study(session)
    live.progress(10)
    reader, _ = make_user("reader")
    context, page, errors = _signed_in(browser, server, reader)
    page.goto(f"{server}/studies/{live.study_id}/read")
    page.wait_for_function("() => performance.getEntriesByName('lumen:full-image').length > 0", timeout=30_000)
    block = f'.assist-instance[data-instance-id="{live.instance_id}"]'
    _text_has(page, block, "the model is running (10%)")
    page.wait_for_function("() => window.lumen.live.follower?.mode === 'stream'")

    # The reader is at work: a finding ticked, a note typed, zoomed in, the window changed.
    page.evaluate("() => { window.__opened = 'this page, never reloaded'; }")
    page.click('label:has(input[name="finding"][value="nodule"])')
    page.fill('textarea[name="note"]', "left upper lobe")
    page.locator("#stage").focus()
    page.keyboard.press("+")
    page.keyboard.press("+")
    window = page.inner_text("#hud-window")
    page.keyboard.press("2")  # the second preset: Lung on CT (the first is Auto, 1-99th percentile)
    # innerText, as inner_text reads it (textContent keeps the HUD's double space, so it would differ at once).
    page.wait_for_function("(before) => document.getElementById('hud-window').innerText !== before", arg=window)
    view = page.inner_text("#hud-view"), page.inner_text("#hud-window")
    assert view[0] != "Zoom 100%" and view[1] == "W 1500 L -600"

    live.progress(40)
    _text_has(page, block, "the model is running (40%)")
    prediction_id = live.prediction()
    _text_has(page, f"{block} .prediction-label", "abnormal")
    _text_has(page, f"{block} .uncertainty", "Entropy 0.46")
    # No map yet: the list holds the prediction's written justification alone, shown in the map controls' place.
    page.wait_for_selector("#beyond-view .justification-sentence")
    assert page.eval_on_selector_all("#method option", "options => options.map(o => o.value)") == [
        "beyond:justification"]
    assert page.locator("#opacity").is_hidden()
    gradcam = live.heatmap(prediction_id, "gradcam")
    page.wait_for_function("() => document.querySelectorAll('#method > option').length === 1")  # the maps
    assert page.locator("#beyond-view").is_hidden() and page.locator("#opacity").is_visible()  # the map takes over
    assert page.locator("#method-scores").is_hidden()  # no scores yet: none shown

    page.wait_for_function("() => performance.getEntriesByName('lumen:overlay').length > 0", timeout=10_000)
    live.heatmap(prediction_id, "integrated_gradients")
    page.wait_for_function("() => document.querySelectorAll('#method > option').length === 2")
    live.score(gradcam)
    _text_has(page, "#method-scores", "del ")
    assert "deletion AUC" in page.get_attribute("#method-scores", "title")
    live.finish()
    page.wait_for_function("() => window.lumen.live.follower.mode === 'stopped'")
    page.screenshot(path=str(test_output / "live_reading_room.png"))

    assert page.evaluate("() => window.__opened") == "this page, never reloaded"
    assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1
    assert page.is_checked('input[name="finding"][value="nodule"]')
    assert page.input_value('textarea[name="note"]') == "left upper lobe"
    assert (page.inner_text("#hud-view"), page.inner_text("#hud-window")) == view
    assert page.evaluate("() => window.lumen.live.updates") >= 4  # the prediction, two maps, the scores
    assert errors == []
    context.close()


@pytest.mark.parametrize("stream", [True, False], ids=["event-stream", "polling"])
def test_the_study_page_follows_the_job(server, browser, make_user, stream: bool):
    with session_scope() as session:
        live: LiveJob = queued_study(session)
    reader, _ = make_user("reader")
    context, page, errors = _signed_in(browser, server, reader, without_event_source=not stream)
    page.goto(f"{server}/studies/{live.study_id}")
    page.evaluate("() => { window.__opened = true; }")
    page.wait_for_function("(mode) => window.lumen.live.follower?.mode === mode", arg="stream" if stream else "poll")
    live.progress(30)
    _text_has(page, "#ai-state", "30%")
    prediction_id = live.prediction()
    _text_has(page, "#predictions .prediction-label", "abnormal")
    live.heatmap(prediction_id, "gradcam")
    page.wait_for_selector(
        f'figure[data-instance-id="{live.instance_id}"] img.overlay', state="attached", timeout=10_000
    )
    live.finish()
    _text_has(page, "#ai-state", "done")
    page.wait_for_function("() => window.lumen.live.follower.mode === 'stopped'", timeout=10_000)
    assert page.evaluate("() => window.__opened") is True  # not reloaded
    assert page.locator("#predictions li.top .bar span").evaluate("node => node.style.width") == "83%"  # sized
    assert errors == []
    context.close()
