"""The study designer in a real browser: a coordinator designs a three-arm study by clicking (no JSON), picks
cases from thumbnails that show only what the task reads, is told why a wrong case is refused, opens the study;
a reader then sees per arm only what it shows (no method list or rating form without a heatmap).

With UPDATE_DOCS_SCREENSHOTS=1 the test also writes the designer's screenshots to docs/screenshots/
(`make screenshots`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from app.db import session_scope
from app.tables import Study
from tests.conftest import FIXTURES
from tests.e2e.helpers import fresh_dicom, sign_in
from tests.e2e.test_browser_reading import fundus_with_heatmaps

pytestmark = pytest.mark.browser
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _shots(test_output: Path) -> list[Path]:
    """Where a screenshot goes: test-output/, and docs/screenshots/ when asked to update the docs."""
    folders = [test_output]
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(exist_ok=True)
        folders.append(DOCS_SCREENSHOTS)
    return folders


def _screenshot(target, folders: list[Path], name: str) -> None:
    """A screenshot of `target` (a page or one element of it) into each folder."""
    for folder in folders:
        target.screenshot(path=str(folder / name))


def _upload(server: str, token: str, name: str) -> int:
    response = httpx.post(
        f"{server}/api/studies",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        files={"files": (name, fresh_dicom(FIXTURES / "dicom" / name))},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _beside(page, selector: str) -> bool:
    """Each checkbox of `selector` sits on the line of its label's text (their vertical centres within 6 px)."""
    return page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)].every((label) => {
            const box = label.querySelector('input').getBoundingClientRect();
            const text = label.querySelector('span').getBoundingClientRect();
            return Math.abs((box.top + box.bottom) / 2 - (text.top + text.bottom) / 2) < 6 && box.right <= text.left;
        })""",
        selector,
    )


def _add_condition(page, label: str, kind: str) -> object:
    page.click("#add-condition")
    row = page.locator("#condition-rows .condition-row").last
    row.locator('[name="condition-label"]').fill(label)
    row.locator('[name="condition-kind"]').select_option(kind)
    return row


def test_a_coordinator_designs_a_three_arm_study_without_typing_json(server, browser, make_user, test_output):
    _, admin_token = make_user("admin")
    coordinator, _ = make_user("coordinator")
    reader, _ = make_user("reader")
    fundus = [fundus_with_heatmaps()[0] for _ in range(3)]
    radiograph = _upload(server, admin_token, "RG1_J2KI.dcm")  # CR CHEST
    mr = _upload(server, admin_token, "MR2_J2KI.dcm")
    with session_scope() as session:
        uids = [session.get(Study, study_id).study_instance_uid for study_id in fundus]
    shots = _shots(test_output)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, coordinator.email)
    page.goto(f"{server}/reader-studies")
    assert page.locator('#new-study textarea[name="conditions"]').count() == 0  # no JSON to type
    assert _beside(page, "#new-study label.check")
    assert "colour fundus photograph" in page.inner_text("#task-reads")

    # Three arms by clicking: keep "Unassisted", replace the defaults with prediction only and Grad-CAM.
    page.fill('#new-study input[name="name"]', "designed by clicking")
    for _ in range(2):
        page.locator("#condition-rows .remove-condition").last.click()
    assert page.locator("#condition-rows .condition-row").count() == 1
    assert page.locator("#condition-rows .remove-condition").is_disabled()  # one condition at least
    only = _add_condition(page, "Prediction only", "prediction")
    assert only.locator('[name="condition-method"]').is_hidden()
    heatmap = _add_condition(page, "Prediction + Grad-CAM", "prediction_heatmap")
    assert heatmap.locator('[name="condition-method"]').is_visible()
    heatmap.locator('[name="condition-method"]').select_option("gradcam")

    page.fill('#new-study input[name="seed"]', "12")
    _screenshot(page.locator("section.designer"), shots, "reader-study-designer.png")

    # The server's reason for a design it refuses shows under the form.
    page.select_option('#new-study select[name="scheme"]', "sequential")
    page.click("#new-study button[type=submit]")
    page.wait_for_function("() => document.getElementById('new-study-status').classList.contains('error')")
    assert "a sequential study has two conditions" in page.inner_text("#new-study-status")
    page.select_option('#new-study select[name="scheme"]', "counterbalanced")
    page.click("#new-study button[type=submit]")
    page.wait_for_url(f"{server}/reader-studies/*")
    assert page.inner_text("#study-state") == "draft"
    arms = page.inner_text('[aria-labelledby="conditions-title"]')
    assert "Unassisted" in arms and "Prediction only" in arms and "(gradcam)" in arms

    # The picker: the fundus photographs with their thumbnails; the radiograph and the MR are not offered.
    for study_id in fundus:
        card = page.locator(f'#candidate-list .case-card[data-study-id="{study_id}"]')
        assert "OP" in card.inner_text()
        card.locator("img").scroll_into_view_if_needed()
    page.wait_for_function(
        "(ids) => ids.every((id) => { const img = document.querySelector(`.case-card[data-study-id='${id}'] img`);"
        " return img && img.complete && img.naturalWidth > 0; })",
        arg=fundus,
    )
    for other in (radiograph, mr):
        assert page.locator(f'.case-card[data-study-id="{other}"]').count() == 0
    assert "not offered" in page.inner_text("#case-rule")
    assert _beside(page, "#add-cases label.check")

    # A wrong case typed by id is refused when added, with the reason; nothing is added.
    page.fill('#add-cases input[name="study_ids"]', str(mr))
    page.click("#add-cases-button")
    page.wait_for_function("() => document.getElementById('study-status').classList.contains('error')")
    assert f"study {mr} (MR" in page.inner_text("#study-status")
    assert "not a colour fundus photograph" in page.inner_text("#study-status")
    page.fill('#add-cases input[name="study_ids"]', "")
    for study_id in fundus:
        page.click(f'.case-card[data-study-id="{study_id}"] .case-text >> nth=0')  # a click anywhere on the card
    assert all(page.is_checked(f'input[name="pick"][value="{study_id}"]') for study_id in fundus)
    _screenshot(page.locator('section[aria-labelledby="cases-title"]'), shots, "reader-study-case-picker.png")
    page.click("#add-cases-button")
    page.wait_for_function("() => document.querySelectorAll('#case-table tbody tr').length === 3")

    reference = "study_instance_uid,dr_grade,dme\n" + "".join(f"{uid},2,no\n" for uid in uids)
    page.set_input_files(
        '#reference-upload input[name="file"]',
        files=[{"name": "ref.csv", "mimeType": "text/csv", "buffer": reference.encode()}],
    )
    page.click("#reference-upload button[type=submit]")
    page.wait_for_function("() => document.getElementById('case-table').innerText.includes('dr_grade=2')")
    page.fill('#add-readers input[name="emails"]', reader.email)
    page.click("#add-readers button[type=submit]")
    page.wait_for_function(f"() => document.getElementById('reader-table').innerText.includes('{reader.email}')")
    page.click("#open-study")
    page.wait_for_function("() => document.getElementById('study-state')?.textContent === 'open'")
    assert page.inner_text("#progress-total") == "0/3"

    # The reader: each arm shows only what it shows; no method list or rating form where there is no heatmap.
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, reader.email)
    page.goto(f"{server}/reader-studies")
    page.click("#my-studies a.button-primary")
    seen = {}
    for number in range(3):
        page.wait_for_url(f"{server}/assignments/*/read")
        page.wait_for_function("() => performance.getEntriesByName('lumen:first-image').length > 0", timeout=20_000)
        kind = json.loads(page.inner_text("#reading-data"))["assignment"]["kind"]
        if kind == "prediction_heatmap":
            page.wait_for_function("() => performance.getEntriesByName('lumen:overlay').length > 0", timeout=20_000)
        seen[kind] = {
            "methods": page.locator("#heatmap-controls").is_visible(),
            "rating": page.locator("#rating-form").is_visible(),
            "prediction": page.locator(".histogram").is_visible(),
            "options": page.locator("#method option").all_inner_texts(),
        }
        for name, value in (("dr_grade", "2"), ("dme", "false"), ("confidence", "4")):
            page.click(f'label:has(input[name="{name}"][value="{value}"])')
        page.click("#submit-read")
        page.wait_for_selector("#next-case:not([hidden])")
        if number < 2:
            page.click("#next-case")
    assert seen["unassisted"] == {"methods": False, "rating": False, "prediction": False, "options": []}
    assert seen["prediction"] == {"methods": False, "rating": False, "prediction": True, "options": []}
    heatmap_arm = seen["prediction_heatmap"]
    assert heatmap_arm["methods"] and heatmap_arm["rating"] and heatmap_arm["prediction"]
    assert len(heatmap_arm["options"]) == 1 and "Grad-CAM" in heatmap_arm["options"][0]
    assert errors == []
