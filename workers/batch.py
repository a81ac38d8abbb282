"""The compute of a batch of jobs, without the database: their inputs stacked, one uncertainty estimate and one
explanation bundle for the stack (each row with its own target), the results split back per job.

Each job gets what it would get alone, up to floating-point rounding of the batched passes: the estimate samples
MC dropout per row (`uncertainty.estimate_batch`), the maps and their scores are taken row by row, and the
methods whose seeded draws depend on the batch's shape run image by image (`BATCH_DEPENDENT`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models import ood, uncertainty
from models.card import ModelCard
from models.explain.bundle import Bundle, explain_bundle
from models.explain.metrics import cheap_scores
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
    """One method's map in the image's frame, with its provenance and cheap faithfulness scores."""

    method: str
    array: np.ndarray
    parameters: dict[str, Any]
    scores: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class Computed:
    """One job's results: the class its maps explain (`target`, `label`); `timings`, the batch's (shared)
    predict_s, explain_s and seconds per method, and batch_size. A map's own `seconds` is its method's batch
    time divided by the batch size."""

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
    """Predict and explain the inputs (same card, so the same input size) as one batch; one result per input."""
    x = torch.cat([item.x for item in inputs])
    mark = time.perf_counter()
    estimates = uncertainty.estimate_batch(model, x, card)
    predict_s = time.perf_counter() - mark
    on_progress(50)

    chosen = [
        int(torch.argmax(estimate.probabilities)) if item.earlier_target is None else item.earlier_target
        for estimate, item in zip(estimates, inputs, strict=True)
    ]
    targets = torch.tensor(chosen, device=x.device)
    bundle = explain(model, x, targets, methods, card)
    on_progress(80)
    timings: dict[str, float] = {
        "batch_size": len(inputs),
        "predict_s": predict_s,
        **{f"{name}_s": seconds for name, seconds in bundle.seconds.items() if name != "total"},
        "explain_s": bundle.seconds["total"],
    }
    return [
        Computed(
            estimates[row],
            chosen[row],
            card.labels[chosen[row]],
            [_stored_map(name, bundle, model, x, targets, row, inputs[row].region, card) for name in methods],
            dict(timings),
        )
        for row in range(len(inputs))
    ]


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
    name: str,
    bundle: Bundle,
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    row: int,
    region: InputRegion,
    card: ModelCard,
) -> StoredMap:
    rows = slice(row, row + 1)
    attribution = bundle[name][rows].detach()
    # Scored on the job's own row: cheap_scores averages over the rows it is given.
    scores = cheap_scores(model, x[rows], targets[rows], attribution, method=name)
    stored_scores = {key: float(value) for key, value in scores.items()}
    if name in bundle.deltas:
        stored_scores["convergence_delta"] = float(bundle.deltas[name][row])
    # Stored in the image's own frame (aspect kept, at most 512 px) so that any viewer can overlay it.
    on_image = to_image_space(attribution, region)[0, 0].cpu().numpy()
    parameters = {
        "input_size": list(card.input.size),
        "region": [region.top, region.left, region.height, region.width],
    }
    seconds = bundle.seconds.get(name, 0.0) / x.shape[0]
    return StoredMap(name, on_image, parameters, stored_scores, seconds)
