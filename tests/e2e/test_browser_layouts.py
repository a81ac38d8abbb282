"""The reading room's layouts in a real browser: 1x1 -> 2x2 shows four viewports with their images painted;
linked, a zoom in one cell moves all four, a window moves the cells of the same modality, a frame the cells of as
many frames; independent, a zoom moves one; a live update of the AI panel leaves the layout, the view and gives
the other cells their heatmaps. Also the screenshots of docs/screenshots/ (reading room, 2x2), written there when
UPDATE_DOCS_SCREENSHOTS=1 (`make screenshots`).

Same harness as the other browser tests (tests/e2e/conftest.py): the app under uvicorn in a thread, Chromium.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from app.db import session_scope
from app.tables import JobState, Study
from tests.app.live.conftest import LiveJob, queued_study
from tests.app.reading.conftest import add_heatmap
from tests.app.viewer import factories
from tests.conftest import FIXTURES
from tests.e2e.test_browser_designer import _screenshot, _shots
from tests.e2e.test_browser_viewer import _open

pytestmark = pytest.mark.browser

# Each shown cell: its view, window, frame, image and how much of its canvas is painted (not black).
CELLS = """() => window.lumen.layout.shown.map((cell) => {
    const v = cell.viewport;
    const c = v.canvas;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < d.length; i += 64) if (d[i] | d[i + 1] | d[i + 2]) lit += 1;
    return { zoom: v.zoom, panX: v.panX, panY: v.panY, window: v.window, frame: v.frame, modality: v.instance.modality,
             frames: v.instance.frames, kind: v.sourceKind, painted: lit / (d.length / 64), heatmap: !!v.heatmapSource,
             box: v.stage.getBoundingClientRect().toJSON(), hidden: v.stage.hidden };
})"""
ALL_PAINTED = """(count) => window.lumen.layout.shown.length === count
    && window.lumen.layout.shown.every((cell) => cell.viewport.settled && cell.viewport.sourceKind === 'full')"""


def _study_of(server: str, token: str, names: list[str]) -> int:
    """The fixtures as one study of one patient (new UIDs, one series each), uploaded in one request."""
    study_uid = generate_uid()
    files = []
    for name in names:
        ds = pydicom.dcmread(FIXTURES / "dicom" / name)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName, ds.StudyDate = "LAYOUT-1", "Layout^Demo", "20240131"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(("files", (name, buffer.getvalue())))
    response = httpx.post(
        f"{server}/api/studies", headers={"Authorization": f"Bearer {token}"}, timeout=120, files=files
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert [study["id"] for study in body["studies"]] == [body["id"]], body
    return body["id"]


def _wheel(page, box: dict, delta: float, *, shift: bool = False) -> None:
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    if shift:
        page.keyboard.down("Shift")
    page.mouse.wheel(0, delta)
    if shift:
        page.keyboard.up("Shift")
    page.wait_for_timeout(150)


def _drag(page, box: dict, dx: float, dy: float) -> None:
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=5)
    page.mouse.up()


def test_two_by_two_linked_and_independent(server, browser, make_user, test_output):
    _, token = make_user("coordinator")
    study = _study_of(server, token, ["RG1_J2KI.dcm", "RG3_J2KI.dcm", "MR2_J2KI.dcm", "emri_small.dcm"])
    reader, _ = make_user("reader")
    page, errors = _open(browser, server, reader, study_id=study, mark="full-image")
    assert page.evaluate(CELLS)[0]["box"]["width"] > 800  # 1x1: the one stage takes the column

    page.select_option("#layout", "2x2")
    page.wait_for_function(ALL_PAINTED, arg=4, timeout=60_000)
    cells = page.evaluate(CELLS)
    assert len(cells) == 4 and all(cell["painted"] > 0.2 for cell in cells), [c["painted"] for c in cells]
    assert sorted((c["modality"], c["frames"]) for c in cells) == [("CR", 1), ("CR", 1), ("MR", 1), ("MR", 10)]
    boxes = [c["box"] for c in cells]
    assert len({(round(b["x"]), round(b["y"])) for b in boxes}) == 4  # four places, not stacked
    assert all(abs(b["width"] - boxes[0]["width"]) < 2 and abs(b["height"] - boxes[0]["height"]) < 2 for b in boxes)
    _screenshot(page, _shots(test_output), "reading-layout-2x2.png")

    # Linked: a zoom in the third cell moves all four.
    _wheel(page, boxes[2], -400)
    cells = page.evaluate(CELLS)
    assert cells[2]["zoom"] > 1.5
    assert len({(c["zoom"], c["panX"], c["panY"]) for c in cells}) == 1

    # A window dragged in a radiograph's cell moves the other radiograph's, not the MR cells'.
    cr = [i for i, c in enumerate(cells) if c["modality"] == "CR"]
    mr = [i for i, c in enumerate(cells) if c["modality"] == "MR"]
    _drag(page, boxes[cr[1]], 60, 40)
    page.wait_for_function(
        "([a, b]) => { const s = window.lumen.layout.shown; "
        "return s[a].viewport.window.center === s[b].viewport.window.center; }",
        arg=cr,
    )
    after = page.evaluate(CELLS)
    assert after[cr[0]]["window"] == after[cr[1]]["window"] != cells[cr[1]]["window"]
    assert [after[i]["window"] for i in mr] == [cells[i]["window"] for i in mr]

    # Frames follow between images of as many frames: the other MR cell shows the 10-frame series too.
    multi = next(i for i, c in enumerate(cells) if c["frames"] == 10)
    other_mr = next(i for i in mr if i != multi)
    series_index = page.evaluate(f"() => window.lumen.layout.shown[{multi}].index")
    page.locator("#layout-grid .cell").nth(other_mr - 1).locator("select").select_option(str(series_index))
    page.wait_for_function(
        f"() => window.lumen.layout.shown[{other_mr}].viewport.instance.frames === 10 "
        f"&& window.lumen.layout.shown[{other_mr}].viewport.settled"
    )
    _wheel(page, boxes[multi], 100, shift=True)
    page.wait_for_function(f"() => window.lumen.layout.shown[{other_mr}].viewport.frame === 1", timeout=10_000)
    assert page.evaluate(CELLS)[multi]["frame"] == 1

    # Independent (K): a zoom in the last cell moves that cell only.
    page.keyboard.press("k")
    assert page.get_attribute("#link", "aria-pressed") == "false"
    before = page.evaluate(CELLS)
    _wheel(page, boxes[3], -300)
    after = page.evaluate(CELLS)
    assert after[3]["zoom"] > before[3]["zoom"] * 1.3
    assert [(c["zoom"], c["panX"]) for c in after[:3]] == [(c["zoom"], c["panX"]) for c in before[:3]]

    # X cycles back to 1x1: one cell, the others hidden.
    page.keyboard.press("x")
    assert page.input_value("#layout") == "1x1"
    assert page.evaluate("() => window.lumen.layout.shown.length") == 1
    assert page.locator("#layout-grid .cell").first.is_hidden()
    assert errors == []
    page.close()


def test_the_layout_survives_a_live_update(server, browser, make_user):
    with session_scope() as session:
        live: LiveJob = queued_study(session)
    live.progress(10)
    reader, _ = make_user("reader")
    page, errors = _open(browser, server, reader, study_id=live.study_id, mark="full-image")
    page.wait_for_function("() => window.lumen.live.follower?.mode === 'stream'")
    page.keyboard.press("x")
    page.keyboard.press("x")
    assert page.input_value("#layout") == "2x2"
    page.wait_for_function(ALL_PAINTED, arg=4, timeout=30_000)
    page.locator("#stage").focus()
    page.keyboard.press("+")
    cells = page.evaluate(CELLS)
    assert {c["zoom"] for c in cells} == {1.25} and not any(c["heatmap"] for c in cells)

    prediction_id = live.prediction()
    live.heatmap(prediction_id, "gradcam")
    page.wait_for_function("() => performance.getEntriesByName('lumen:overlay').length > 0", timeout=10_000)
    page.wait_for_function(
        "() => window.lumen.layout.shown.every((cell) => cell.viewport.heatmapSource)", timeout=10_000
    )
    after = page.evaluate(CELLS)
    assert page.input_value("#layout") == "2x2" and len(after) == 4
    assert [(c["zoom"], c["panX"], c["window"]) for c in after] == [(c["zoom"], c["panX"], c["window"]) for c in cells]
    assert all(c["painted"] > 0.05 for c in after)
    # The assistance switch hides every cell's heatmap.
    page.keyboard.press("a")
    hidden = page.evaluate(
        "() => [...document.querySelectorAll('#layout-grid .assist-layer')]"
        ".filter((el) => el.closest('.stage:not([hidden])') && el.tagName === 'CANVAS')"
        ".map((el) => getComputedStyle(el).visibility)"
    )
    assert hidden == ["hidden"] * 4
    live.finish()
    assert errors == []
    page.close()


def test_reading_room_screenshot(server, browser, make_user, test_output):
    """A radiograph with its heatmap and the AI panel, for the README."""
    _, token = make_user("coordinator")
    study = _study_of(server, token, ["RG1_J2KI.dcm"])
    with session_scope() as session:
        instance_id = session.get_one(Study, study).series[0].instances[0].id
        job = factories.add_job(session, factories.StoredStudy(study, instance_id), state=JobState.done, progress=100)
        prediction, _ = factories.add_prediction(session, job)
        y, x = np.mgrid[0:64, 0:60].astype(np.float32)
        lesion = np.exp(-(((y - 24) / 7) ** 2 + ((x - 40) / 6) ** 2))
        add_heatmap(session, prediction.id, method="integrated_gradients", array=lesion - 0.3 * lesion.mean())
    reader, _ = make_user("reader")
    page, errors = _open(browser, server, reader, study_id=study, mark="overlay")
    page.wait_for_timeout(300)
    _screenshot(page, _shots(test_output), "reading-room.png")
    assert errors == []
    page.close()
