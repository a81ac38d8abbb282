"""Per-process cache of loaded models. Nothing is loaded at import time."""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from pathlib import Path

import torch

from app.config import get_settings
from models.card import ModelCard, scan_cards
from models.explain import batch_calibration
from models.ood import Gate, load_gate
from models.registry import load_model

_lock = threading.Lock()
logger = logging.getLogger(__name__)


class ModelUnavailable(LookupError):
    """The job names a model whose folder is not on this worker."""


def device() -> torch.device:
    """The GPU when this worker has one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def find_card(name: str, version: str) -> ModelCard:
    for card in scan_cards(get_settings().model_dirs).cards:
        if card.name == name and card.version == version:
            return card
    raise ModelUnavailable(f"model {name} {version} is not installed on this worker")


@lru_cache(maxsize=4)
def _load(name: str, version: str, device_name: str) -> tuple[torch.nn.Module, ModelCard]:
    card = find_card(name, version)
    model = load_model(card, device=device_name)
    if get_settings().batch_calibration:
        calibrate_batches(model, card)
    return model, card


@lru_cache(maxsize=2)
def _batch_sizes(path: Path) -> batch_calibration.BatchSizeStore:
    return batch_calibration.BatchSizeStore(path)


def calibrate_batches(model: torch.nn.Module, card: ModelCard) -> None:
    """Time a few batch sizes of the model's rows (or read back those kept for this machine), so that the
    explainers send the fastest size at once rather than as many rows as memory holds (docs/benchmarks.md)."""
    parameter = next(model.parameters())
    row = torch.zeros(1, card.input.channels, *card.input.size, device=parameter.device, dtype=parameter.dtype)
    store = _batch_sizes((get_settings().data_dir / "batch-sizes.json").resolve())
    for backward in (True, False):
        calibration = batch_calibration.calibrate(
            model, row, model_id=f"{card.name}@{card.version}", store=store, backward=backward
        )
        logger.info("model %s %s, batch size for %s", card.name, card.version, calibration.describe())


def get_model(name: str, version: str) -> tuple[torch.nn.Module, ModelCard]:
    """The model (eval mode, on this worker's device) and its card; loaded once per process."""
    with _lock:
        return _load(name, version, str(device()))


@lru_cache(maxsize=4)
def _load_gate(name: str, version: str) -> Gate | None:
    return load_gate(find_card(name, version))


def get_gate(name: str, version: str) -> Gate | None:
    """The model's input-domain gate (None: its card has none), its sha256 checked; loaded once per process.

    Raises:
        ModelUnavailable: the model is not installed. models.card.CardError: the gate file differs from the
            card's sha256 or is not a gate.
    """
    with _lock:
        return _load_gate(name, version)
