"""Predictive uncertainty, chosen per model card: MC dropout, deep ensembles, test-time augmentation.

Each method yields T sampled probability vectors per input, (T, B, K), calibrated with the card's
temperature (logits / T_cal before softmax, or before the sigmoid for a "multilabel" card). From them:

- predictive entropy H[mean_t p_t] (total uncertainty, nats; multilabel: the sum of the labels' binary
  entropies);
- mutual information H[mean_t p_t] - mean_t H[p_t] (the epistemic part: disagreement between samples;
  Gal, "Uncertainty in Deep Learning", 2016; Depeweg et al., ICML 2018);
- MC spread: the standard deviation over samples of the probability of the top (mean) class;
- referral: predictive entropy > `card.uncertainty_threshold` ("the model is unsure: read carefully").

Methods: MC dropout (Gal and Ghahramani, ICML 2016) runs `model.features` once and `model.head` T times
with its dropout on, when the network has that split (all of `models.networks` have; dropout sits only in
the head), else T full passes; deep ensembles (Lakshminarayanan et al., NeurIPS 2017) one pass per member;
TTA (Wang et al., Neurocomputing 2019) one pass per flip of the input (its "MI" is the spread over
augmentations, aleatoric as much as epistemic). Sampling is seeded: the same input gives the same result, alone
or in any batch (`estimate_batch`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from models.card import ModelCard

_EPS = 1e-12


@dataclass(frozen=True)
class UncertaintyResult:
    """One prediction: `probabilities` (K,) calibrated (softmax over labels, or a sigmoid per label for a
    multilabel card), averaged over the `n_samples` samples of `method`; entropies in nats."""

    probabilities: torch.Tensor
    predictive_entropy: float
    mutual_information: float
    mc_spread: float
    referral: bool
    n_samples: int
    method: str


def estimate(
    model: nn.Module,
    x: torch.Tensor,
    card: ModelCard,
    *,
    members: Sequence[nn.Module] | None = None,
    seed: int = 0,
) -> UncertaintyResult:
    """Calibrated probabilities and uncertainty of one input, by the card's `uncertainty.method`.

    Args:
        model: the card's model (eval mode) on `x`'s device.
        x: (1, C, *spatial) input prepared as the card says.
        card: gives the method, T, temperature, threshold and task (softmax or multilabel sigmoid).
        members: the ensemble's models (`models.registry.load_members(card)`), for an "ensemble" card.
        seed: seeds the dropout masks (results are reproducible).

    Returns:
        An `UncertaintyResult`.
    """
    if x.shape[0] != 1:
        raise ValueError(f"estimate() takes one input (1, C, *spatial), got batch {x.shape[0]}; use estimate_batch")
    return estimate_batch(model, x, card, members=members, seed=seed)[0]


def estimate_batch(
    model: nn.Module, x: torch.Tensor, card: ModelCard, *, members: Sequence[nn.Module] | None = None, seed: int = 0
) -> list[UncertaintyResult]:
    """`estimate` for each of (B, C, *spatial) inputs: row i equals `estimate(model, x[i:i + 1], card)`.

    MC dropout draws each row's masks as if the row were alone (`mc_dropout_logits(per_row=True)`), so what
    else is in the batch does not change a row's result; the backbone still runs once for the batch.
    """
    samples = sample_probabilities(model, x, card, members=members, seed=seed, per_row=True)
    stats = statistics(samples, multilabel=card.task == "multilabel")
    threshold = card.uncertainty_threshold
    return [
        UncertaintyResult(
            probabilities=stats["probabilities"][i],
            predictive_entropy=float(stats["predictive_entropy"][i]),
            mutual_information=float(stats["mutual_information"][i]),
            mc_spread=float(stats["mc_spread"][i]),
            referral=threshold is not None and float(stats["predictive_entropy"][i]) > threshold,
            n_samples=samples.shape[0],
            method=card.uncertainty.method,
        )
        for i in range(x.shape[0])
    ]


def sample_probabilities(
    model: nn.Module,
    x: torch.Tensor,
    card: ModelCard,
    *,
    members: Sequence[nn.Module] | None = None,
    seed: int = 0,
    per_row: bool = False,
) -> torch.Tensor:
    """(T, B, K) calibrated probabilities sampled by the card's method (T = 1 for "none").

    `per_row`: MC dropout masks drawn per row as if each row were alone (see `mc_dropout_logits`); the other
    methods are deterministic and row by row already.
    """
    spec = card.uncertainty
    if spec.method == "mc_dropout":
        logits = mc_dropout_logits(model, x, spec.samples, seed=seed, per_row=per_row)
    elif spec.method == "ensemble":
        if not members:
            raise ValueError(f"model {card.name!r} is an ensemble: pass members=models.registry.load_members(card)")
        logits = torch.stack([_logits(member, x) for member in members])
    elif spec.method == "tta":
        logits = tta_logits(model, x, spec.flips)
    else:
        logits = _logits(model, x)[None]
    return to_probabilities(logits, card.calibration_temperature, multilabel=card.task == "multilabel")


def to_probabilities(logits: torch.Tensor, temperature: float = 1.0, *, multilabel: bool = False) -> torch.Tensor:
    """(..., K) logits -> probabilities: softmax(logits / T), or sigmoid(logits / T) per label."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = logits.float() / temperature
    return torch.sigmoid(scaled) if multilabel else torch.softmax(scaled, dim=-1)


def statistics(samples: torch.Tensor, *, multilabel: bool = False) -> dict[str, torch.Tensor]:
    """Uncertainty of (T, B, K) sampled probabilities.

    Returns:
        probabilities (B, K) the mean over samples; predictive_entropy, mutual_information (>= 0, clamped
        against rounding) and mc_spread, each (B,).
    """
    samples = samples.double()  # float64: identical samples give an MI of 0 up to 1e-12, not 1e-7
    mean = samples.mean(0)
    entropy = _entropy(mean, multilabel)
    expected = _entropy(samples, multilabel).mean(0)
    top = mean.argmax(dim=1)
    top_samples = samples.gather(2, top.view(1, -1, 1).expand(samples.shape[0], -1, 1)).squeeze(2)
    spread = top_samples.std(0, unbiased=False)
    return {
        "probabilities": mean.float(),
        "predictive_entropy": entropy,
        "mutual_information": (entropy - expected).clamp_min(0.0),
        "mc_spread": spread,
    }


def _entropy(p: torch.Tensor, multilabel: bool) -> torch.Tensor:
    if multilabel:
        q = 1.0 - p
        return -(p * (p + _EPS).log() + q * (q + _EPS).log()).sum(-1)
    return -(p * (p + _EPS).log()).sum(-1)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).float()


def has_head_split(model: nn.Module) -> bool:
    """Whether `model` exposes `features` and `head` with forward = head(features(x)) and dropout only in
    the head (true of `models.networks`), so the backbone can run once for MC dropout."""
    features, head = getattr(model, "features", None), getattr(model, "head", None)
    if not isinstance(features, nn.Module) or not isinstance(head, nn.Module):
        return False
    return not _dropouts(features) and bool(_dropouts(head))


def _part(model: nn.Module, name: str) -> nn.Module:
    """A named child; getattr, not get_submodule, which TorchScript modules lack."""
    part: nn.Module = getattr(model, name)
    return part


def mc_dropout_logits(
    model: nn.Module,
    x: torch.Tensor,
    samples: int,
    *,
    seed: int = 0,
    head_only: bool | None = None,
    per_row: bool = False,
) -> torch.Tensor:
    """(T, B, K) logits of T passes with dropout on (batch norm stays in eval mode).

    With `head_only` (default: when `has_head_split(model)`), `features(x)` runs once and `head` T times: the
    dropout masks, drawn from the same seeded generator in the same order, equal those of T full passes.
    With `per_row`, the generator is seeded again for each row and the row goes through alone, so row i gets
    the masks that `x[i:i + 1]` alone gets: a row's samples do not depend on the other rows. The backbone
    still runs once for the batch with `head_only`; without it, per-row sampling costs B x T full passes.
    """
    head_only = has_head_split(model) if head_only is None else head_only
    if not _dropouts(model):
        raise ValueError("MC dropout needs a model with dropout modules")
    with torch.no_grad(), _dropout_on(model), torch.random.fork_rng(devices=_devices(x)):
        # The backbone has no dropout (has_head_split), so it draws nothing from the generator.
        inputs, run = (_part(model, "features")(x), _part(model, "head")) if head_only else (x, model)
        parts = [inputs[i : i + 1] for i in range(inputs.shape[0])] if per_row else [inputs]
        logits = []
        for part in parts:
            torch.manual_seed(seed)
            logits.append(torch.stack([run(part).float() for _ in range(samples)]))
        return torch.cat(logits, dim=1)


def tta_logits(model: nn.Module, x: torch.Tensor, flips: Sequence[Sequence[int]]) -> torch.Tensor:
    """(len(flips), B, K) logits of the input flipped along each listed set of (negative) spatial axes."""
    _, _, *spatial = x.shape
    for axes in flips:
        if any(axis < -len(spatial) or axis >= 0 for axis in axes):
            raise ValueError(f"flip axes must be negative spatial axes (>= {-len(spatial)}), got {list(axes)}")
    return torch.stack([_logits(model, x.flip(list(axes)) if axes else x) for axes in flips])


def _dropouts(module: nn.Module) -> list[nn.Module]:
    # TorchScript modules keep the class name as `original_name`.
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.dropout._DropoutNd)
        or getattr(m, "original_name", "") in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d")
    ]


@contextmanager
def _dropout_on(model: nn.Module) -> Iterator[None]:
    dropouts = _dropouts(model)
    states = [m.training for m in dropouts]
    try:
        for m in dropouts:
            m.train()
        yield
    finally:
        for m, state in zip(dropouts, states, strict=True):
            m.train(state)


def _devices(x: torch.Tensor) -> list[int]:
    return [x.device.index or 0] if x.device.type == "cuda" else []


def max_entropy(num_classes: int, *, multilabel: bool = False) -> float:
    """The largest predictive entropy possible: ln K (softmax) or K ln 2 (multilabel)."""
    return num_classes * math.log(2.0) if multilabel else math.log(num_classes)


def referral_threshold(entropies: torch.Tensor, refer_fraction: float) -> float:
    """The entropy above which the `refer_fraction` most uncertain cases of a (validation) set lie: its
    (1 - refer_fraction) quantile. Fit on validation data only."""
    if not 0.0 < refer_fraction < 1.0:
        raise ValueError(f"refer_fraction must be in (0, 1), got {refer_fraction}")
    return float(torch.quantile(entropies.double(), 1.0 - refer_fraction))
