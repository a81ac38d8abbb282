"""The reading room's viewer in a real browser: frames of a real multi-frame MR (keys, Shift+wheel, cine), the
side-by-side grid of explanation methods, and the layout at 1280x800 (the whole read without scrolling; the
assistance switch moves nothing).

Same harness as the other browser tests (tests/e2e/conftest.py): the app under uvicorn in a thread, Chromium.
"""

from __future__ import annotations

import secrets

import httpx
import numpy as np
import pytest

from app.db import session_scope
from app.tables import AiModel, Job, JobState, Prediction
from tests.app.reading.conftest import add_heatmap
from tests.conftest import FIXTURES
from tests.e2e.helpers import DEMO, fresh_dicom, fresh_jpeg, sign_in

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1280, "height": 800}
ICDR = ["none", "mild", "moderate", "severe NPDR", "PDR"]
METHODS = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated gradients", "saliency": "Saliency"}
# Pixels of the image canvas: an 80 x 80 block at its centre, every 16th value (RGBA), as one list.
CENTRE_PIXELS = """() => {
    const c = document.getElementById('image-canvas');
    const d = c.getContext('2d').getImageData(c.width / 2 - 40, c.height / 2 - 40, 80, 80).data;
    return Array.from(d.filter((_, i) => i % 64 === 0));
}"""
# For each cell of the method grid: its heatmap id, label, canvas size and the spread of its pixel values.
GRID_CELLS = """() => Array.from(document.querySelectorAll('#method-grid .grid-cell')).map((cell) => {
    const canvas = cell.querySelector('canvas');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let low = 255, high = 0, sum = 0;
    for (let i = 0; i < data.length; i += 4) {
        const v = data[i] + data[i + 1] + data[i + 2];
        low = Math.min(low, v); high = Math.max(high, v); sum += v;
    }
    const box = canvas.getBoundingClientRect();
    return { id: Number(cell.dataset.heatmapId), label: cell.textContent, width: box.width, height: box.height,
             spread: high - low, mean: sum / (data.length / 4) };
})"""


def _upload(server: str, token: str, name: str, data: bytes) -> dict:
    response = httpx.post(f"{server}/api/studies", headers={"Authorization": f"Bearer {token}"}, timeout=60,
                          files={"files": (name, data)})
    assert response.status_code == 201, response.text
    return response.json()


def _open(browser, server: str, user, *, study_id: int, mark: str, console: list[str] | None = None):
    """A signed-in page at 1280x800 in the reading room of the study, once `lumen:<mark>` is measured; the console's
    messages go to `console` when given."""
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if console is not None:
        page.on("console", lambda message: console.append(message.text))
    sign_in(page, server, user.email)
    page.goto(f"{server}/studies/{study_id}/read")
    page.wait_for_function(f"() => performance.getEntriesByName('lumen:{mark}').length > 0", timeout=30_000)
    return page, errors


def _frame(page) -> int:
    return page.evaluate("() => window.lumen.viewport.frame")


@pytest.fixture(scope="module")
def fundus(server, make_user) -> tuple[int, list[int]]:
    """A real fundus photograph (IDRiD), uploaded, with a 5-grade DR prediction and three methods' heatmaps."""
    _, token = make_user("coordinator")
    study = _upload(server, token, "fundus.jpg", fresh_jpeg(DEMO / "IDRiD_02.jpg", max_side=1024))
    instance_id = study["instances"][0]["id"]
    y, x = np.mgrid[0:170, 0:256].astype(np.float32)
    maps = {
        "gradcam": np.exp(-(((y - 70) / 30) ** 2 + ((x - 150) / 40) ** 2)),
        "integrated_gradients": np.exp(-(((y - 110) / 25) ** 2 + ((x - 80) / 30) ** 2)) - 0.3,
        "saliency": np.abs(np.sin(x / 9.0) * np.cos(y / 7.0)),
    }
    with session_scope() as session:
        model = AiModel(name="dr-densenet", version=secrets.token_hex(3), task="dr_grading", labels=ICDR,
                        modalities=["ZZ"], input_spec={}, weights_sha256="0" * 64, card={}, is_active=False,
                        uncertainty_threshold=0.5)
        session.add(model)
        session.flush()
        job = Job(study_id=study["id"], instance_id=instance_id, model_id=model.id, methods=list(maps),
                  state=JobState.done, progress=100)
        session.add(job)
        session.flush()
        prediction = Prediction(job_id=job.id, instance_id=instance_id, model_id=model.id,
                                probabilities=[0.05, 0.15, 0.55, 0.2, 0.05], label="moderate", label_index=2,
                                predictive_entropy=0.71, referral=True)
        session.add(prediction)
        session.flush()
        # The faithfulness scores a worker stores with each map (the reading room shows them under the methods).
        scores = {"deletion_auc": 0.31, "insertion_auc": 0.62, "sparsity_gini": 0.48, "target_probability": 0.55}
        ids = [add_heatmap(session, prediction.id, method=method, array=array, target_class=2, scores=scores).id
               for method, array in maps.items()]
    return study["id"], ids


def test_multiframe_mr_frames_and_cine(server, browser, make_user, test_output):
    """emri_small.dcm (a real 10-frame MR, 64 x 64): arrow keys, Shift+wheel and cine show other frames."""
    _, token = make_user("coordinator")
    study = _upload(server, token, "emri_small.dcm", fresh_dicom(FIXTURES / "dicom" / "emri_small.dcm"))
    assert study["instances"][0]["frames"] == 10
    reader, _ = make_user("reader")
    page, errors = _open(browser, server, reader, study_id=study["id"], mark="full-image")
    assert page.locator("#cine").is_visible()
    toolbar, help_button = page.locator(".toolbar").bounding_box(), page.locator("#help-button").bounding_box()
    assert help_button["x"] + help_button["width"] <= toolbar["x"] + toolbar["width"]  # the cine controls fit
    assert page.inner_text("#frame-label") == "1/10"
    first = page.evaluate(CENTRE_PIXELS)

    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => document.getElementById('frame-label').textContent === '2/10'")
    assert _frame(page) == 1
    assert "Frame 2/10" in page.inner_text("#hud-view")
    second = page.evaluate(CENTRE_PIXELS)
    assert second != first
    page.keyboard.press("ArrowUp")
    page.wait_for_function("() => document.getElementById('frame-label').textContent === '1/10'")
    assert page.evaluate(CENTRE_PIXELS) == first  # the same frame, the same pixels
    page.keyboard.press("ArrowUp")  # wraps around
    page.wait_for_function("() => document.getElementById('frame-label').textContent === '10/10'")

    box = page.locator("#stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.keyboard.down("Shift")
    page.mouse.wheel(0, 120)
    page.keyboard.up("Shift")
    page.wait_for_function("() => document.getElementById('frame-label').textContent === '1/10'")
    assert page.evaluate(CENTRE_PIXELS) == first

    # Cine: Space plays; the frame index and the pixels keep changing until Space pauses it.
    page.fill("#fps", "20")
    page.locator("#stage").focus()
    page.keyboard.press(" ")
    assert page.inner_text("#play") == "Pause"
    page.wait_for_function("""() => {
        window.seenFrames ??= new Set();
        window.seenFrames.add(window.lumen.viewport.frame);
        return window.seenFrames.size >= 5;
    }""", timeout=10_000)
    samples = set()
    for _ in range(6):
        samples.add(tuple(page.evaluate(CENTRE_PIXELS)))
        page.wait_for_timeout(60)
    assert len(samples) >= 2
    page.screenshot(path=str(test_output / "viewer-cine.png"))
    page.keyboard.press(" ")
    assert page.inner_text("#play") == "Play"
    page.wait_for_timeout(150)  # a frame already asked for may still land
    paused = _frame(page)
    page.wait_for_timeout(300)
    assert _frame(page) == paused
    assert page.inner_text("#frame-label") == f"{paused + 1}/10"
    assert errors == []
    page.close()


def test_methods_side_by_side(server, browser, make_user, fundus, test_output):
    """The grid (G) draws one panel per method, each the image with that method's map; a click picks it."""
    study_id, heatmap_ids = fundus
    reader, _ = make_user("reader")
    page, errors = _open(browser, server, reader, study_id=study_id, mark="overlay")
    page.wait_for_function("() => performance.getEntriesByName('lumen:full-image').length > 0")
    assert page.is_enabled("#grid-button")
    page.keyboard.press("g")
    page.wait_for_function("() => document.querySelectorAll('#method-grid .grid-cell canvas').length === 3")
    assert page.locator("#method-grid").is_visible()
    assert page.get_attribute("#grid-button", "aria-pressed") == "true"
    cells = page.evaluate(GRID_CELLS)
    assert sorted(cell["id"] for cell in cells) == sorted(heatmap_ids)
    assert sorted(label.split(" · ")[0] for label in (cell["label"] for cell in cells)) == sorted(METHODS.values())
    for cell in cells:
        assert cell["width"] > 100 and cell["height"] > 80, cell
        assert cell["spread"] > 100, cell  # a picture, not an empty canvas
    assert len({round(cell["mean"], 1) for cell in cells}) == 3  # each panel shows its own map
    page.screenshot(path=str(test_output / "viewer-method-grid.png"))

    chosen = next(cell for cell in cells if cell["label"].startswith("Saliency"))
    page.click(f'#method-grid .grid-cell[data-heatmap-id="{chosen["id"]}"]')
    assert page.locator("#method-grid").is_hidden()
    assert page.input_value("#method") == str(chosen["id"])
    assert "Saliency" in page.inner_text("#rating-method")
    page.keyboard.press("g")
    assert page.locator("#method-grid").is_visible()
    page.keyboard.press("Escape")
    assert page.locator("#method-grid").is_hidden()
    assert errors == []
    page.close()


def test_whole_read_fits_1280x800_and_assistance_moves_nothing(server, browser, make_user, fundus, test_output):
    """The tallest form (DR grade, DME, confidence) with the whole assistance panel: no scrolling anywhere."""
    study_id, _ = fundus
    reader, _ = make_user("reader")
    page, errors = _open(browser, server, reader, study_id=study_id, mark="overlay")
    page.locator("#stage").focus()
    submit = page.locator("#submit-read").bounding_box()
    assert submit is not None and submit["y"] >= 0 and submit["y"] + submit["height"] <= VIEWPORT["height"]
    assert submit["x"] + submit["width"] <= VIEWPORT["width"]
    scroll = page.evaluate("""() => {
        const overflow = (el) => el.scrollHeight - el.clientHeight;
        return { page: overflow(document.scrollingElement), side: overflow(document.querySelector('.reading-side')),
                 assistance: overflow(document.getElementById('ai-panel')), y: window.scrollY };
    }""")
    assert scroll == {"page": 0, "side": 0, "assistance": 0, "y": 0}
    lowest = ("#rating-form button[type=submit]", ".disclaimer", 'label:has(input[name="confidence"][value="5"])')
    for selector in lowest:
        box = page.locator(selector).bounding_box()
        assert box is not None and box["y"] + box["height"] <= VIEWPORT["height"], selector
    page.screenshot(path=str(test_output / "reading-1280x800.png"))

    still = ["#image-canvas", "#stage", "#submit-read", ".grade-panel", "#ai-panel"]
    boxes = {selector: page.locator(selector).bounding_box() for selector in still}
    page.keyboard.press("a")
    page.wait_for_function("() => document.body.classList.contains('assist-off')")
    assert {selector: page.locator(selector).bounding_box() for selector in still} == boxes
    page.screenshot(path=str(test_output / "reading-1280x800-unassisted.png"))
    page.keyboard.press("a")
    assert {selector: page.locator(selector).bounding_box() for selector in still} == boxes
    assert errors == []
    page.close()
