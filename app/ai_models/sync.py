"""Model folders (card + weights) -> `ai_models` rows, and the `lumen models` listing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
from app.tables import AiModel, Prediction
from models.card import CardError, ModelCard, load_card, scan_cards

logger = logging.getLogger(__name__)


def sync_models(session: Session) -> list[AiModel]:
    """Register or refresh every valid model folder; a model whose folder is gone is deactivated."""
    cards = scan_cards(get_settings().model_dirs).cards
    rows = {(row.name, row.version): row for row in session.scalars(select(AiModel))}
    present: set[tuple[str, str]] = set()
    with_predictions = set(session.scalars(select(Prediction.model_id).distinct()))
    for card in cards:
        key = (card.name, card.version)
        row = rows.get(key) or AiModel(name=card.name, version=card.version)
        if row.id in with_predictions and row.weights_sha256 != card.weights_sha256:
            # A version is immutable once it has predictions: its reads and exports name it. New weights under
            # the same version are refused (the model stops being served) rather than silently taken.
            logger.error(
                "model %s %s: its weights changed (sha256 %s, was %s) but it has predictions; give the new weights "
                "a new version. Not served until then.", card.name, card.version, card.weights_sha256[:12],
                row.weights_sha256[:12],
            )
            continue
        present.add(key)
        row.task = card.task
        row.labels = list(card.labels)
        row.modalities = list(card.modalities)
        row.input_spec = dict(card.as_dict().get("input", {}))
        row.weights_sha256 = card.weights_sha256
        row.calibration_temperature = card.calibration_temperature
        row.uncertainty_threshold = card.uncertainty_threshold
        row.card = card.as_dict()
        row.is_active = True
        session.add(row)
    for key, row in rows.items():
        if key not in present:
            row.is_active = False
    session.flush()
    return list(session.scalars(select(AiModel).where(AiModel.is_active.is_(True)).order_by(AiModel.id)))


def model_folder(name: str, version: str) -> Path | None:
    """The folder this host holds the model in (card, weights, reference library...), if it holds it."""
    for card in scan_cards(get_settings().model_dirs).cards:
        if card.name == name and card.version == version:
            return Path(card.folder)
    return None


def describe_models() -> list[str]:
    """One line per installed model with its measured test metrics, then the invalid folders."""
    scan = scan_cards(get_settings().model_dirs)
    lines = [_describe(card) for card in scan.cards] or ["no models installed"]
    lines += [f"INVALID {folder}: {reason}" for folder, reason in scan.invalid.items()]
    return lines


def _describe(card: ModelCard) -> str:
    metrics = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in _flat(card.metrics))
    served = "" if card.serve_automatically else "  (not run on studies)"
    return f"{card.name} {card.version}  [{card.task}; {'/'.join(card.modalities)}]{served}  {metrics}  ({card.folder})"


def _flat(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            items += _flat(value, f"{prefix}{key}.")
        elif isinstance(value, int | float | str):
            items.append((f"{prefix}{key}", value))
    return items


def validate_models(path: Path | None) -> list[str]:
    """Check one model folder (or all installed ones): card fields and the weights' sha256."""
    scan = scan_cards(get_settings().model_dirs)
    folders = [path] if path else [card.folder for card in scan.cards]
    lines = []
    for folder in folders:
        try:
            card = load_card(folder)
            card.verify_weights()
            lines.append(f"OK {card.name} {card.version} ({folder})")
        except CardError as exc:
            lines.append(f"INVALID {folder}: {exc}")
    if path is None:
        lines += [f"INVALID {folder}: {reason}" for folder, reason in scan.invalid.items()]
    return lines


def sync_now() -> int:
    """Sync in its own unit of work; returns the number of active models."""
    with session_scope() as session:
        return len(sync_models(session))
