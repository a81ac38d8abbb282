"""Explainers by their stable names (the names stored in the database and used in URLs)."""

from __future__ import annotations

from torch import nn

from models.card import ModelCard
from models.explain.base import Explainer
from models.explain.gradcam import GradCAM

EXPLAINERS: dict[str, type[Explainer]] = {cls.name: cls for cls in (GradCAM,)}


def get_explainer(name: str, model: nn.Module, card: ModelCard) -> Explainer:
    """The explainer called `name` for `model`, configured from its card. Raises ValueError if unknown."""
    try:
        cls = EXPLAINERS[name]
    except KeyError:
        raise ValueError(f"unknown explainer {name!r}; known: {sorted(EXPLAINERS)}") from None
    return cls.from_card(model, card)
