"""What the recipes share: deterministic CPU training, tensors from arrays, augmentation, and the
evaluation every reference model reports (calibration on val, referral threshold on val, risk-coverage on
test) written into its folder."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import evaluation, uncertainty
from models.card import ModelCard, file_sha256, load_card, write_card
from models.registry import load_model

THREADS = 2
REFER_FRACTION = 0.2
REFERRAL_RULE = (
    "refer when predictive entropy (calibrated, averaged over the card's uncertainty samples) "
    "exceeds its 80th percentile on the validation split: the 20% most uncertain val cases"
)
EVALUATION_FILE = "evaluation.json"


@contextmanager
def deterministic_cpu(seed: int) -> Iterator[None]:
    """2 threads, deterministic algorithms, torch RNG seeded; global torch state restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0).contiguous()


def normalise(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(N, C, *S) [0, 1] -> (x - mean) / std per channel, as models.preprocessing.prepare does."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def random_flips(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Independent random horizontal and vertical flips of each (N, C, H, W) image."""
    n = x.shape[0]
    flip_h = torch.rand(n, generator=generator) < 0.5
    flip_v = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip_h.view(-1, 1, 1, 1), x.flip(3), x)
    return torch.where(flip_v.view(-1, 1, 1, 1), x.flip(2), x)


def random_rotation(x: torch.Tensor, generator: torch.Generator, degrees: float) -> torch.Tensor:
    """Rotate each (N, C, H, W) image within +-degrees (bilinear; uncovered corners are 0)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], 1), torch.stack([sin, cos, torch.zeros(n)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 200) -> torch.Tensor:
    """(N, C, *S) normalised -> (N, K) logits in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(chunk) for chunk in x.split(batch_size)])


def sampled_statistics(
    model: nn.Module, x: torch.Tensor, card: ModelCard, batch_size: int = 100
) -> dict[str, torch.Tensor]:
    """`models.uncertainty.statistics` of (N, C, *S) inputs by the card's method, in batches."""
    parts = [
        uncertainty.statistics(
            uncertainty.sample_probabilities(model, chunk, card), multilabel=card.task == "multilabel"
        )
        for chunk in x.split(batch_size)
    ]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def selective_report(
    model: nn.Module,
    card: ModelCard,
    x_val: torch.Tensor,
    x_test: torch.Tensor,
    errors: Callable[[np.ndarray], np.ndarray],
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """The referral threshold fitted on val, and on test: the risk-coverage curve of predictive entropy.

    Args:
        card: the draft card (temperature and uncertainty spec set) the threshold is fitted for.
        errors: (N, K) test probabilities -> (N,) per-case error in [0, 1].

    Returns:
        threshold; card metrics (AURC, referred fraction, error kept vs all); the curve for evaluation.json.
    """
    val = sampled_statistics(model, x_val, card)
    threshold = uncertainty.referral_threshold(val["predictive_entropy"], REFER_FRACTION)
    test = sampled_statistics(model, x_test, card)
    entropy = test["predictive_entropy"].numpy()
    case_errors = errors(test["probabilities"].numpy())
    curve = evaluation.risk_coverage(entropy, case_errors)
    referred = entropy > threshold
    metrics = {
        "rule": REFERRAL_RULE,
        "method": card.uncertainty.method,
        "samples": card.uncertainty.samples,
        "threshold": round(threshold, 6),
        "referred_fraction": round(float(referred.mean()), 6),
        "error_all": round(float(case_errors.mean()), 6),
        "error_kept": round(float(case_errors[~referred].mean()), 6) if (~referred).any() else None,
        "error_referred": round(float(case_errors[referred].mean()), 6) if referred.any() else None,
        "aurc": curve["aurc"],
        "risk_at_80pct_coverage": round(evaluation.risk_at_coverage(curve, 0.8), 6),
        "mean_mutual_information": round(float(test["mutual_information"].mean()), 6),
    }
    return threshold, metrics, {"risk_coverage": curve}


def write_folder(card: ModelCard, model: nn.Module, curves: dict[str, Any]) -> ModelCard:
    """Save the state dict, fill in its sha256, write card.json and evaluation.json, and check that the
    folder loads (card valid, sha256 matching, state dict fitting, output shape (1, K))."""
    card.folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), card.weights_path)
    card = dataclasses.replace(
        card, weights_sha256=file_sha256(card.weights_path), evaluation={**card.evaluation, "file": EVALUATION_FILE}
    )
    (card.folder / EVALUATION_FILE).write_text(json.dumps(curves, indent=1) + "\n", encoding="utf-8")
    write_card(card)
    load_model(load_card(card.folder))
    return card
