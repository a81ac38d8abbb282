"""Bringing a model in, in a real browser: a coordinator uploads a zipped MONAI bundle (a net trained here) with
its validation and test sets, sees the proposed target layer on its Grad-CAM preview, confirms it, follows the
checks and finds the installed model with its randomisation table; an ONNX file is refused with its reason.

The worker's part runs in this process (workers/onboarding.py, as the Celery task runs it) when the page waits
for it. With UPDATE_DOCS_SCREENSHOTS=1 the screenshots go to docs/screenshots/ (`make screenshots`)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from app.ai_models.sync import sync_now
from app.config import get_settings
from app.db import session_scope
from app.tables import ModelOnboarding, OnboardingState
from tests.e2e.helpers import sign_in
from tests.e2e.test_browser_designer import _screenshot, _shots
from tests.models.onboarding.bundles import LABELS, make_bundle, trained_retina_net
from tests.workers.onboarding_fixtures import retinamnist_set
from workers import onboarding

pytestmark = pytest.mark.browser


def _zipped(folder: Path) -> Path:
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            handle.write(path, path.relative_to(folder.parent))
    return archive


def _fill(page, **fields: str) -> None:
    for name, value in fields.items():
        page.fill(f'#add-model-form [name="{name}"]', value)


def _latest_onboarding(name: str) -> int:
    with session_scope(writes=False) as session:
        return session.query(ModelOnboarding).filter_by(name=name).order_by(ModelOnboarding.id.desc()).first().id


def test_a_coordinator_onboards_a_monai_bundle(server, browser, make_user, tmp_path, test_output) -> None:
    name = "retina-monai-browser"
    folders = _shots(test_output)
    bundle = _zipped(make_bundle(tmp_path / "retina_bundle", trained_retina_net()))
    validation = _zipped(retinamnist_set(tmp_path / "validation", "val", 120, LABELS))
    test = _zipped(retinamnist_set(tmp_path / "test", "test", 120, LABELS))
    user, _ = make_user("coordinator")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in(page, server, user.email)
        page.goto(f"{server}/admin/models")
        page.click("#add-model")
        page.wait_for_selector("#add-model-form")
        _fill(page, name=name, version="1.2.0", modalities="XC", body_part="eye fundus",
              training_data="RetinaMNIST train split (1,080 photographs)", licence="CC BY 4.0")
        page.set_input_files('#add-model-form [name="model"]', str(bundle))
        page.set_input_files('#add-model-form [name="validation"]', str(validation))
        page.set_input_files('#add-model-form [name="test"]', str(test))
        _screenshot(page.locator("#add-model-form"), folders, "onboarding-form.png")
        page.click("#add-model-submit")
        page.wait_for_selector("#onboarding[data-state='inspecting']")
        onboarding_id = _latest_onboarding(name)

        assert onboarding.run(onboarding_id, worker="browser-test") == OnboardingState.proposed
        # The page follows the row and shows the proposal without a reload by hand.
        page.wait_for_selector("#confirm-form", timeout=15_000)
        assert page.locator("#target-layer").input_value() == "class_layers.relu"
        assert page.evaluate("document.getElementById('preview').naturalWidth") == 768
        assert "none, mild, moderate, severe, proliferative" in page.inner_text("#proposal")
        _screenshot(page.locator("#proposal"), folders, "onboarding-proposal.png")

        page.click("#confirm")
        page.wait_for_selector("#onboarding[data-state='checking']")
        assert onboarding.run(onboarding_id, worker="browser-test") == OnboardingState.installed
        page.wait_for_selector("#onboarding[data-state='installed']", timeout=15_000)
        checks = {row.get_attribute("data-check"): row.get_attribute("data-passed")
                  for row in page.locator("#checks tbody tr").all()}
        assert checks["forward"] == checks["backward"] == checks["target layer"] == "true"
        assert page.locator("#methods tr[data-method='gradcam'][data-passed='true']").count() == 1
        _screenshot(page.locator("#report"), folders, "onboarding-report.png")
        page.click("#installed-model")
        page.wait_for_load_state()
        assert name in page.inner_text("h1")

        # ONNX: refused on the form, with the reason and what to upload instead; nothing stored.
        page.goto(f"{server}/admin/models/add")
        _fill(page, name="an-onnx-model", version="1", modalities="XC", body_part="eye fundus", training_data="x",
              licence="x")
        onnx_file = tmp_path / "net.onnx"
        onnx_file.write_bytes(b"\x08\x07\x12\x07pytorch")
        page.set_input_files('#add-model-form [name="model"]', str(onnx_file))
        page.click("#add-model-submit")
        error = page.inner_text("#onboarding-error")
        assert "ONNX" in error and "TorchScript" in error
    finally:
        page.close()
        shutil.rmtree(get_settings().onboarded_models_dir / f"{name}-1.2.0", ignore_errors=True)
        sync_now()
