"""Readers' own evidence in a real browser: in an unassisted reader-study read, the reader opens "Mark evidence",
drags a box and paints a brush stroke over the fundus photograph; the draft autosave keeps them (a reload shows them
again), the submit freezes them, and the read's stored marks are the normalised image coordinates of the page
points dragged over. The coordinator's dashboard then shows the agreement of the marks with each heatmap and
between the two readers.

Same harness as the other browser tests (tests/e2e/conftest.py): the app under uvicorn in a thread, Chromium.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select

from app.db import session_scope
from app.tables import Read, ReadState, Study
from tests.e2e.helpers import sign_in, wait_for
from tests.e2e.test_browser_measure import PLACEMENT  # the stage's box and the image's size
from tests.e2e.test_browser_reading import fundus_with_heatmaps

pytestmark = pytest.mark.browser

# Alpha of the evidence layer at a normalised image point (3 x 3 device pixels there).
LAYER_ALPHA = """([x, y]) => {
    const v = window.lumen.viewport;
    const at = v.toStage({ x: x * v.width, y: y * v.height });
    const dpr = window.devicePixelRatio || 1;
    const canvas = document.getElementById('evidence-canvas');
    const [left, top] = [Math.round(at.x * dpr) - 1, Math.round(at.y * dpr) - 1];
    const data = canvas.getContext('2d').getImageData(left, top, 3, 3).data;
    return Math.max(...data.filter((_, i) => i % 4 === 3));
}"""
MARKS = "() => window.lumen.viewport.evidence.marks"
# The gradcam blob of fundus_with_heatmaps peaks at (150, 70) of its 256 x 170 map: (0.588, 0.415) of the image.
BOX = (0.45, 0.25, 0.72, 0.58)
STROKE = ((0.30, 0.70), (0.36, 0.72), (0.42, 0.76))
TOLERANCE = 0.002  # well under a CSS pixel of a 1024-pixel image fitted into ~900 px


def _scale(place: dict) -> float:
    return min(place["width"] / place["columns"], place["height"] / place["rows"])


def _page_point(place: dict, x: float, y: float) -> tuple[float, float]:
    """The page point over the normalised image point (x, y), the image centred and fitted in the stage."""
    scale = _scale(place)
    left = place["left"] + (place["width"] - place["columns"] * scale) / 2
    top = place["top"] + (place["height"] - place["rows"] * scale) / 2
    return left + x * place["columns"] * scale, top + y * place["rows"] * scale


def _open_study(server: str, token: str, uid: str, emails: list[str]) -> int:
    api = {"Authorization": f"Bearer {token}"}
    created = httpx.post(
        f"{server}/api/reader-studies",
        headers=api,
        timeout=30,
        json={
            "name": f"browser evidence {uuid.uuid4().hex[:6]}",
            "seed": 3,
            "conditions": [{"key": "unassisted", "kind": "unassisted", "label": "Unassisted"}],
        },
    )
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    for url, kwargs in (
        (
            f"/api/reader-studies/{sid}/reference",
            {"content": f"study_instance_uid,dr_grade\n{uid},2\n", "headers": {**api, "Content-Type": "text/csv"}},
        ),
        (f"/api/reader-studies/{sid}/readers", {"json": {"emails": emails}, "headers": api}),
        (f"/api/reader-studies/{sid}/open", {"json": {}, "headers": api}),
    ):
        response = httpx.post(server + url, timeout=30, **kwargs)
        assert response.status_code == 200, response.text
    return sid


def _draft_marks(reader_id: int) -> int:
    with session_scope() as session:
        read = session.scalar(select(Read).where(Read.reader_id == reader_id))
        return len(read.evidence_marks) if read is not None else 0


def test_a_reader_marks_evidence_and_the_dashboard_compares_it(server, browser, make_user, test_output):
    coordinator, token = make_user("coordinator")
    reader, _ = make_user("reader")
    second, second_token = make_user("reader")
    study_id, _ = fundus_with_heatmaps()
    with session_scope() as session:
        uid = session.get(Study, study_id).study_instance_uid
    sid = _open_study(server, token, uid, [reader.email, second.email])

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, reader.email)
    page.goto(f"{server}/reader-studies")
    page.click("#my-studies a.button-primary")
    page.wait_for_url(f"{server}/assignments/*/read")
    page.wait_for_function("() => performance.getEntriesByName('lumen:full-image').length > 0", timeout=20_000)
    assert page.evaluate("() => window.lumen.state.assist") is False  # unassisted: the tool is there all the same

    page.click("#evidence-button")
    assert page.get_attribute("#evidence-button", "aria-pressed") == "true"
    assert page.get_attribute('.tool[data-tool="evidence-box"]', "aria-pressed") == "true"
    place = page.evaluate(PLACEMENT)
    page.mouse.move(*_page_point(place, BOX[0], BOX[1]))
    page.mouse.down()
    page.mouse.move(*_page_point(place, BOX[2], BOX[3]), steps=8)
    page.mouse.up()
    page.click('.tool[data-tool="evidence-brush"]')
    page.mouse.move(*_page_point(place, *STROKE[0]))
    page.mouse.down()
    for point in STROKE[1:]:
        page.mouse.move(*_page_point(place, *point), steps=6)
    page.mouse.up()
    assert [mark["kind"] for mark in page.evaluate(MARKS)] == ["box", "brush"]
    assert page.inner_text("#evidence-count") == "2"
    assert page.evaluate(LAYER_ALPHA, [0.58, 0.41]) > 0  # painted inside the box
    assert page.evaluate(LAYER_ALPHA, [0.9, 0.1]) == 0  # and nowhere else
    page.screenshot(path=str(test_output / "evidence-marked.png"))

    # The draft autosave keeps them: a reload shows them again.
    wait_for(lambda: _draft_marks(reader.id) == 2, timeout=10, what="the draft to carry both marks")
    page.reload()
    page.wait_for_function("() => performance.getEntriesByName('lumen:full-image').length > 0", timeout=20_000)
    assert [mark["kind"] for mark in page.evaluate(MARKS)] == ["box", "brush"]
    assert page.evaluate(LAYER_ALPHA, [0.58, 0.41]) > 0

    for name, value in (("dr_grade", "2"), ("dme", "false"), ("confidence", "4")):
        page.click(f'label:has(input[name="{name}"][value="{value}"])')
    page.click("#submit-read")
    page.wait_for_selector("#next-case:not([hidden])")
    assert page.locator('#evidence-bar button[data-tool="evidence-brush"]').is_disabled()
    assert errors == []

    with session_scope() as session:
        read = session.scalar(select(Read).where(Read.reader_id == reader.id))
        assert read.state == ReadState.submitted and read.assignment_id is not None
        instance_id = read.instance_id
        box, stroke = read.evidence_marks
    assert (box["kind"], box["instance_id"], box["frame"]) == ("box", instance_id, 0)
    assert box["box"] == pytest.approx(list(BOX), abs=TOLERANCE)
    assert (stroke["kind"], stroke["instance_id"]) == ("brush", instance_id)
    assert stroke["points"][0] == pytest.approx(list(STROKE[0]), abs=TOLERANCE)
    assert stroke["points"][-1] == pytest.approx(list(STROKE[-1]), abs=TOLERANCE)
    assert len(stroke["points"]) >= 3
    # The brush: 10 CSS pixels on screen at the fitted zoom, in each axis's own normalised units.
    pixels = 10 / _scale(place)
    assert stroke["radius"] == pytest.approx([pixels / place["columns"], pixels / place["rows"]], rel=1e-3)

    # The second reader marks the same box through the API.
    api = {"Authorization": f"Bearer {second_token}"}
    queue = httpx.get(f"{server}/api/reader-studies/{sid}/queue", headers=api, timeout=30).json()
    [item] = queue["assignments"]
    body = {
        "answers": {"dr_grade": 1, "dme": False, "confidence": 3},
        "evidence_marks": [{"kind": "box", "instance_id": instance_id, "box": list(BOX)}],
    }
    done = httpx.post(
        f"{server}/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit", json=body, headers=api, timeout=30
    )
    assert done.status_code == 201, done.text

    numbers = httpx.get(
        f"{server}/api/reader-studies/{sid}/statistics", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()["evidence"]
    gradcam = next(item for item in numbers["methods"] if item["method"] == "gradcam")["overall"]
    assert gradcam["pointing_game"] == 1.0 and gradcam["relevance_mass"] > 0.5  # the box holds the blob's peak
    assert (gradcam["cases"], gradcam["reads"]) == (1, 2)
    dice = numbers["dice"]["overall"]
    assert dice["pairs"] == 1 and 0.5 < dice["dice"] < 1  # the same box; the first reader's stroke besides

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, server, coordinator.email)
    page.goto(f"{server}/reader-studies/{sid}")
    row = page.locator('#evidence-table tr[data-method="gradcam"][data-condition="all"] td')
    cells = row.all_inner_texts()
    assert cells[0] == "Grad-CAM" and cells[1] == "All conditions"
    assert cells[2:] == [f"{gradcam['relevance_mass']:.3f}", "1.000", f"{gradcam['iou_equal_area']:.3f}", "1", "2"]
    dice_cells = page.locator('#evidence-dice-table tr[data-condition="all"] td').all_inner_texts()
    assert dice_cells == ["Any conditions", f"{dice['dice']:.3f}", "1", "1"]
    page.locator("#evidence").screenshot(path=str(test_output / "evidence-dashboard.png"))
    exported = page.request.get(f"{server}/api/reader-studies/{sid}/evidence.csv")
    assert exported.ok and exported.text().count("\n") == 1 + 2 * 2  # header, 2 reads x 2 methods
