"""A reader-study read in a real browser: the queue, an unaided read that shows no AI and cannot switch it
on, then the aided read of the same case with its heatmap, a rating, and the coordinator's dashboard; and the
demo effusion study's design, whose reader is asked about effusion and shown the AI's probability of it."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest
from sqlalchemy import select

from app.db import session_scope
from app.reader_studies import demo
from app.tables import AiModel, ExplanationRating, Read, Study
from tests.app.reader_studies.conftest import CHEST_LABELS, chest_case
from tests.conftest import ROOT
from tests.e2e.helpers import sign_in
from tests.e2e.test_browser_reading import fundus_with_heatmaps

pytestmark = pytest.mark.browser


def _answer_dr(page) -> None:
    for name, value in (("dr_grade", "2"), ("dme", "false"), ("confidence", "4")):
        page.click(f'label:has(input[name="{name}"][value="{value}"])')
    page.click("#submit-read")
    page.wait_for_selector("#next-case:not([hidden])")


def test_sequential_read_in_the_browser(server, browser, make_user, test_output):
    coordinator, token = make_user("coordinator")
    api = {"Authorization": f"Bearer {token}"}
    reader, _ = make_user("reader")
    study_id, heatmap_ids = fundus_with_heatmaps()
    with session_scope() as session:
        uid = session.get(Study, study_id).study_instance_uid
    conditions = [{"key": "unaided", "kind": "unassisted"},
                  {"key": "aided", "kind": "prediction_heatmap", "method": "integrated_gradients"}]
    created = httpx.post(f"{server}/api/reader-studies", headers=api, json={
        "name": "browser sequential", "scheme": "sequential", "conditions": conditions, "seed": 1})
    sid = created.json()["id"]
    for url, kwargs in ((f"/api/reader-studies/{sid}/reference", {"content": f"study_instance_uid,dr_grade\n{uid},2\n",
                                                                   "headers": {**api, "Content-Type": "text/csv"}}),
                        (f"/api/reader-studies/{sid}/readers", {"json": {"emails": [reader.email]}, "headers": api}),
                        (f"/api/reader-studies/{sid}/open", {"json": {}, "headers": api})):
        response = httpx.post(server + url, timeout=30, **kwargs)
        assert response.status_code == 200, response.text

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, reader.email)
    page.goto(f"{server}/reader-studies")
    page.click("#my-studies a.button-primary")
    page.wait_for_url(f"{server}/assignments/*/read")
    page.wait_for_function("() => performance.getEntriesByName('lumen:first-image').length > 0", timeout=20_000)

    # Unaided: no prediction or heatmap in the page, the switch is gone and A shows nothing.
    assert "C0001" in page.inner_text(".toolbar") and "Fundus^Reader" not in page.content()
    assert page.locator("#assist-toggle").is_disabled()
    assert page.locator(".assist-off-note").is_visible()
    assert "unassisted" in page.inner_text(".assist-off-note")
    page.keyboard.press("a")
    assert not page.locator(".histogram").count()
    assert page.evaluate("() => window.lumen.state.assist") is False
    page.screenshot(path=str(test_output / "reader-study-unaided.png"))
    _answer_dr(page)

    # Aided: the same case with the model's grades and the integrated-gradients map only; A is locked on.
    page.click("#next-case")
    page.wait_for_function("() => performance.getEntriesByName('lumen:overlay').length > 0", timeout=20_000)
    assert page.locator(".histogram").is_visible()
    assert page.locator("#method option").count() == 1
    page.keyboard.press("a")
    assert page.evaluate("() => window.lumen.state.assist") is True
    page.click('label:has(input[name="q-relevant"][value="4"])')
    page.click('label:has(input[name="q-trust"][value="3"])')
    page.click("#rating-form button[type=submit]")
    page.wait_for_selector("#rated-badge:not([hidden])")
    page.screenshot(path=str(test_output / "reader-study-aided.png"))
    _answer_dr(page)
    page.click("#next-case")
    page.wait_for_url(f"{server}/reader-studies/{sid}/queue?go=next")
    assert page.inner_text("#queue-progress") == "2/2" and "all your reads are done" in page.inner_text("#waiting")
    assert errors == []

    with session_scope() as session:
        reads = session.scalars(select(Read).where(Read.reader_id == reader.id)).all()
        assert sorted((r.assisted, r.dr_grade) for r in reads) == [(False, 2), (True, 2)]
        assert all(r.assignment_id is not None and r.time_spent_seconds > 0 for r in reads)
        rating = session.scalar(select(ExplanationRating).where(ExplanationRating.reader_id == reader.id))
        assert rating.method == "integrated_gradients" and rating.heatmap_id == heatmap_ids[1]
        assert rating.assignment_id is not None

    # The coordinator's dashboard shows the two reads and exports them.
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, server, coordinator.email)
    page.goto(f"{server}/reader-studies/{sid}")
    assert page.inner_text("#progress-total") == "2/2"
    assert page.locator('#results-table tr[data-condition="aided"]').count() == 1
    page.screenshot(path=str(test_output / "reader-study-dashboard.png"), full_page=True)
    exported = page.request.get(f"{server}/api/reader-studies/{sid}/export.csv")
    assert exported.ok and exported.text().count("\n") == 3


def test_coordinator_designs_and_opens_a_study_in_the_browser(server, browser, make_user, test_output):
    coordinator, _ = make_user("coordinator")
    reader, _ = make_user("reader")
    study_ids = [fundus_with_heatmaps()[0] for _ in range(3)]  # three conditions need three cases at least
    with session_scope() as session:
        uids = [session.get(Study, study_id).study_instance_uid for study_id in study_ids]
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, coordinator.email)
    page.goto(f"{server}/reader-studies")
    page.fill('#new-study input[name="name"]', "browser designed study")
    page.select_option('#new-study select[name="scheme"]', "counterbalanced")
    page.fill('#new-study input[name="seed"]', "12")
    page.click("#new-study button[type=submit]")
    page.wait_for_url(f"{server}/reader-studies/*")
    assert "seed 12" in page.inner_text(".page-head") and page.inner_text("#study-state") == "draft"

    # A bad reference file is refused with its reason and changes nothing.
    bad = b"study_instance_uid,dr_grade\n9.9,7\n"
    page.set_input_files('#reference-upload input[name="file"]',
                        files=[{"name": "ref.csv", "mimeType": "text/csv", "buffer": bad}])
    page.click("#reference-upload button[type=submit]")
    page.wait_for_function("() => document.getElementById('study-status').classList.contains('error')")
    assert "line 2: no stored study 9.9" in page.inner_text("#study-status")
    for study_id in study_ids:
        page.check(f'input[name="pick"][value="{study_id}"]')
    page.click("#add-cases button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#case-table tbody tr').length === 3")
    reference = "study_instance_uid,dr_grade,dme\n" + "".join(f"{uid},3,yes\n" for uid in uids)
    page.set_input_files('#reference-upload input[name="file"]',
                        files=[{"name": "ref.csv", "mimeType": "text/csv", "buffer": reference.encode()}])
    page.click("#reference-upload button[type=submit]")
    page.wait_for_function("() => document.getElementById('case-table').innerText.includes('dr_grade=3')")
    page.fill('#add-readers input[name="emails"]', reader.email)
    page.click("#add-readers button[type=submit]")
    page.wait_for_function(f"() => document.getElementById('reader-table').innerText.includes('{reader.email}')")
    page.click("#open-study")
    page.wait_for_function("() => document.getElementById('study-state')?.textContent === 'open'")
    assert page.inner_text("#progress-total") == "0/3"
    page.screenshot(path=str(test_output / "reader-study-design.png"), full_page=True)

    # A changed reference of the open study waits for the coordinator's confirmation, then applies (audited).
    changed = "study_instance_uid,dr_grade,dme\n" + "".join(f"{uid},1,no\n" for uid in uids)
    page.set_input_files('#reference-upload input[name="file"]',
                        files=[{"name": "ref.csv", "mimeType": "text/csv", "buffer": changed.encode()}])
    page.click("#reference-upload button[type=submit]")
    page.wait_for_selector("#reference-confirm:not([hidden])")
    assert "dr_grade=3 dme=True -> dr_grade=1 dme=False" in page.inner_text("#reference-confirm-text")
    assert "dr_grade=1" not in page.inner_text("#case-table")  # nothing changed yet
    page.click("#reference-confirm-apply")
    page.wait_for_function("() => document.getElementById('case-table').innerText.includes('dr_grade=1')")
    assert errors == []


def test_the_demo_effusion_study_asks_about_effusion_and_shows_its_probability(
    server, browser, make_user, test_output
):
    """The demo chest study's design on three of its radiographs: the coordinator picks the finding in the
    designer from the served model's labels; the reader is asked "Effusion present?" in every arm and sees, in
    the AI arms, the prediction's probability of effusion."""
    coordinator, token = make_user("coordinator")
    api = {"Authorization": f"Bearer {token}"}
    reader, _ = make_user("reader")
    effusion = [0.73, 0.18, 0.46]  # the cases' predicted probabilities of effusion (emphysema below each)
    with session_scope() as session:
        served = AiModel(name=f"cxr-served-{secrets.token_hex(3)}", version="1", task="multilabel",
                         labels=CHEST_LABELS, modalities=["CR", "DX"], input_spec={}, weights_sha256="0" * 64,
                         card={"domain": {"body_parts": ["CHEST"]}}, is_active=True)
        session.add(served)
        files = sorted((ROOT / "data" / "nih_cxr14_demo").glob("*.png"))[:3]
        cases = [chest_case(session, probabilities=[p, p / 3], data=path.read_bytes(), size=(512, 512))
                 for p, path in zip(effusion, files, strict=True)]
        served_name = served.name
    probability_of = {case.instance_id: p for case, p in zip(cases, effusion, strict=True)}
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        sign_in(page, server, coordinator.email)

        # The designer: a binary-finding study names its finding, chosen from the served model's labels.
        page.goto(f"{server}/reader-studies")
        assert page.locator("#finding-field").is_hidden()
        page.select_option("#study-task", "binary_finding")
        assert page.locator("#finding-field").is_visible()
        assert f"{served_name}'s probability of it" in page.inner_text("#finding-note")
        page.select_option("#finding-choice", "")
        page.fill("#finding-text", "pneumothorax")
        assert "No model served on chest radiographs reports" in page.inner_text("#finding-note")
        page.select_option("#finding-choice", "effusion")
        assert page.locator("#finding-other").is_hidden()
        page.locator("#finding-field").screenshot(path=str(test_output / "reader-study-designer-finding.png"))
        page.fill('#new-study input[name="name"]', f"effusion designed {secrets.token_hex(3)}")
        page.click("#new-study button[type=submit]")
        page.wait_for_url(f"{server}/reader-studies/*")
        said = page.inner_text("#study-finding")
        assert "Effusion present?" in said and f"{served_name}'s probability of it" in said

        # The demo's design, opened on the three cases.
        design = {"name": f"effusion demo {secrets.token_hex(3)}", "task": "binary_finding",
                  "finding": demo.FINDING, "seed": demo.SELECTION_SEED,
                  "conditions": [condition.model_dump(mode="json") for condition in demo.CHEST_CONDITIONS]}
        sid = httpx.post(f"{server}/api/reader-studies", headers=api, json=design, timeout=30).json()["id"]
        reference = "study_instance_uid,finding\n" + "".join(f"{case.uid},present\n" for case in cases)
        for url, kwargs in (
            (f"/api/reader-studies/{sid}/reference",
             {"content": reference, "headers": {**api, "Content-Type": "text/csv"}}),
            (f"/api/reader-studies/{sid}/readers", {"json": {"emails": [reader.email]}, "headers": api}),
            (f"/api/reader-studies/{sid}/open", {"json": {}, "headers": api}),
        ):
            response = httpx.post(server + url, timeout=30, **kwargs)
            assert response.status_code == 200, response.text

        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("pageerror", lambda error: errors.append(str(error)))
        sign_in(page, server, reader.email)
        page.goto(f"{server}/reader-studies/{sid}/queue?go=next")
        kinds = set()
        for number in range(3):
            page.wait_for_url(f"{server}/assignments/*/read")
            page.wait_for_function("() => performance.getEntriesByName('lumen:first-image').length > 0",
                                   timeout=20_000)
            data = json.loads(page.inner_text("#reading-data"))
            kind, instance = data["assignment"]["kind"], data["instances"][0]["id"]
            assert page.inner_text('[data-field="finding"] legend') == "Effusion present?"
            assert page.locator('[data-field="finding"] label').all_inner_texts() == ["Present", "Absent"]
            if kind == "unassisted":
                assert page.locator(".finding-probability").count() == 0
            else:
                assert page.inner_text(".finding-line").startswith("Effusion:")
                assert page.inner_text(".finding-probability") == f"{probability_of[instance] * 100:.0f}%"
                assert page.locator(".histogram .hist-label").all_inner_texts() == ["effusion"]
            kinds.add(kind)
            if number == 1:
                page.screenshot(path=str(test_output / "reader-study-effusion.png"))
            for name, value in (("finding", "present"), ("confidence", "4")):
                page.click(f'label:has(input[name="{name}"][value="{value}"])')
            page.click("#submit-read")
            page.wait_for_selector("#next-case:not([hidden])")
            if number < 2:
                page.click("#next-case")
        assert kinds == {"unassisted", "prediction", "prediction_heatmap"}
        assert errors == []
        with session_scope() as session:
            reads = session.scalars(select(Read).where(Read.reader_id == reader.id)).all()
            assert sorted((r.form, r.finding) for r in reads) == [("presence", "present")] * 3
            for read in reads:  # what the panel showed, recorded at submit
                unassisted = read.ai_snapshot["condition_kind"] == "unassisted"
                expected = None if unassisted else probability_of[read.instance_id]
                assert read.ai_snapshot["finding_probability"] == expected
    finally:
        with session_scope() as session:
            session.scalar(select(AiModel).where(AiModel.name == served_name)).is_active = False
