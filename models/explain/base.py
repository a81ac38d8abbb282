"""The interface of every attribution method, and the hook plumbing they share.

Every explainer maps an input batch and one target class per row to a raw attribution map:
`explain(x: (B, C, *spatial), target: (B,) long) -> (B, 1, *spatial)`, for 2D (H, W) and 3D (D, H, W)
alike. Maps are raw (not normalised): normalising is for display only. Hooks are registered inside a
context manager and released in `finally`, also when the forward or backward pass raises.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from models.card import ModelCard

_UPSAMPLE_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


class Explainer(ABC):
    """An attribution method for a classifier `model` (in eval mode, so rows do not interact).

    Subclasses set `name`, the stable snake_case name used in the registry, the database, URLs and
    templates, and implement `explain`.
    """

    name: ClassVar[str]

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> Explainer:
        """The explainer for `model`, configured from its card (e.g. the target layer)."""
        return cls(model)

    @abstractmethod
    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Attribution of each row's target logit.

        Args:
            x: (B, C, *spatial) input on the model's device.
            target: (B,) long, the class explained for each row.

        Returns:
            (B, 1, *spatial) float raw attribution, on x's device.
        """

    @staticmethod
    def _check(x: torch.Tensor, target: torch.Tensor) -> None:
        if x.dim() < 3:
            raise ValueError(f"x must be (B, C, *spatial), got shape {tuple(x.shape)}")
        if target.shape != (x.shape[0],) or target.dtype != torch.long:
            raise ValueError(f"target must be a (B,) = ({x.shape[0]},) long tensor, got {tuple(target.shape)} "
                             f"{target.dtype}")


@dataclass
class LayerRecord:
    """What `record_output` captured: the layer's output of the last forward pass."""

    output: Any = None


@contextmanager
def record_output(layer: nn.Module) -> Iterator[LayerRecord]:
    """Record `layer`'s forward output while the context is open; the hook is always removed."""
    record = LayerRecord()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        record.output = output

    handle = layer.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """`layer` itself, or the submodule at the dotted path (a card's `target_layer`)."""
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"the model has no layer {layer!r}") from None


def upsample(maps: torch.Tensor, spatial: list[int]) -> torch.Tensor:
    """(B, 1, *s) -> (B, 1, *spatial) by linear / bilinear / trilinear interpolation (align_corners=False)."""
    return nn.functional.interpolate(maps, size=tuple(spatial), mode=_UPSAMPLE_MODES[len(spatial)],
                                     align_corners=False)
