"""Occlusion: Zeiler and Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014
(arXiv:1311.2901). The grey patch of the review: slide a patch of the baseline value over the image and
record how much the target score drops."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from models.card import ModelCard
from models.explain import batching
from models.explain.base import Explainer

# Per model name: the patch and stride of its occlusion maps (in input pixels), when the default (about a
# seventh of the input side, stride half of it) does not fit the size of its findings.
CARD_OPTIONS: dict[str, dict[str, Any]] = {
    "dr-grading-retinamnist": {"window": 4, "stride": 2},
}


def _per_dim(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    return (int(value),) * dims if isinstance(value, int) else tuple(int(v) for v in value)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start of each window along one axis: 0, stride, ... while the previous window had not reached the end;
    the last window is clipped at the border (ceil((size - window) / stride) + 1 windows, as Captum)."""
    count = math.ceil(max(size - window, 0) / stride) + 1
    return [i * stride for i in range(count)]


def occlusion_masks(spatial: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """(N, *spatial) bool: one mask per window position, True inside the (clipped) window."""
    axes = [window_starts(s, w, st) for s, w, st in zip(spatial, window, stride, strict=True)]
    masks = torch.zeros((math.prod(len(a) for a in axes), *spatial), dtype=torch.bool)
    for n, starts in enumerate(itertools.product(*axes)):
        region = tuple(slice(s, s + w) for s, w in zip(starts, window, strict=True))
        index: tuple[int | slice, ...] = (n, *region)  # typed: mypy would join int and slice to object
        masks[index] = True
    return masks


def target_scores(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) target logit of each row of `inputs` (N, C, *s), `target` (N,), without gradients."""
    with torch.no_grad():
        return torch.cat([model(inputs[part]).gather(1, target[part].view(-1, 1)).squeeze(1)
                          for part in batching.chunks(inputs.shape[0], batch_size)])


class Occlusion(Explainer):
    """Occlusion with a sliding patch over all channels, 2D and 3D (Zeiler and Fergus, ECCV 2014).

    map[p] = mean over the windows covering p of (f(x)[target] - f(x with the window set to baseline)[target]).
    Equal to Captum's `Occlusion(sliding_window_shapes=(C, *window), strides=(C, *stride), baselines=baseline)`
    at any one channel (Captum repeats the value over the channels occluded together).

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K) logits.
        window: patch size in pixels (an int for every axis, or one per spatial axis).
        stride: step between patches.
        baseline: the patch's value in normalised space (0: the dataset mean, the "grey" patch).
        max_rows: cap on occluded inputs per forward (memory-bounded by models.explain.batching).
    """

    name = "occlusion"

    def __init__(self, model: nn.Module, window: int | Sequence[int] = 4, stride: int | Sequence[int] = 2,
                 baseline: float = 0.0, max_rows: int = 64) -> None:
        super().__init__(model)
        self.window, self.stride, self.baseline, self.max_rows = window, stride, baseline, max_rows

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> Occlusion:
        side = min(card.input.size)
        default = {"window": max(1, round(side / 7)), "stride": max(1, round(side / 14))}
        return cls(model, **{**default, **CARD_OPTIONS.get(card.name, {})})

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, *spatial); target (B,) long. Returns: (B, 1, *spatial) mean score drop."""
        self._check(x, target)
        b, _, *spatial = x.shape
        dims = len(spatial)
        masks = occlusion_masks(spatial, _per_dim(self.window, dims), _per_dim(self.stride, dims)).to(x.device)
        batch_size = batching.rows_per_batch(self.model, x[:1], backward=False, max_rows=self.max_rows)
        full = target_scores(self.model, x, target, batch_size)
        counts = masks.sum(0).to(x.dtype)
        maps = []
        for row in range(b):
            drops = full[row] - self._occluded_scores(x[row], target[row], masks, batch_size)
            total = (drops.view(-1, *([1] * dims)) * masks).sum(0)
            maps.append(total / counts.clamp(min=1))
        return torch.stack(maps).unsqueeze(1)

    def _occluded_scores(self, row: torch.Tensor, target: torch.Tensor, masks: torch.Tensor,
                         batch_size: int) -> torch.Tensor:
        scores = []
        for part in batching.chunks(masks.shape[0], batch_size):
            occluded = torch.where(masks[part].unsqueeze(1), torch.as_tensor(self.baseline).to(row), row)
            scores.append(target_scores(self.model, occluded, target.expand(occluded.shape[0]), batch_size))
        return torch.cat(scores)
