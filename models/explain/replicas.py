"""Repeatability across identically trained models: do replicas of a model, trained by the same recipe with
other seeds, explain the same images the same way?

The review's Alzheimer's MRI study (Eitel and Ritter 2019, "Testing the robustness of attribution methods
for convolutional neural networks in MRI-based Alzheimer's disease classification") trained ten identical
networks and measured the L2 distance between their average relevance maps. Two numbers per method here:

- `replica_l2_per_image`: for each image, the mean pairwise L2 distance between the replicas' maps (each
  scaled to unit L2 norm), averaged over the images; 0 = identical maps, 2 = opposite.
- `replica_l2_average_map`: each replica's average map over the images (of |map| scaled to unit sum per
  image, so every image weighs the same and signs do not cancel across images), scaled to unit L2 norm,
  then the mean pairwise L2 distance between replicas, as in the study.

Every replica explains the same class per image (the first model's, usually its prediction), and stochastic
methods get the same seed in every replica, so the distances come from the models alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from models.explain.base import Explainer
from models.explain.metrics import repeatability


def average_map(maps: torch.Tensor) -> torch.Tensor:
    """(1, 1, *spatial) mean over images of |map| scaled to unit sum per image."""
    flat = maps.abs().flatten(1)
    unit = flat / flat.sum(1, keepdim=True).clamp(min=1e-12)
    return unit.mean(0).view(1, *maps.shape[1:])


def replica_repeatability(make_explainer: Callable[[nn.Module], Explainer], models: Sequence[nn.Module],
                          x: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Both distances for one method over `models` (at least two replicas) on the images `x` (B, C, *s),
    each explaining `target` (B,). `make_explainer(model)` builds the method, seeded alike for every model."""
    if len(models) < 2:
        raise ValueError("repeatability across models needs at least two replicas")
    maps = [make_explainer(model).explain(x, target).detach() for model in models]
    return {
        "replica_l2_per_image": float(repeatability(maps).mean()),
        "replica_l2_average_map": float(repeatability([average_map(m) for m in maps])[0]),
    }
