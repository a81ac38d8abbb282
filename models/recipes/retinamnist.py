"""Recipe "dr-grading-retinamnist": a small DenseNet (models.networks.densenet) graded on RetinaMNIST
(MedMNIST v2, 28x28 RGB fundus, ICDR grade 0-4). Trained on train, the epoch selected on val, reported on
test (n=400), as MedMNIST does; the calibration temperature is fitted on val (Guo et al., ICML 2017).
Seeded and deterministic on CPU (2 threads, deterministic algorithms, explicit generators); global torch
state (threads, determinism flag, RNG) is restored afterwards. Uncertainty: MC dropout (T = 20, head only);
the referral threshold is fitted on val (`common.REFERRAL_RULE`) and the risk-coverage curve of test is
written to evaluation.json.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import evaluation
from models.calibration import fit_temperature
from models.card import Architecture, InputSpec, ModelCard, UncertaintySpec
from models.datasets import ImageSplit, load_medmnist
from models.networks import build_network
from models.recipes import common
from models.recipes.common import THREADS, deterministic_cpu, logits_of, normalise, to_tensor

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "models" / "zoo"


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a reference model's training, besides the seed and the data file."""

    name: str
    version: str
    labels: list[str]
    modalities: list[str]
    data_file: Path
    network: dict[str, Any]
    target_layer: str
    training_data: str
    licence: str
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    rotation_degrees: float = 15.0
    anchors: dict[str, Any] = field(default_factory=dict)
    architecture: str = "densenet"
    mc_samples: int = 20


RECIPES: dict[str, Recipe] = {
    "dr-grading-retinamnist": Recipe(
        name="dr-grading-retinamnist",
        version="1.0.0",
        labels=["none", "mild", "moderate", "severe NPDR", "PDR"],
        modalities=["OP"],
        data_file=ROOT / "data" / "retinamnist.npz",
        network={"spatial_dims": 2, "in_channels": 3, "num_classes": 5, "growth_rate": 12,
                 "block_layers": [4, 4, 4], "init_features": 24, "dropout": 0.2},
        target_layer="features.relu_final",
        training_data="RetinaMNIST (MedMNIST v2), CC BY 4.0, Yang et al. Sci Data 2023",
        licence="weights: CC BY 4.0, as their training data (RetinaMNIST, derived from DeepDRiD; "
                "cite Yang et al., Sci Data 2023, and Liu et al., Patterns 2022)",
        anchors={"MedMNIST v2 best ACC (test)": 0.531, "ResNet-18 (28) ACC / AUC (test)": [0.524, 0.717]},
    ),
}


@dataclass
class TrainResult:
    model: nn.Module
    epochs: int
    best_epoch: int
    val_scores: dict[str, float]
    seconds: float


def run(
    recipe: str = "dr-grading-retinamnist",
    *,
    out_dir: Path | None,
    data: Path | None,
    seed: int,
    epochs: int | None = None,
    limit: int | None = None,
) -> str:
    """Train the recipe's model, write its folder (weights.pt + card.json) and return a text report.

    Args:
        recipe: a name in `RECIPES`.
        out_dir: the model folder to write (default: models/zoo/<recipe>).
        data: the dataset file (default: the recipe's, data/retinamnist.npz in the repository).
        seed: seeds model initialisation, shuffling, augmentation and dropout.
        epochs: override the recipe's epochs (for quick runs and tests).
        limit: use only the first `limit` samples of each split (for smoke tests; metrics are then
            not comparable).

    Raises:
        ValueError: unknown recipe. TrainingDataError: the data file is missing or broken.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
    spec = RECIPES[recipe]
    splits = {name: split.head(limit) for name, split in load_medmnist(data or spec.data_file, num_classes=5).items()}
    folder = Path(out_dir) if out_dir is not None else ZOO / spec.name
    mean, std = _channel_stats(splits["train"].images)
    with deterministic_cpu(seed):
        result = _train(spec, splits, mean, std, epochs or spec.epochs)
        card, metrics = _evaluate_and_write(spec, result, splits, mean, std, folder, seed)
    return _report(card, metrics, result, splits)


def _channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    # Rounded, because the card stores them and training must use exactly what inference will use.
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return [round(float(m), 4) for m in pixels.mean(0)], [round(float(s), 4) for s in pixels.std(0)]


def augment(x: torch.Tensor, generator: torch.Generator, degrees: float) -> torch.Tensor:
    """Random horizontal and vertical flips and a rotation within +-degrees of (N, C, H, W) [0, 1] images;
    corners uncovered by the rotation are black, like the fundus background."""
    return common.random_rotation(common.random_flips(x, generator), generator, degrees)


def _train(
    spec: Recipe, splits: dict[str, ImageSplit], mean: list[float], std: list[float], epochs: int
) -> TrainResult:
    started = time.perf_counter()
    model = build_network(spec.architecture, **spec.network)
    x_train, y_train = to_tensor(splits["train"].images), torch.from_numpy(splits["train"].labels)
    x_val = normalise(to_tensor(splits["val"].images), mean, std)
    y_val = splits["val"].labels
    steps = epochs * math.ceil(len(y_train) / spec.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(int(torch.initial_seed()))
    best: tuple[float, ...] = (-math.inf,)
    best_state, best_epoch, best_scores = None, 0, {}
    for epoch in range(1, epochs + 1):
        loss = _train_epoch(model, x_train, y_train, optimizer, scheduler, generator, spec, mean, std)
        probs = torch.softmax(logits_of(model, x_val), 1).numpy()
        scores = {
            "accuracy": evaluation.accuracy(probs, y_val),
            "auc_macro_ovr": evaluation.macro_auc_ovr(probs, y_val),
            "nll": evaluation.negative_log_likelihood(probs, y_val),
        }
        logger.info("epoch %d/%d loss %.4f val acc %.3f auc %.3f nll %.3f", epoch, epochs, loss,
                    scores["accuracy"], scores["auc_macro_ovr"], scores["nll"])
        # Selected on val accuracy + AUC together: 120 val images make either alone a noisy criterion.
        key = (round(scores["accuracy"] + np.nan_to_num(scores["auc_macro_ovr"]), 6), -scores["nll"])
        if key > best:
            best, best_epoch, best_scores = key, epoch, scores
            best_state = copy.deepcopy(model.state_dict())
    assert best_state is not None  # the first epoch sets it: its key beats (-inf,)
    model.load_state_dict(best_state)
    return TrainResult(model.eval(), epochs, best_epoch, best_scores, time.perf_counter() - started)


def _train_epoch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    spec: Recipe,
    mean: list[float],
    std: list[float],
) -> float:
    model.train()
    order = torch.randperm(len(y), generator=generator)
    total = 0.0
    for batch in order.split(spec.batch_size):
        inputs = normalise(augment(x[batch], generator, spec.rotation_degrees), mean, std)
        loss = F.cross_entropy(model(inputs), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.detach()) * len(batch)
    return total / len(y)


def _evaluate_and_write(
    spec: Recipe,
    result: TrainResult,
    splits: dict[str, ImageSplit],
    mean: list[float],
    std: list[float],
    folder: Path,
    seed: int,
) -> tuple[ModelCard, dict[str, Any]]:
    model = result.model
    val_logits = logits_of(model, normalise(to_tensor(splits["val"].images), mean, std))
    temperature = fit_temperature(val_logits, torch.from_numpy(splits["val"].labels))
    test_logits = logits_of(model, normalise(to_tensor(splits["test"].images), mean, std))
    y_test = splits["test"].labels
    raw = evaluation.classification_report(torch.softmax(test_logits, 1).numpy(), y_test)
    scaled = evaluation.classification_report(torch.softmax(test_logits / temperature, 1).numpy(), y_test)
    metrics = {
        "dataset": "RetinaMNIST (MedMNIST v2)", "split": "test", "n": len(y_test),
        "accuracy": round(raw["accuracy"], 6), "auc_macro_ovr": round(raw["auc_macro_ovr"], 6),
        "qwk": round(raw["qwk"], 6),
        "ece_uncalibrated": round(raw["ece"], 6), "ece_calibrated": round(scaled["ece"], 6),
        "nll_uncalibrated": round(raw["nll"], 6), "nll_calibrated": round(scaled["nll"], 6),
        "ece_bins": 15, "selected_on": "val", "temperature_fitted_on": "val",
        "val": {k: round(v, 6) for k, v in result.val_scores.items()},
        "anchors": spec.anchors,
    }
    card = ModelCard(
        name=spec.name, version=spec.version, task="classification", labels=list(spec.labels),
        modalities=list(spec.modalities),
        input=InputSpec(size=(28, 28), channels=3, mean=tuple(mean), std=tuple(std), colour="rgb", crop="fundus"),
        architecture=Architecture(spec.architecture, dict(spec.network)), target_layer=spec.target_layer,
        weights="weights.pt", weights_sha256="0" * 64, metrics=metrics,
        training_data=spec.training_data, licence=spec.licence, folder=folder,
        calibration_temperature=round(temperature, 6),
        training={"recipe": spec.name, "seed": seed, "epochs": result.epochs,
                  "selected_epoch": result.best_epoch, "seconds": round(result.seconds, 1),
                  "threads": THREADS, "torch": torch.__version__,
                  "n": {name: len(split) for name, split in splits.items()}},
        uncertainty=UncertaintySpec(method="mc_dropout", samples=spec.mc_samples),
    )
    x_val = normalise(to_tensor(splits["val"].images), mean, std)
    x_test = normalise(to_tensor(splits["test"].images), mean, std)
    threshold, selective, curves = common.selective_report(
        model, card, x_val, x_test, lambda probs: (probs.argmax(1) != y_test).astype(np.float64))
    metrics["referral"] = selective
    card = dataclasses.replace(card, uncertainty_threshold=round(threshold, 6), metrics=metrics)
    card = common.write_folder(card, model, curves)  # checks that the folder loads
    return card, metrics


def _report(card: ModelCard, metrics: dict[str, Any], result: TrainResult, splits: dict[str, ImageSplit]) -> str:
    sizes = " / ".join(f"{name} {len(split)}" for name, split in splits.items())
    return "\n".join([
        f"trained {card.name} {card.version} -> {card.folder}",
        f"data: {sizes}; epoch {result.best_epoch} selected on val; {result.seconds:.0f} s on {THREADS} CPU threads",
        f"test (n={metrics['n']}): ACC {metrics['accuracy']:.3f}  AUC (macro OvR) {metrics['auc_macro_ovr']:.3f}  "
        f"QWK {metrics['qwk']:.3f}",
        f"calibration: T = {card.calibration_temperature:.3f} (fitted on val); test ECE "
        f"{metrics['ece_uncalibrated']:.3f} -> {metrics['ece_calibrated']:.3f}, NLL "
        f"{metrics['nll_uncalibrated']:.3f} -> {metrics['nll_calibrated']:.3f}",
        "anchors (MedMNIST v2, test): best ACC 0.531; ResNet-18 (28) ACC 0.524 / AUC 0.717",
        f"referral (MC dropout T={card.uncertainty.samples}): threshold {card.uncertainty_threshold:.3f} (val 80th "
        f"percentile of entropy); test refers {metrics['referral']['referred_fraction']:.1%}, error "
        f"{metrics['referral']['error_all']:.3f} -> {metrics['referral']['error_kept']:.3f} on the kept; "
        f"AURC {metrics['referral']['aurc']:.3f}",
        f"weights sha256 {card.weights_sha256}",
    ])


def served_metrics(model: nn.Module, card: ModelCard, split: ImageSplit) -> dict[str, Any]:
    """The card's test metrics as the product serves the model: `prepare` (fundus crop, resize, normalisation)
    and the card's MC dropout with its temperature, as the worker calls them; the referral as the worker decides
    it (entropy above the card's threshold), and how often the answer was right per band of its probability."""
    from models import uncertainty
    from models.preprocessing import prepare

    x = torch.cat([prepare(image, card) for image in split.images])
    results = uncertainty.estimate_batch(model, x, card)
    probs = torch.stack([result.probabilities for result in results]).numpy().astype(np.float64)
    referred = np.array([result.referral for result in results])
    wrong = probs.argmax(1) != split.labels
    report = evaluation.classification_report(probs, split.labels)

    def qwk(p: np.ndarray, y: np.ndarray) -> float:
        return evaluation.quadratic_kappa(p.argmax(1), y, p.shape[1])

    return {
        "pipeline": f"models.preprocessing.prepare (crop {card.input.crop}), {card.uncertainty.method} with "
        f"{card.uncertainty.samples} samples, temperature {card.calibration_temperature}",
        "split": "test", "n": len(split),
        **{key: round(value, 6) for key, value in report.items()},
        "accuracy_ci95": list(evaluation.bootstrap_interval(probs, split.labels, evaluation.accuracy)),
        "qwk_ci95": list(evaluation.bootstrap_interval(probs, split.labels, qwk)),
        "referred_fraction": round(float(referred.mean()), 4),
        "error_kept": round(float(wrong[~referred].mean()), 4) if (~referred).any() else None,
        "error_referred": round(float(wrong[referred].mean()), 4) if referred.any() else None,
        "reliability": evaluation.reliability_table(probs, split.labels),
    }


def write_served_metrics(folder: Path, data: Path) -> dict[str, Any]:
    """Measure `served_metrics` on the RetinaMNIST test split and keep them in the card (metrics.served); the
    weights are untouched."""
    import json

    from models.card import load_card
    from models.registry import load_model

    card = load_card(folder)
    served = served_metrics(load_model(card), card, load_medmnist(data, num_classes=5)["test"])
    path = folder / "card.json"
    raw = json.loads(path.read_text())
    raw["metrics"]["served"] = served
    path.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n")
    return served
