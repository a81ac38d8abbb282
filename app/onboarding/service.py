"""The rules of bringing a model in: who may replace what, where the upload goes, when the worker is asked.

The torch work (reading the file, proposing the target layer, the checks, installing) is the worker's
(workers/onboarding.py); this module only stores, refuses and sends. A model version is immutable once it has
predictions: new weights need a new version, so that every read and export names the weights it saw.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import queue
from app.config import get_settings
from app.errors import Conflict, Invalid, NotFound
from app.onboarding.schemas import CardAnswers, Confirmation
from app.tables import AiModel, ModelOnboarding, OnboardingState, Prediction

logger = logging.getLogger(__name__)

# Formats Lumen cannot explain: attribution needs the network's gradients in torch.
_REFUSED_SUFFIXES = {
    ".onnx": "an ONNX graph has no gradients Lumen can compute attributions with",
    ".h5": "a Keras/TensorFlow model cannot run in PyTorch",
    ".keras": "a Keras/TensorFlow model cannot run in PyTorch",
    ".pb": "a TensorFlow graph cannot run in PyTorch",
    ".tflite": "a TensorFlow Lite model cannot run in PyTorch",
}
_EXPORT_HINT = ("export it as TorchScript (torch.jit.script or trace, then .save), a state dict of a timm network, or "
                "a MONAI bundle")
IN_FLIGHT = (OnboardingState.inspecting, OnboardingState.proposed, OnboardingState.checking)
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadedFile:
    """A file as received: its name as the user gave it and a stream to read it from."""

    filename: str
    stream: BinaryIO


def start(
    session: Session, *, answers: CardAnswers, model: UploadedFile | Path,
    validation: UploadedFile | Path | None = None, test: UploadedFile | Path | None = None, user_id: int | None,
    send: bool = True,
) -> ModelOnboarding:
    """A new onboarding with its files stored, sent to a worker once the session commits (unless `send` is False:
    `lumen models add` runs it in its own process). Invalid for a format Lumen cannot explain or a file too
    large; Conflict when the name and version are taken (`check_version_free`)."""
    filename = model.name if isinstance(model, Path) else model.filename
    refused = _refused_reason(filename)
    if refused:
        raise Invalid(f"{filename}: {refused}; {_EXPORT_HINT}")
    check_version_free(session, name=answers.name, version=answers.version)
    row = ModelOnboarding(
        name=answers.name, version=answers.version, filename=_safe_name(filename),
        answers=answers.model_dump(mode="json"), created_by_id=user_id, stage="waiting for a worker",
    )
    session.add(row)
    session.flush()
    folder = get_settings().onboarding_dir / str(row.id)
    row.folder = str(folder)
    try:
        _store(model, folder / "upload" / row.filename)
        for kind, labelled in (("validation", validation), ("test", test)):
            if labelled is not None:
                _store_labelled(labelled, folder / kind)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if send:
        queue.send_after_commit(session, row.id, get_settings().inference_queue, task=queue.ONBOARD_MODEL_TASK)
    logger.info("onboarding %s: %s %s from %s", row.id, row.name, row.version, row.filename)
    return row


def confirm(session: Session, *, onboarding_id: int, confirmation: Confirmation, send: bool = True) -> ModelOnboarding:
    """The coordinator confirmed the target layer on the preview: the checks are sent. Conflict unless the
    onboarding waits for this; Invalid for a layer that is not one of the proposal's candidates."""
    row = get(session, onboarding_id=onboarding_id)
    if row.state != OnboardingState.proposed:
        raise Conflict(f"onboarding {row.id} is {row.state.value}, not waiting for a confirmation")
    candidates = [name for name, _shape in row.proposal.get("candidates", [])]
    layer = confirmation.target_layer
    if layer and layer not in candidates:
        raise Invalid(
            f"target layer {layer!r} is not a spatial layer of this model; candidates: {', '.join(candidates)}"
        )
    row.answers = {**row.answers, "target_layer": layer}
    row.state, row.progress, row.stage, row.error = OnboardingState.checking, 0, "waiting for a worker", ""
    if send:
        queue.send_after_commit(session, row.id, get_settings().inference_queue, task=queue.ONBOARD_MODEL_TASK)
    return row


def get(session: Session, *, onboarding_id: int) -> ModelOnboarding:
    row = session.get(ModelOnboarding, onboarding_id)
    if row is None:
        raise NotFound(f"onboarding {onboarding_id} does not exist", what=f"Onboarding {onboarding_id}")
    return row


def recent(session: Session, *, limit: int = 50) -> Sequence[ModelOnboarding]:
    return session.scalars(select(ModelOnboarding).order_by(ModelOnboarding.id.desc()).limit(limit)).all()


def check_version_free(session: Session, *, name: str, version: str) -> None:
    """Conflict when this name and version cannot be (re)installed: it has predictions (its weights are what
    those predictions were made with), it was installed from a model folder rather than onboarded, or another
    onboarding of it is under way."""
    busy = session.scalar(
        select(ModelOnboarding.id).where(
            ModelOnboarding.name == name, ModelOnboarding.version == version, ModelOnboarding.state.in_(IN_FLIGHT)
        )
    )
    if busy is not None:
        raise Conflict(f"{name} {version} is already being onboarded (onboarding {busy})")
    model = session.scalar(select(AiModel).where(AiModel.name == name, AiModel.version == version))
    if model is None:
        return
    predictions = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.model_id == model.id))
    if predictions:
        raise Conflict(
            f"{name} {version} already has {predictions} predictions: a version is immutable once it has "
            "predictions; give the new weights a new version"
        )
    onboarded = session.scalar(select(ModelOnboarding.id).where(ModelOnboarding.model_id == model.id))
    if onboarded is None:
        raise Conflict(f"{name} {version} is installed from a model folder; give the new weights a new version")


def _refused_reason(filename: str) -> str:
    return _REFUSED_SUFFIXES.get(Path(filename).suffix.lower(), "")


def _safe_name(filename: str) -> str:
    """The file's own name without folders or odd characters (it becomes a path on disk)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename.replace("\\", "/")).name).lstrip(".")
    return name[:200] or "model"


def _store(source: UploadedFile | Path, target: Path) -> None:
    """Copy an upload (streamed, bounded) or a local file or folder (the CLI) to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, Path):
        if source.is_dir():
            shutil.copytree(source, target)
        elif source.is_file():
            shutil.copyfile(source, target)
        else:
            raise Invalid(f"{source}: no such file or folder")
        return
    limit, total = get_settings().max_model_bytes, 0
    with open(target, "wb") as out:
        while chunk := source.stream.read(_READ_CHUNK):
            total += len(chunk)
            if total > limit:
                raise Invalid(f"{source.filename}: larger than the limit of {limit} bytes (LUMEN_MAX_MODEL_BYTES)")
            out.write(chunk)
    if total == 0:
        raise Invalid(f"{source.filename}: the file is empty")


def _store_labelled(source: UploadedFile | Path, target: Path) -> None:
    """A labelled set: a folder with labels.csv and its images (the CLI), a .zip of one (an upload), or a lone
    .csv of studies already stored in Lumen (columns study_instance_uid,label)."""
    name = source.name if isinstance(source, Path) else source.filename
    if isinstance(source, Path) and source.is_dir():
        if not (source / "labels.csv").is_file():
            raise Invalid(f"{source}: a labelled set needs a labels.csv (columns image,label)")
        shutil.copytree(source, target)
        return
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        _store(source, target / "labels.csv")
        header = (target / "labels.csv").read_text(encoding="utf-8-sig", errors="replace").splitlines()[:1]
        if not header or "study_instance_uid" not in header[0].split(","):
            shutil.rmtree(target, ignore_errors=True)
            raise Invalid(f"{name}: a lone labels.csv names studies stored in Lumen (columns study_instance_uid,"
                          "label); images come with it in a .zip (columns image,label)")
        return
    if suffix != ".zip":
        raise Invalid(f"{name}: a labelled set is a .zip of labels.csv (columns image,label) and its images, or a "
                      "labels.csv of stored studies (columns study_instance_uid,label)")
    _store(source, target.with_suffix(".zip"))
