"""Load a model from its card: verify the weights' sha256, build the network, load the state dict.

Cards themselves live in `models.card` (torch-free, for the web app); networks in `models.networks`;
explainers by name in `models.explain.registry`.
"""

from __future__ import annotations

import torch
from torch import nn

from models.card import CardError, ModelCard
from models.networks import build_network


def build_from_card(card: ModelCard) -> nn.Module:
    """A freshly initialised network as the card describes it (no weights loaded)."""
    try:
        return build_network(card.architecture.name, **card.architecture.params)
    except ValueError as exc:
        raise CardError(f"model {card.name!r} ({card.folder}): {exc}") from exc


def load_model(card: ModelCard, device: str | torch.device = "cpu") -> nn.Module:
    """The card's network with its weights, on `device`, in eval mode.

    Raises:
        WeightsMismatchError: the weights file's sha256 differs from `card.weights_sha256`.
        CardError: the architecture cannot be built, or the state dict does not fit it.
    """
    card.verify_weights()
    model = build_from_card(card)
    # weights_only=True: a weights file is data, never code to unpickle.
    state = torch.load(card.weights_path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CardError(f"model {card.name!r}: {card.weights} does not fit {card.architecture.name}: {exc}") from exc
    return model.to(device).eval()
