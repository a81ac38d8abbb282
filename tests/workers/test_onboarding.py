"""A user's model end to end, as `lumen models add` and the pages run it (workers/onboarding.py): inspected,
confirmed, checked on real labelled images, installed, then serving predictions and heatmaps through the API."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.ai_models.sync import sync_now
from app.config import get_settings
from app.db import session_scope
from app.errors import Conflict
from app.onboarding import service
from app.onboarding.schemas import CardAnswers, Confirmation
from app.tables import Heatmap, Job, ModelOnboarding, OnboardingState, Prediction, Study
from models.card import load_card
from tests.e2e.helpers import FUNDUS_IN_DOMAIN
from tests.models.onboarding.bundles import LABELS, make_bundle, trained_retina_net
from tests.workers.onboarding_fixtures import ROOT, dr_answers, dr_densenet_torchscript, retinamnist_set
from workers import onboarding, pipeline


@pytest.fixture
def installed_cleanup() -> Iterator[list[str]]:
    """Folders of models the test installs, removed afterwards (their rows deactivated): routing of the other
    tests must not meet them."""
    names: list[str] = []
    yield names
    for name in names:
        shutil.rmtree(get_settings().onboarded_models_dir / name, ignore_errors=True)
    sync_now()


def _onboard(model: Path, answers: dict[str, object], **sets: Path) -> int:
    with session_scope() as session:
        row = service.start(session, answers=CardAnswers.model_validate(answers), model=model, user_id=None,
                            send=False, **sets)
        return row.id


def _row(onboarding_id: int) -> ModelOnboarding:
    with session_scope(writes=False) as session:
        row = session.get(ModelOnboarding, onboarding_id)
        session.expunge(row)
        return row


def _uploaded_job(app_client, auth_headers, model_name: str) -> tuple[int, list[str]]:
    """Upload a fundus photograph as XC (the onboarded models' modality) through the API: its job's id and methods."""
    photo = io.BytesIO()
    Image.open(FUNDUS_IN_DOMAIN).convert("RGB").resize((512, 427)).save(photo, format="PNG")
    photo_bytes = photo.getvalue() + np.random.default_rng().bytes(8)  # a new sha256: not a duplicate upload
    response = app_client.post("/api/studies", headers=auth_headers("coordinator"),
                               data={"modality": "XC", "body_part": "EYE"},
                               files={"files": ("fundus.png", photo_bytes, "image/png")})
    assert response.status_code == 201, response.text
    with session_scope(writes=False) as session:
        [job] = session.query(Job).filter_by(study_id=response.json()["id"]).all()
        assert job.model.name == model_name
        return job.id, list(job.methods)


def _stored_methods(job_id: int) -> set[str]:
    """The methods of the maps stored for the job's prediction (one prediction, five probabilities)."""
    with session_scope(writes=False) as session:
        [prediction] = session.query(Prediction).filter_by(job_id=job_id).all()
        assert len(prediction.probabilities) == 5
        return {heatmap.method for heatmap in session.query(Heatmap).filter_by(prediction_id=prediction.id)}


def test_a_torchscript_dr_model_is_checked_installed_and_serves_maps(
    tmp_path: Path, app_client, auth_headers, installed_cleanup: list[str]
) -> None:
    name = "dr-torchscript-onboarded"
    installed_cleanup.append(f"{name}-1.0.0")
    scripted = dr_densenet_torchscript(tmp_path / "dr-densenet.ts")
    onboarding_id = _onboard(scripted, dr_answers(name), validation=retinamnist_set(tmp_path / "val", "val", 120),
                             test=retinamnist_set(tmp_path / "test", "test", 120))

    assert onboarding.run(onboarding_id, worker="test") == OnboardingState.proposed
    proposal = _row(onboarding_id).proposal
    # TorchScript takes no Python hooks: no target layer, said so, no preview.
    assert proposal["format"] == "torchscript" and proposal["layer"] == "" and not proposal["preview"]
    assert "TorchScript" in proposal["layer_reason"]
    with session_scope() as session:
        service.confirm(session, onboarding_id=onboarding_id, confirmation=Confirmation(target_layer=""), send=False)
    assert onboarding.run(onboarding_id, worker="test") == OnboardingState.installed, _row(onboarding_id).error

    row = _row(onboarding_id)
    report = row.report
    assert report["passed"] and report["serve_automatically"]
    # Layer methods cannot run on TorchScript: reported, not offered; gradient methods were tested.
    assert not report["methods"]["gradcam"]["passed"]
    assert report["methods"]["saliency"]["passed"]
    # Calibrated on the 120 validation photographs: the same split the shipped card's temperature was fitted on.
    assert report["calibration"]["temperature"] == pytest.approx(0.975, abs=0.1)
    served = set(report["default_methods"])

    # An upload on the model's modality gets a job of the onboarded model, with the methods that passed.
    job_id, methods = _uploaded_job(app_client, auth_headers, name)
    assert set(methods) <= served and "gradcam" not in methods
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
    assert _stored_methods(job_id) == set(methods)

    # With predictions the version is immutable: new weights need a new version.
    with session_scope() as session, pytest.raises(Conflict, match="predictions"):
        service.start(session, answers=CardAnswers.model_validate(dr_answers(name)), model=scripted,
                      user_id=None, send=False)


def test_a_model_without_a_validation_set_runs_on_request_only(tmp_path: Path, installed_cleanup: list[str]) -> None:
    name = "dr-unvalidated"
    installed_cleanup.append(f"{name}-1.0.0")
    onboarding_id = _onboard(dr_densenet_torchscript(tmp_path / "m.ts"), dr_answers(name))
    assert onboarding.run(onboarding_id, worker="test") == OnboardingState.proposed
    with session_scope() as session:
        service.confirm(session, onboarding_id=onboarding_id, confirmation=Confirmation(), send=False)
    assert onboarding.run(onboarding_id, worker="test") == OnboardingState.installed, _row(onboarding_id).error
    row = _row(onboarding_id)
    assert not row.report["serve_automatically"] and "request" in row.stage


def test_a_file_that_is_not_a_model_fails_with_the_reason(tmp_path: Path) -> None:
    junk = tmp_path / "weights.pt"
    junk.write_bytes(b"these are not weights")
    onboarding_id = _onboard(junk, dr_answers("not-a-model"))
    assert onboarding.run(onboarding_id, worker="test") == OnboardingState.failed
    row = _row(onboarding_id)
    assert row.error.startswith("weights.pt is not a model file Lumen reads"), row.error
    assert not (get_settings().onboarded_models_dir / "not-a-model-1.0.0").exists()


def test_bad_labels_in_the_validation_set_fail_naming_the_line(tmp_path: Path) -> None:
    folder = retinamnist_set(tmp_path / "val", "val", 4)
    table = folder / "labels.csv"
    table.write_text(table.read_text().replace("none", "healthy", 1))
    onboarding_id = _onboard(dr_densenet_torchscript(tmp_path / "m.ts"), dr_answers("bad-labels"), validation=folder)
    assert onboarding.run(onboarding_id, worker="test") == OnboardingState.proposed
    with session_scope() as session:
        service.confirm(session, onboarding_id=onboarding_id, confirmation=Confirmation(), send=False)
    assert onboarding.run(onboarding_id, worker="test") == OnboardingState.failed
    assert "'healthy' is not one of the labels" in _row(onboarding_id).error


def test_lumen_models_add_onboards_a_trained_monai_bundle(
    tmp_path: Path, app_client, auth_headers, installed_cleanup: list[str]
) -> None:
    """The CLI, in its own process, on a MONAI bundle written by monai's tools around a net trained here: labels
    and input come from the bundle's metadata, the last spatial layer is proposed and Grad-CAM on it passes."""
    installed_cleanup.append("retina-monai-1.2.0")
    bundle = make_bundle(tmp_path / "retina_bundle", trained_retina_net())
    command = [
        sys.executable, "-m", "app.cli", "models", "add", str(bundle), "--name", "retina-monai", "--version", "1.2.0",
        "--modalities", "XC", "--body-part", "eye fundus", "--training-data", "RetinaMNIST train split",
        "--licence", "CC BY 4.0", "--validation", str(retinamnist_set(tmp_path / "val", "val", 120, LABELS)),
        "--test", str(retinamnist_set(tmp_path / "test", "test", 200, LABELS)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "installed retina-monai 1.2.0" in done.stdout
    assert "proposed target layer: class_layers.relu" in done.stdout
    card = load_card(get_settings().onboarded_models_dir / "retina-monai-1.2.0")
    assert card.labels == LABELS and list(card.input.size) == [28, 28]
    assert card.architecture.name == "monai_bundle" and card.target_layer == "class_layers.relu"
    assert card.serve_automatically and card.ood is not None
    explanations = card.evaluation["explanations"]
    assert "gradcam" in explanations["default"]
    accuracy = card.metrics["accuracy"]
    # Trained six epochs here (0.51 on all 400 test photographs): above the 0.435 of always saying "none".
    assert accuracy > 0.435

    # Served: an upload on its modality gets its prediction and the maps of the methods that passed, Grad-CAM too.
    job_id, methods = _uploaded_job(app_client, auth_headers, "retina-monai")
    assert "gradcam" in methods and set(methods) <= set(explanations["default"])
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
    assert _stored_methods(job_id) == set(methods)


def test_a_validation_set_may_name_studies_already_stored_in_lumen(
    tmp_path: Path, app_client, auth_headers, installed_cleanup: list[str]
) -> None:
    """labels.csv (study_instance_uid,label) of studies uploaded earlier: calibrated on exactly those images."""
    name = "dr-from-stored-studies"
    installed_cleanup.append(f"{name}-1.0.0")
    folder = retinamnist_set(tmp_path / "val", "val", 40)
    headers = auth_headers("coordinator")
    rows = []
    for line in (folder / "labels.csv").read_text().splitlines()[1:]:
        image, label = line.split(",")
        response = app_client.post("/api/studies", headers=headers, data={"modality": "OT", "body_part": "EYE"},
                                   files={"files": (image, (folder / image).read_bytes(), "image/png")})
        assert response.status_code == 201, response.text
        with session_scope(writes=False) as session:
            rows.append(f"{session.get(Study, response.json()['id']).study_instance_uid},{label}")
    table = tmp_path / "stored.csv"
    table.write_text("study_instance_uid,label\n" + "\n".join(rows) + "\n")
    onboarding_id = _onboard(dr_densenet_torchscript(tmp_path / "m.ts"), dr_answers(name), validation=table)
    assert onboarding.run(onboarding_id, worker="test") == OnboardingState.proposed
    with session_scope() as session:
        service.confirm(session, onboarding_id=onboarding_id, confirmation=Confirmation(), send=False)
    assert onboarding.run(onboarding_id, worker="test") == OnboardingState.installed, _row(onboarding_id).error
    calibration = _row(onboarding_id).report["calibration"]
    assert "40 images" in str(calibration), calibration
