"""A user's model on its way in, run by a worker (task `lumen.onboard_model`) or by `lumen models add`:

1. inspect: read the uploaded file (`models.onboarding.formats.inspect_upload`: TorchScript, a timm state dict, a
   MONAI bundle; ONNX and Keras refused with why), write a draft card from the answers and what the file says,
   load it, list its spatial layers and propose the last one as the target layer, and draw the Grad-CAM of that
   layer on a sample image of the model's domain (preview.png) for the coordinator to confirm;
2. check, once confirmed: `models.onboarding.checks.run_checks` (forward and backward, the target layer's maps,
   the model-randomisation test of each default method, calibration, referral rule and input-domain gate from
   the labelled validation set, test metrics with intervals), the card completed from the measured results, and
   the model installed (copied into the onboarded-models folder and synced) only when the checks pass.

Each phase writes its progress into the onboarding's row; a failure says why in the row and installs nothing.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from sqlalchemy import select

from app.ai_models.sync import sync_models
from app.config import get_settings
from app.db import session_scope
from app.ingest import pixels
from app.storage import get_blob_store
from app.tables import AiModel, Instance, ModelOnboarding, OnboardingState, Series, Study
from models.card import CARD_FILE, CardError, ModelCard, file_sha256, load_card
from models.explain.registry import get_explainer
from models.onboarding import checks, formats
from models.ood import Image, ImageLike
from models.preprocessing import prepare, to_unit_range
from models.registry import load_model

logger = logging.getLogger(__name__)

_CHECKOUT = Path(__file__).resolve().parent.parent
# Images of each kind of domain, for the preview and the checks when no validation set was given.
_DOMAIN_SAMPLES = {
    "rgb": [_CHECKOUT / "demo" / "IDRiD_02.jpg", _CHECKOUT / "demo" / "IDRiD_01_OP_jpegbaseline.dcm"],
    "grayscale": [_CHECKOUT / "demo" / "RG1_J2KI.dcm",
                  *sorted((_CHECKOUT / "data" / "nih_cxr14_demo").glob("*.png"))[:5]],
}
_SAMPLES = 8
_PREVIEW_SIDE = 384
Echo = Callable[[int, str], None]


class OnboardingFailed(Exception):
    """The model cannot be onboarded; the message says why, in words for the coordinator."""


def run(onboarding_id: int, *, worker: str = "", echo: Echo | None = None) -> OnboardingState:
    """Run the phase the onboarding waits for (inspect, or check once confirmed); its state afterwards."""
    with session_scope() as session:
        row = session.get(ModelOnboarding, onboarding_id)
        if row is None:
            logger.warning("onboarding %s does not exist", onboarding_id)
            return OnboardingState.failed
        state = row.state
        row.worker, row.started_at = worker, datetime.now(UTC)
    phase = {OnboardingState.inspecting: inspect, OnboardingState.checking: check}.get(state)
    if phase is None:
        return state  # already proposed, installed or failed: a message delivered twice does nothing
    try:
        phase(onboarding_id, echo=echo)
    except (OnboardingFailed, CardError) as exc:
        _fail(onboarding_id, str(exc))
    except Exception as exc:
        logger.exception("onboarding %s failed", onboarding_id)
        _fail(onboarding_id, f"{type(exc).__name__}: {exc}")
    with session_scope(writes=False) as session:
        return session.get(ModelOnboarding, onboarding_id).state  # type: ignore[union-attr]


def inspect(onboarding_id: int, *, echo: Echo | None = None) -> None:
    """Phase 1: what the file is, a draft card, the proposed target layer and its preview."""
    progress = _progress_writer(onboarding_id, echo)
    folder, filename, answers = _row_fields(onboarding_id)
    progress(5, "reading the file")
    detected = formats.inspect_upload(folder / "upload" / filename)
    progress(20, f"a {_format_words(detected)}; loading it")
    card = _write_draft(detected, answers)
    model = load_model(card)
    proposal = formats.propose_target_layer(model, (card.input.channels, *card.input.size))
    candidates = [[name, list(shape)] for name, shape in proposal.candidates]
    names = [name for name, _shape in proposal.candidates]
    layer = answers.get("target_layer") or proposal.layer or ""
    if answers.get("target_layer") and layer not in names:
        raise OnboardingFailed(f"target layer {layer!r} is not a spatial layer of this model; candidates: "
                               f"{', '.join(names) or 'none'}")
    progress(60, "drawing the target layer's map on a sample image")
    preview = False
    if layer:
        samples = _samples(folder, card, limit=1)
        preview = _draw_preview(model, card, layer, samples[0], folder / "preview.png")
    found = {
        "format": detected.format,
        "format_words": _format_words(detected),
        "architecture": card.architecture.name,
        "weights": card.weights,
        "weights_sha256": card.weights_sha256,
        "labels": list(card.labels),
        "input": card.as_dict()["input"],
        "layer": layer,
        "layer_reason": proposal.reason,
        "candidates": candidates,
        "notes": list(detected.notes),
        "proposed": detected.proposed,
        "preview": preview,
        "model_folder": str(card.folder),
    }
    with session_scope() as session:
        row = _row(session, onboarding_id)
        row.proposal, row.state, row.progress = found, OnboardingState.proposed, 100
        row.stage = "confirm the target layer on the preview"
    progress(100, f"proposed target layer: {layer or 'none'} ({proposal.reason})")


def check(onboarding_id: int, *, echo: Echo | None = None) -> None:
    """Phase 2: the checks, the card completed from them, and the model installed if they pass."""
    progress = _progress_writer(onboarding_id, echo)
    folder, _filename, answers = _row_fields(onboarding_id)
    with session_scope(writes=False) as session:
        model_folder = Path(_row(session, onboarding_id).proposal["model_folder"])
    data = json.loads((model_folder / CARD_FILE).read_text(encoding="utf-8"))
    data["target_layer"] = answers.get("target_layer", "")
    _write_card(model_folder, data)
    card = load_card(model_folder)
    progress(2, "loading the model")
    model = load_model(card)
    validation = _labelled(folder / "validation", card, "validation")
    test = _labelled(folder / "test", card, "test")
    samples = list(validation.images[:_SAMPLES]) if validation is not None else _samples(folder, card, limit=_SAMPLES)
    methods = list(get_settings().default_methods)
    report = checks.run_checks(
        model, card, samples=samples, methods=methods, validation=validation, test=test,
        progress=lambda fraction, stage: progress(5 + int(90 * fraction), stage),
    )
    completed = checks.apply_report(card.as_dict(), report, model_folder)
    _write_card(model_folder, completed)
    card = load_card(model_folder)  # the completed card must itself be valid
    summary = report.as_dict()
    if not report.passed:
        with session_scope() as session:
            row = _row(session, onboarding_id)
            row.report = summary
        raise OnboardingFailed("the checks failed: " + "; ".join(report.failures))
    progress(97, "installing")
    model_id = _install(card)
    with session_scope() as session:
        row = _row(session, onboarding_id)
        row.report, row.model_id, row.state, row.progress = summary, model_id, OnboardingState.installed, 100
        row.stage = "installed: " + ("served automatically" if report.serve_automatically else "run on request only")
        row.finished_at = datetime.now(UTC)
    if echo:
        echo(100, row.stage)


def _install(card: ModelCard) -> int:
    """Copy the checked model folder into the onboarded-models folder (replacing an earlier onboarding of the same
    version, which `app.onboarding.service` allows only without predictions) and register it."""
    target_root = get_settings().onboarded_models_dir
    target = target_root / f"{card.name}-{card.version}"
    staging = target_root / f".{card.name}-{card.version}.new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(card.folder, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # the folder appears whole or not at all for a worker scanning the models
    with session_scope() as session:
        sync_models(session)
        row = session.query(AiModel).filter_by(name=card.name, version=card.version).one()
        return row.id


def _write_draft(detected: formats.Detected, answers: dict[str, Any]) -> ModelCard:
    """The card as far as the answers and the file tell it, in the folder the file now lies in; its checks'
    results come later. Not served until then."""
    proposed = detected.proposed or {}
    labels = answers.get("labels") or proposed.get("labels") or []
    if len(labels) < 2:
        raise OnboardingFailed("the file does not name its classes: give the labels, one per output")
    told = proposed.get("input") or {}
    colour = answers.get("colour", "rgb")
    channels = 3 if colour == "rgb" else 1
    if told.get("channels") and told["channels"] != channels:
        raise OnboardingFailed(f"the file says the network takes {told['channels']} channels, the answers say "
                               f"{colour} ({channels})")
    size = answers.get("size") or told.get("size") or []
    if not size:
        raise OnboardingFailed("the input size is not known: give it (e.g. 224 x 224)")
    architecture = detected.architecture
    if architecture is None:
        named = answers.get("architecture", "")
        if not named:
            raise OnboardingFailed("a plain state dict does not say which network it is for: name it (timm:<name>), "
                                   "or upload a TorchScript file or a MONAI bundle")
        architecture_data: dict[str, Any] = {"name": "timm", "params": {"model_name": named.removeprefix("timm:")}}
    else:
        architecture_data = {"name": architecture.name, "params": dict(architecture.params)}
    uncertainty: dict[str, Any] = {"method": answers.get("uncertainty", "none")}
    if uncertainty["method"] == "mc_dropout":
        uncertainty["samples"] = answers.get("uncertainty_samples", 20)
    elif uncertainty["method"] == "tta":
        uncertainty["flips"] = [[], [-1]]
    data = {
        "name": answers["name"],
        "version": answers["version"],
        "task": answers.get("task", "classification"),
        "labels": labels,
        "modalities": answers["modalities"],
        "input": {
            "size": size,
            "colour": colour,
            "channels": channels,
            "mean": answers.get("mean") or [0.0] * channels,
            "std": answers.get("std") or [1.0] * channels,
            "crop": answers.get("crop"),
            "windowing": answers.get("windowing", "minmax"),
            "invert_monochrome1": answers.get("invert_monochrome1", True),
        },
        "format": detected.format,
        "architecture": architecture_data,
        "target_layer": answers.get("target_layer", ""),
        "weights": detected.weights,
        "weights_sha256": file_sha256(detected.folder / detected.weights),
        "uncertainty": uncertainty,
        "metrics": {"split": "not measured yet"},
        "serve_automatically": False,
        "training_data": answers["training_data"],
        "licence": answers["licence"],
        "intended_use": answers.get("intended_use") or "research, not for clinical use",
        "domain": {
            "body_part": answers["body_part"],
            "body_parts": answers.get("body_parts", []),
            "photometric": answers.get("photometric", ""),
        },
        "training": {"onboarded": True, "source_format": _format_words(detected)},
    }
    _write_card(detected.folder, data)
    return load_card(detected.folder)


def _write_card(folder: Path, data: dict[str, Any]) -> None:
    (folder / CARD_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _format_words(detected: formats.Detected) -> str:
    if detected.format == "torchscript":
        return "TorchScript file"
    name = detected.architecture.name if detected.architecture else ""
    return {"monai_bundle": "MONAI bundle", "timm": "timm state dict"}.get(name, "state dict")


def _labelled(base: Path, card: ModelCard, kind: str, *, limit: int | None = None) -> checks.LabelledSet | None:
    """The labelled set stored as `base/` (a folder) or `base.zip`: labels.csv (image,label) and its images, or
    (study_instance_uid,label) naming studies stored in Lumen; decoded as the worker decodes studies. None when
    none was given. `limit`: only the first rows (a sample; the labels are still checked for those)."""
    if base.with_suffix(".zip").is_file() and not base.is_dir():
        _unzip(base.with_suffix(".zip"), base)
    if not base.is_dir():
        return None
    table = base / "labels.csv"
    if not table.is_file():
        table = next(iter(sorted(base.rglob("labels.csv"))), table)
    if not table.is_file():
        raise OnboardingFailed(f"the {kind} set has no labels.csv (columns image,label)")
    with table.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    if "label" not in columns or not columns & {"image", "study_instance_uid"}:
        raise OnboardingFailed(f"the {kind} set's labels.csv needs the columns image,label (images in the set) or "
                               "study_instance_uid,label (studies stored in Lumen)")
    images: list[ImageLike] = []
    labels: list[Any] = []
    for number, row in enumerate(rows[:limit], start=2):
        if row.get("image"):
            path = (table.parent / row["image"]).resolve()
            if table.parent.resolve() not in path.parents or not path.is_file():
                raise OnboardingFailed(f"the {kind} set's labels.csv line {number}: no image {row['image']!r} in "
                                       "the set")
            images.append(_decode(path.read_bytes(), path.suffix, path.name, kind, number))
        else:
            images.append(_stored_study(row.get("study_instance_uid", ""), kind, number))
        labels.append(_label(row["label"], card, kind, number))
    array = np.asarray(labels, dtype=np.float32 if card.task == "multilabel" else np.int64)
    return checks.LabelledSet(images=images, labels=array, source=f"{kind} upload ({len(images)} images)")


def _label(text: str, card: ModelCard, kind: str, line: int) -> Any:
    names = [part.strip() for part in text.replace("|", ";").split(";") if part.strip()]
    index = []
    for name in names:
        if name in card.labels:
            index.append(card.labels.index(name))
        elif name.isdigit() and int(name) < card.num_classes:
            index.append(int(name))
        else:
            raise OnboardingFailed(f"the {kind} set's labels.csv line {line}: {name!r} is not one of the labels "
                                   f"{', '.join(card.labels)}")
    if card.task == "multilabel":
        return [1.0 if k in index else 0.0 for k in range(card.num_classes)]
    if len(index) != 1:
        raise OnboardingFailed(f"the {kind} set's labels.csv line {line}: one label per image, got {text!r}")
    return index[0]


def _decode(data: bytes, suffix_or_format: str, name: str, kind: str, line: int) -> Image:
    """Frame 0 of an image file, as the worker decodes studies. `suffix_or_format`: a file suffix or a stored
    instance's source format."""
    suffix = suffix_or_format.lower().lstrip(".")
    source_format = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg"}.get(suffix, "dicom")
    try:
        array, voi = pixels.load_frame_and_voi(data, source_format, 0)
        header: Any = pixels.read_dicom(data, stop_before_pixels=True) if source_format == "dicom" else {}
    except ValueError as exc:
        raise OnboardingFailed(f"the {kind} set's labels.csv line {line}: {name} does not decode: {exc}") from exc
    return Image(pixels=array, photometric=str(header.get("PhotometricInterpretation", "")), voi=voi)


def _stored_study(uid: str, kind: str, line: int) -> Image:
    """The first image of a study stored in Lumen, named by its Study Instance UID."""
    with session_scope(writes=False) as session:
        instance = session.scalars(
            select(Instance).join(Series).join(Study).where(Study.study_instance_uid == uid)
            .order_by(Series.id, Instance.id).limit(1)
        ).first()
        if instance is None:
            raise OnboardingFailed(f"the {kind} set's labels.csv line {line}: no stored study {uid!r}")
        key, source_format = instance.storage_key, instance.source_format
    return _decode(get_blob_store().get(key), source_format, f"study {uid}", kind, line)


def _samples(folder: Path, card: ModelCard, *, limit: int) -> list[ImageLike]:
    """Images of the model's domain: the validation set's first ones, else Lumen's own of that colour."""
    stored = _labelled(folder / "validation", card, "validation", limit=limit)
    if stored is not None:
        return list(stored.images)
    paths = [path for path in _DOMAIN_SAMPLES[card.input.colour] if path.is_file()][:limit]
    if not paths:
        raise OnboardingFailed("no sample images of the model's domain on this worker: give a validation set")
    return [_decode(path.read_bytes(), path.suffix, path.name, "sample", 0) for path in paths]


def _draw_preview(model: torch.nn.Module, card: ModelCard, layer: str, image: ImageLike, out: Path) -> bool:
    """Grad-CAM of `layer` for the top class over the sample image, as a PNG the coordinator looks at: the image
    as the model sees it (windowed, cropped to what the network takes), the map in red over it."""
    assert isinstance(image, Image)
    x = prepare(image.pixels, card, device=next(model.parameters()).device, photometric=image.photometric,
                voi=image.voi)
    draft = card if card.target_layer == layer else _with_layer(card, layer)
    with torch.no_grad():
        target = model(x).argmax(1)
    heat = get_explainer("gradcam", model, draft).explain(x, target)[0].detach().float().cpu().numpy()
    heat = np.maximum(heat.sum(0) if heat.ndim == 3 else heat, 0)
    heat = heat / heat.max() if heat.max() > 0 else heat
    unit = to_unit_range(image.pixels, card.input, photometric=image.photometric, voi=image.voi)
    rgb = np.repeat(unit, 3, axis=2) if unit.shape[2] == 1 else unit[..., :3]
    side = _PREVIEW_SIDE
    base = np.asarray(PILImage.fromarray((rgb * 255).astype(np.uint8)).resize((side, side))).astype(np.float32)
    weight = np.asarray(PILImage.fromarray((heat * 255).astype(np.uint8)).resize((side, side),
                                                                                PILImage.Resampling.BILINEAR))
    # The strongest half of the map, fading in above it: a flat or border-hugging map shows as such.
    weight = 0.75 * np.clip((weight[..., None].astype(np.float32) / 255 - 0.5) / 0.5, 0, 1)
    red = np.array([255.0, 0.0, 0.0], dtype=np.float32)
    overlay = np.concatenate([base, base * (1 - weight) + red * weight], axis=1)
    buffer = io.BytesIO()
    PILImage.fromarray(overlay.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    out.write_bytes(buffer.getvalue())
    return True


def _with_layer(card: ModelCard, layer: str) -> ModelCard:
    data = card.as_dict()
    data["target_layer"] = layer
    _write_card(card.folder, data)
    return load_card(card.folder)


def _unzip(archive: Path, target: Path) -> None:
    """Unpack a labelled set, refusing entries that would land outside `target`."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as handle:
            for entry in handle.infolist():
                path = (target / entry.filename).resolve()
                if target.resolve() not in path.parents and path != target.resolve():
                    raise OnboardingFailed(f"{archive.name}: entry {entry.filename!r} points outside the set")
            handle.extractall(target)
    except zipfile.BadZipFile as exc:
        raise OnboardingFailed(f"{archive.name}: not a readable .zip ({exc})") from exc


def _row(session: Any, onboarding_id: int) -> ModelOnboarding:
    row = session.get(ModelOnboarding, onboarding_id)
    if row is None:
        raise OnboardingFailed(f"onboarding {onboarding_id} was deleted")
    return row


def _row_fields(onboarding_id: int) -> tuple[Path, str, dict[str, Any]]:
    with session_scope(writes=False) as session:
        row = _row(session, onboarding_id)
        return Path(row.folder), row.filename, dict(row.answers)


def _progress_writer(onboarding_id: int, echo: Echo | None) -> Echo:
    def write(percent: int, stage: str) -> None:
        with session_scope() as session:
            row = _row(session, onboarding_id)
            row.progress, row.stage = max(0, min(100, percent)), stage[:200]
        if echo:
            echo(percent, stage)

    return write


def _fail(onboarding_id: int, reason: str) -> None:
    logger.info("onboarding %s failed: %s", onboarding_id, reason)
    with session_scope() as session:
        row = session.get(ModelOnboarding, onboarding_id)
        if row is not None:
            row.state, row.error, row.finished_at = OnboardingState.failed, reason, datetime.now(UTC)
            row.stage = "failed"
