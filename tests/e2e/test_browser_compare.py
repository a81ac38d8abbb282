"""Prior comparison on the study page in a real browser: two studies of one patient (the same PatientID, other
StudyDates, uploaded as DICOM files), "Compare" on the prior opens both side by side with their dates; a window
dragged or a zoom in one moves the other until the Link button frees them.

Same harness as the other browser tests (tests/e2e/conftest.py): the app under uvicorn in a thread, Chromium.
"""

from __future__ import annotations

import io
import secrets

import httpx
import pydicom
import pytest

from tests.conftest import FIXTURES
from tests.e2e.helpers import fresh_dicom
from tests.e2e.test_browser_layouts import _drag, _wheel
from tests.e2e.test_browser_live import _signed_in

pytestmark = pytest.mark.browser

# The comparison's cells: view, window, label, place, how much of the canvas is painted (not black).
CELLS = """() => window.lumen.compare.layout.shown.map((cell) => {
    const v = cell.viewport;
    const c = v.canvas;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < d.length; i += 64) if (d[i] | d[i + 1] | d[i + 2]) lit += 1;
    return { zoom: v.zoom, window: v.window, instance: v.instance.id, painted: lit / (d.length / 64),
             label: cell.stage.querySelector('.compare-label').textContent,
             box: v.stage.getBoundingClientRect().toJSON() };
})"""
BOTH_PAINTED = """() => { const shown = window.lumen.compare?.layout?.shown ?? [];
    return shown.length === 2
      && shown.every((cell) => cell.viewport.settled && cell.viewport.sourceKind === 'full'); }"""
SAME_WINDOW = """() => { const [a, b] = window.lumen.compare.layout.shown.map((cell) => cell.viewport.window);
    return a.center === b.center && a.width === b.width; }"""


def _upload(server: str, token: str, *, patient_id: str, date: str, name: str) -> int:
    """An MR image (the fixture with new UIDs) as a study of this patient on this date."""
    ds = pydicom.dcmread(io.BytesIO(fresh_dicom(FIXTURES / "dicom" / "MR-SIEMENS-DICOM-WithOverlays.dcm")))
    ds.PatientID, ds.PatientName, ds.StudyDate = patient_id, "Compare^Carla", date
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = httpx.post(f"{server}/api/studies", headers={"Authorization": f"Bearer {token}"}, timeout=60,
                          files=[("files", (name, buffer.getvalue(), "application/dicom"))])
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_compare_with_a_prior_side_by_side_linked_until_unlinked(server, browser, make_user, test_output):
    _, token = make_user("coordinator")
    patient = f"CMP-{secrets.token_hex(4)}"
    prior = _upload(server, token, patient_id=patient, date="20240502", name="prior.dcm")
    current = _upload(server, token, patient_id=patient, date="20261201", name="current.dcm")
    reader, _ = make_user("reader")
    context, page, errors = _signed_in(browser, server, reader)
    page.goto(f"{server}/studies/{current}")
    assert page.locator("#priors li").count() == 1
    assert "2024-05-02" in page.inner_text(f'#priors li[data-study-id="{prior}"]')
    assert page.locator("#compare").is_hidden()

    page.click(f'.compare-button[data-study-id="{prior}"]')
    page.wait_for_function(BOTH_PAINTED, timeout=30_000)
    cells = page.evaluate(CELLS)
    assert [cell["label"] for cell in cells] == ["Current 2026-12-01", "Prior 2024-05-02"]
    assert all(cell["painted"] > 0.2 for cell in cells), [cell["painted"] for cell in cells]
    left, right = cells[0]["box"], cells[1]["box"]
    assert right["x"] >= left["x"] + left["width"] - 1 and abs(right["y"] - left["y"]) < 1  # side by side
    assert abs(right["width"] - left["width"]) < 2 and left["width"] > 300
    assert cells[0]["instance"] != cells[1]["instance"]
    assert page.get_attribute("#compare-link", "aria-pressed") == "true"
    page.screenshot(path=str(test_output / "browser-compare.png"))

    # Linked: a window dragged on the current study's image moves the prior's, a zoom too.
    _drag(page, left, 60, 40)
    page.wait_for_function(SAME_WINDOW)
    linked = page.evaluate(CELLS)
    assert linked[0]["window"] == linked[1]["window"] != cells[1]["window"]
    _wheel(page, left, -300)
    zoomed = page.evaluate(CELLS)
    assert zoomed[0]["zoom"] > 1.3 and zoomed[1]["zoom"] == zoomed[0]["zoom"]

    # Unlinked: each moves alone.
    page.click("#compare-link")
    assert page.get_attribute("#compare-link", "aria-pressed") == "false"
    _drag(page, left, -80, 50)
    page.wait_for_function(
        "(before) => window.lumen.compare.layout.shown[0].viewport.window.center !== before",
        arg=linked[0]["window"]["center"],
    )
    _wheel(page, right, -300)
    free = page.evaluate(CELLS)
    assert free[1]["window"] == linked[1]["window"] and free[0]["window"] != linked[0]["window"]
    assert free[0]["zoom"] == zoomed[0]["zoom"] and free[1]["zoom"] > zoomed[1]["zoom"] * 1.3
    assert errors == []
    context.close()


def test_a_study_without_priors_says_so(server, browser, make_user):
    _, token = make_user("coordinator")
    alone = _upload(server, token, patient_id=f"CMP-{secrets.token_hex(4)}", date="20261201", name="alone.dcm")
    context, page, errors = _signed_in(browser, server, make_user("reader")[0])
    page.goto(f"{server}/studies/{alone}")
    assert page.inner_text("#priors").strip().endswith("No prior studies of this patient")
    assert page.locator(".compare-button").count() == 0 and page.locator("#compare").is_hidden()
    assert errors == []
    context.close()
