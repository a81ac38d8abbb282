"""The reading room's autosave in a real browser: a click followed at once by a reload is saved (by the
draft sent on change, and when that one fails, by the beacon sent as the page is left), and a submission
sent right before a reload is stored and shown after it.

Same harness as test_browser_reading.py: the app under uvicorn in a thread, Debian's Chromium via Playwright.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.tables import Read
from tests.app.reading.conftest import fundus_jpeg
from tests.app.viewer import factories
from tests.e2e.helpers import sign_in, wait_for

pytestmark = pytest.mark.browser


def _fundus() -> int:
    with session_scope() as session:
        stored = factories.insert_study(
            session,
            data=fundus_jpeg(),
            source_format="jpeg",
            rows=64,
            columns=96,
            modality="OP",
            photometric="RGB",
            description="Fundus photographs",
        )
        return stored.study_id


def _reading_room(server, browser, make_user):
    reader, _ = make_user("reader")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, reader.email)
    return reader, page, errors


def _stored(reader_id: int, study_id: int) -> Read | None:
    with session_scope() as session:
        read = session.scalar(select(Read).where(Read.reader_id == reader_id, Read.study_id == study_id))
        if read is not None:
            session.expunge(read)
        return read


def _choose(page, name: str, value: str) -> None:
    page.click(f'label:has(input[name="{name}"][value="{value}"])')


def _checked(page, name: str) -> str | None:
    return page.evaluate(f"() => document.querySelector('input[name=\"{name}\"]:checked')?.value ?? null")


def test_a_click_then_an_immediate_reload_is_saved(server, browser, make_user):
    study_id = _fundus()
    reader, page, errors = _reading_room(server, browser, make_user)
    page.goto(f"{server}/studies/{study_id}/read")
    _choose(page, "dr_grade", "2")
    page.locator("#read-status", has_text="Draft saved").wait_for(timeout=10_000)

    _choose(page, "confidence", "4")
    page.reload()
    page.wait_for_function(
        "() => document.querySelector('input[name=\"confidence\"]:checked')?.value === '4'", timeout=10_000
    )
    assert _checked(page, "dr_grade") == "2"
    read = wait_for(
        lambda: (r := _stored(reader.id, study_id)) and r.confidence == 4 and r,
        timeout=10,
        what="the confidence click stored",
    )
    assert read.dr_grade == 2 and read.state.value == "draft"

    # The draft request of the next click fails (the network drops it): the beacon of the page being left
    # carries the change to the server all the same.
    page.route("**/api/reads/*", lambda route: route.abort() if route.request.method == "PUT" else route.continue_())
    _choose(page, "confidence", "2")
    page.locator("#read-status", has_text="Draft not saved").wait_for(timeout=10_000)
    assert _stored(reader.id, study_id).confidence == 4
    page.reload()
    read = wait_for(
        lambda: (r := _stored(reader.id, study_id)) and r.confidence == 2 and r,
        timeout=10,
        what="the beacon's draft stored",
    )
    assert read.dr_grade == 2
    page.wait_for_function(
        "() => document.querySelector('input[name=\"confidence\"]:checked')?.value === '2'", timeout=10_000
    )
    page.unroute("**/api/reads/*")
    assert errors == []
    page.close()


def test_a_submission_right_before_a_reload_is_stored_and_shown(server, browser, make_user):
    study_id = _fundus()
    reader, page, errors = _reading_room(server, browser, make_user)
    page.goto(f"{server}/studies/{study_id}/read")
    _choose(page, "dr_grade", "3")
    _choose(page, "dme", "true")
    _choose(page, "confidence", "5")
    page.click("#submit-read")
    page.reload()
    read = wait_for(
        lambda: (r := _stored(reader.id, study_id)) and r.state.value == "submitted" and r,
        timeout=10,
        what="the submission stored",
    )
    assert (read.dr_grade, read.dme, read.confidence) == (3, True, 5)

    page.reload()
    page.locator("#read-status.ok", has_text="Submitted").wait_for(timeout=10_000)
    assert page.get_attribute("#read-form", "data-state") == "submitted"
    assert (_checked(page, "dr_grade"), _checked(page, "dme"), _checked(page, "confidence")) == ("3", "true", "5")
    assert page.is_disabled('input[name="confidence"][value="5"]')
    assert errors == []
    page.close()
