"""Per-process cache of loaded models. Nothing is loaded at import time."""

from __future__ import annotations

import threading
from functools import lru_cache

import torch

from app.config import get_settings
from models.card import ModelCard, scan_cards
from models.ood import Gate, load_gate
from models.registry import load_model

_lock = threading.Lock()


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
    return load_model(card, device=device_name), card


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
