"""Explainers by their stable names (the names stored in the database and used in URLs).

Each name points at "module:Class"; modules are imported on first use, so asking for GradCAM does not
import every method.
"""

from __future__ import annotations

from importlib import import_module

from torch import nn

from models.card import ModelCard
from models.explain.base import Explainer
from models.explain.names import EXPLAINERS


def explainer_class(name: str) -> type[Explainer]:
    """The class behind a stable name. Raises ValueError if the name is unknown."""
    try:
        module_name, class_name = EXPLAINERS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown explainer {name!r}; known: {sorted(EXPLAINERS)}") from None
    cls = getattr(import_module(module_name), class_name)
    if cls.name != name:
        raise RuntimeError(f"{EXPLAINERS[name]} is registered as {name!r} but calls itself {cls.name!r}")
    return cls


def get_explainer(name: str, model: nn.Module, card: ModelCard) -> Explainer:
    """The explainer called `name` for `model`, configured from its card. Raises ValueError if unknown."""
    return explainer_class(name).from_card(model, card)
