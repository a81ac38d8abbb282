"""The compute of a batch of jobs, without the database: their inputs stacked, one uncertainty estimate and one
explanation bundle for the stack (each row with its own target), the results split back per job. In steps the
worker stores one by one (workers/stages.py): `predict`, `explain_maps` of some methods, `score_maps`;
`compute` runs them in one go.

Each job gets what it would get alone, up to floating-point rounding of the batched passes: the estimate samples
MC dropout per row (`uncertainty.estimate_batch`), the maps and their scores are taken row by row, and the
methods whose seeded draws depend on the batch's shape run image by image (`BATCH_DEPENDENT`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from models import ood, uncertainty
from models.card import ModelCard
from models.explain.bundle import Bundle, explain_bundle
from models.explain.metrics import cheap_scores_of_maps
from models.preprocessing import InputRegion, to_image_space

# Methods that draw their noise, baselines or feature orders for the whole batch at once (one generator run
# through the rows): in a batch a row would get other draws than alone, so they run image by image.
BATCH_DEPENDENT = frozenset({"smoothgrad", "vargrad", "gradient_shap", "shapley_sampling", "kernel_shap", "lime"})


@dataclass(frozen=True)
class Prepared:
    """One job's network input `x` (1, C, *spatial), where it lies on the image, and the class that maps
    added to an earlier prediction explain (None: the class predicted now)."""

    x: torch.Tensor
    region: InputRegion
    earlier_target: int | None


@dataclass(frozen=True)
class StoredMap:
    """One method's map in the image's frame, with its provenance and scores: at first only what the method
    itself gives (integrated gradients' convergence delta), the cheap faithfulness scores once `score_maps`
    has run."""

    method: str
    array: np.ndarray
    parameters: dict[str, Any]
    scores: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class Predicted:
    """One input's uncertainty estimate and the class its maps explain (`target`, named `label`): the class
    predicted now, or the earlier prediction's when maps are added to it."""

    estimate: uncertainty.UncertaintyResult
    target: int
    label: str


@dataclass(frozen=True)
class Explained:
    """One input's maps of some methods, in the image's frame (`maps`) and over the network input
    (`attributions`, kept for the scores)."""

    maps: list[StoredMap]
    attributions: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Computed:
    """One job's results: the class its maps explain (`target`, `label`); `timings`, the batch's (shared)
    predict_s, explain_s, scores_s and seconds per method, and batch_size. A map's own `seconds` is its
    method's batch time divided by the batch size."""

    estimate: uncertainty.UncertaintyResult
    target: int
    label: str
    maps: list[StoredMap]
    timings: dict[str, float]


def check_domain(model: nn.Module, gate: ood.Gate, inputs: list[Prepared]) -> tuple[list[ood.Verdict], float]:
    """The input-domain gate's verdict on each input (one forward pass of the stack), and its seconds. An input
    outside the model's domain gets no prediction and no maps (`models.ood`)."""
    mark = time.perf_counter()
    verdicts = gate.check(model, torch.cat([item.x for item in inputs]))
    return verdicts, time.perf_counter() - mark


def compute(
    model: nn.Module,
    card: ModelCard,
    inputs: list[Prepared],
    methods: list[str],
    *,
    on_progress: Callable[[int], None] = lambda _: None,
) -> list[Computed]:
    """Predict, explain and score the inputs (same card, so the same input size) as one batch, in one go; one
    result per input. The worker runs the same steps as stages, storing after each (workers/pipeline.py)."""
    predicted, predict_s = predict(model, card, inputs)
    on_progress(50)
    explained, timings = explain_maps(model, card, inputs, [p.target for p in predicted], methods)
    on_progress(80)
    mark = time.perf_counter()
    scored = [score_maps(model, item, p.target, e) for item, p, e in zip(inputs, predicted, explained, strict=True)]
    timings = {"batch_size": len(inputs), "predict_s": predict_s, **timings,
               "scores_s": time.perf_counter() - mark}
    return [Computed(p.estimate, p.target, p.label, maps, dict(timings))
            for p, maps in zip(predicted, scored, strict=True)]


def predict(model: nn.Module, card: ModelCard, inputs: list[Prepared]) -> tuple[list[Predicted], float]:
    """The uncertainty estimate of each input (MC dropout sampled per row) and the class to explain; seconds."""
    mark = time.perf_counter()
    estimates = uncertainty.estimate_batch(model, torch.cat([item.x for item in inputs]), card)
    chosen = [
        int(torch.argmax(estimate.probabilities)) if item.earlier_target is None else item.earlier_target
        for estimate, item in zip(estimates, inputs, strict=True)
    ]
    predicted = [Predicted(estimate, target, card.labels[target]) for estimate, target in zip(estimates, chosen,
                                                                                               strict=True)]
    return predicted, time.perf_counter() - mark


def explain_maps(
    model: nn.Module, card: ModelCard, inputs: list[Prepared], targets: list[int], methods: list[str]
) -> tuple[list[Explained], dict[str, float]]:
    """The methods' maps of each input for its target, as one bundle; timings: seconds per method and
    explain_s (the bundle's), resample_s (onto the images' frames)."""
    if not methods:
        return [Explained([], {}) for _ in inputs], {}
    x = torch.cat([item.x for item in inputs])
    target = torch.tensor(targets, device=x.device)
    bundle = explain(model, x, target, methods, card)
    mark = time.perf_counter()
    explained = []
    for row, item in enumerate(inputs):
        attributions = {name: bundle[name][row : row + 1].detach() for name in methods}
        maps = [_stored_map(name, attributions[name], bundle, row, item.region, card, x.shape[0]) for name in methods]
        explained.append(Explained(maps, attributions))
    timings = {
        **{f"{name}_s": seconds for name, seconds in bundle.seconds.items() if name != "total"},
        "explain_s": bundle.seconds["total"],
        "resample_s": time.perf_counter() - mark,
    }
    return explained, timings


def score_maps(model: nn.Module, item: Prepared, target: int, explained: Explained) -> list[StoredMap]:
    """The maps with their cheap faithfulness scores (`models.explain.metrics.cheap_scores_of_maps`, on the
    job's own row: the scores average over the rows they are given) added to what they held."""
    if not explained.maps:
        return []
    maps: dict[str | None, torch.Tensor] = {name: a for name, a in explained.attributions.items()}
    scores = cheap_scores_of_maps(model, item.x, torch.tensor([target], device=item.x.device), maps)
    return [replace(stored, scores={**stored.scores, **scores[stored.method]}) for stored in explained.maps]


def explain(model: nn.Module, x: torch.Tensor, target: torch.Tensor, methods: list[str], card: ModelCard) -> Bundle:
    """`explain_bundle` for the batch x (B, C, *spatial), but the `BATCH_DEPENDENT` methods image by image."""
    alone = [m for m in methods if m in BATCH_DEPENDENT]
    if x.shape[0] == 1 or not alone:
        return explain_bundle(model, x, target, methods, card)
    together = [m for m in methods if m not in BATCH_DEPENDENT]
    bundle = explain_bundle(model, x, target, together, card) if together else Bundle()
    rows = [explain_bundle(model, x[i : i + 1], target[i : i + 1], alone, card) for i in range(x.shape[0])]
    for name in alone:
        bundle[name] = torch.cat([row[name] for row in rows])
        bundle.seconds[name] = sum(row.seconds[name] for row in rows)
    bundle.seconds["total"] = bundle.seconds.get("total", 0.0) + sum(row.seconds["total"] for row in rows)
    return bundle


def _stored_map(
    name: str, attribution: torch.Tensor, bundle: Bundle, row: int, region: InputRegion, card: ModelCard, rows: int
) -> StoredMap:
    scores = {"convergence_delta": float(bundle.deltas[name][row])} if name in bundle.deltas else {}
    # Stored in the image's own frame (aspect kept, at most 512 px) so that any viewer can overlay it.
    on_image = to_image_space(attribution, region)[0, 0].cpu().numpy()
    parameters = {
        "input_size": list(card.input.size),
        "region": [region.top, region.left, region.height, region.width],
    }
    return StoredMap(name, on_image, parameters, scores, bundle.seconds.get(name, 0.0) / rows)
