"""Recipe "fundus-lesions-idrid": lesion presence (hard exudates, haemorrhages, microaneurysms) in fundus
photographs, for explanations that can be checked against real lesion masks.

Data: IDRiD segmentation set (Porwal et al., IEEE DataPort 2018, doi 10.21227/H25W98; CC BY 4.0) as copied
into data/idrid (`models.recipes.idrid_data`: fundus-cropped, ~1024 px wide, drawn optic-disc contour
inpainted). Images 01-12 train, 13-16 validate (epoch selection, temperature, referral threshold); 17-24
and 55 are held out and only reported on (55 has a hard-exudate mask only).

Model: a ResNet (models.networks.resnet) with global max pooling, trained on random 256-px patches of the
images downscaled to 512 px wide (multi-label, one sigmoid per lesion: "present" when >= MIN_PIXELS mask
pixels fall in the patch; 128 px at 512 is the field of a 256-px patch at 1024 px, at a quarter of the cost,
which is what fits 2 shared CPU cores). Max pooling makes the same network an image-level detector on the
whole 512x512 input the card
declares (a lesion anywhere counts), so the product runs it on whole photographs.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models import evaluation
from models.calibration import fit_temperature
from models.card import Architecture, InputSpec, ModelCard, UncertaintySpec
from models.datasets import IDRID_DIR, IDRID_HELDOUT, LesionImage, load_idrid
from models.networks import build_network
from models.preprocessing import prepare
from models.recipes import common

logger = logging.getLogger(__name__)

NAME = "fundus-lesions-idrid"
LESIONS = ("hard_exudates", "haemorrhages", "microaneurysms")
LABELS = ["hard exudates", "haemorrhages", "microaneurysms"]
TRAIN = tuple(f"IDRiD_{i:02d}" for i in range(1, 13))
VAL = tuple(f"IDRiD_{i:02d}" for i in range(13, 17))
IMAGE = 512
PATCH = 128
STRIDE = 64
MIN_PIXELS = 16
IGNORE_TRACES = True
FUNDUS_LEVEL = 20
NETWORK = {
    "spatial_dims": 2,
    "in_channels": 3,
    "num_classes": 3,
    "widths": [24, 48, 96, 192],
    "blocks": [1, 1, 1, 1],
    "stem_stride": 2,
    "stem_pool": True,
    "dropout": 0.3,
    "pool": "max",
}
EPOCHS = 12
PATCHES_PER_EPOCH = 512
BATCH = 32
LR = 2e-3


@dataclass(frozen=True)
class Patches:
    """x (N, 3, PATCH, PATCH) float [0, 1]; y (N, K) float 0/1; known (N, K) bool: the label was annotated;
    image (N,) index of the source image."""

    x: torch.Tensor
    y: torch.Tensor
    known: torch.Tensor
    image: np.ndarray


def _fundus(item: LesionImage) -> np.ndarray:
    return item.image.max(axis=2) > FUNDUS_LEVEL


def _labels(item: LesionImage, top: int, left: int) -> tuple[list[float], list[bool]]:
    """Presence (>= MIN_PIXELS lesion pixels) per lesion, and whether the label counts: the lesion was
    annotated on this image and, with IGNORE_TRACES, the patch is not a trace (1 to MIN_PIXELS - 1 pixels,
    too little to call either way)."""
    window = (slice(top, top + PATCH), slice(left, left + PATCH))
    counts = [int(item.masks[lesion][window].sum()) for lesion in LESIONS]
    present = [float(count >= MIN_PIXELS) for count in counts]
    known = [
        lesion in item.annotated and not (IGNORE_TRACES and 0 < count < MIN_PIXELS)
        for lesion, count in zip(LESIONS, counts, strict=True)
    ]
    return present, known


def grid_patches(items: list[LesionImage]) -> Patches:
    """All PATCH-px windows at STRIDE whose area is at least half fundus (for validation and test)."""
    xs, ys, known, source = [], [], [], []
    for index, item in enumerate(items):
        height, width = item.image.shape[:2]
        fundus = _fundus(item)
        tops = sorted({*range(0, height - PATCH + 1, STRIDE), height - PATCH})
        lefts = sorted({*range(0, width - PATCH + 1, STRIDE), width - PATCH})
        for top in tops:
            for left in lefts:
                if fundus[top : top + PATCH, left : left + PATCH].mean() < 0.5:
                    continue
                present, annotated = _labels(item, top, left)
                xs.append(item.image[top : top + PATCH, left : left + PATCH])
                ys.append(present)
                known.append(annotated)
                source.append(index)
    return Patches(common.to_tensor(np.stack(xs)), torch.tensor(ys), torch.tensor(known), np.array(source))


def _random_patches(items: list[LesionImage], fundus: list[np.ndarray], n: int, rng: np.random.Generator) -> Patches:
    xs: list[np.ndarray] = []
    ys, known = [], []
    while len(xs) < n:
        index = int(rng.integers(len(items)))
        item = items[index]
        top = int(rng.integers(item.image.shape[0] - PATCH + 1))
        left = int(rng.integers(item.image.shape[1] - PATCH + 1))
        if fundus[index][top : top + PATCH, left : left + PATCH].mean() < 0.5:
            continue
        xs.append(item.image[top : top + PATCH, left : left + PATCH])
        present, annotated = _labels(item, top, left)
        ys.append(present)
        known.append(annotated)
    return Patches(common.to_tensor(np.stack(xs)), torch.tensor(ys), torch.tensor(known), np.zeros(n, int))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    x = common.random_flips(x, generator)
    transpose = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(transpose.view(-1, 1, 1, 1), x.transpose(2, 3), x)
    gain = 1 + (torch.rand(x.shape[0], 1, 1, 1, generator=generator) * 2 - 1) * 0.15
    return (x * gain).clamp(0, 1)


def _channel_stats(items: list[LesionImage]) -> tuple[list[float], list[float]]:
    pixels = np.concatenate([item.image.reshape(-1, 3)[::7] for item in items]).astype(np.float64) / 255.0
    return [round(float(m), 4) for m in pixels.mean(0)], [round(float(s), 4) for s in pixels.std(0)]


def patch_auc(model: torch.nn.Module, patches: Patches, mean: list[float], std: list[float]) -> dict[str, Any]:
    """Per-lesion AUC of the patches' sigmoid probabilities (annotated patches only), and the macro mean."""
    probs = torch.sigmoid(common.logits_of(model, common.normalise(patches.x, mean, std), 64)).numpy()
    report: dict[str, Any] = {}
    for k, lesion in enumerate(LESIONS):
        keep = patches.known[:, k].numpy()
        auc = evaluation.binary_auc(probs[keep, k], patches.y[keep, k].numpy() > 0.5)
        report[f"auc_{lesion}"] = None if math.isnan(auc) else round(auc, 6)
        report[f"n_pos_{lesion}"] = int(patches.y[keep, k].sum())
        report[f"n_{lesion}"] = int(keep.sum())
    defined = [report[f"auc_{lesion}"] for lesion in LESIONS if report[f"auc_{lesion}"] is not None]
    report["auc_macro"] = round(float(np.mean(defined)), 6)
    return report


def image_level(model: torch.nn.Module, items: list[LesionImage], card: ModelCard) -> dict[str, Any]:
    """Whole images through the product's preprocessing (`prepare`: fundus crop, 512x512): per-lesion
    AUC where both classes occur among the annotated images, else None with the counts."""
    probs = torch.cat([torch.sigmoid(common.logits_of(model, prepare(item.image, card))) for item in items]).numpy()
    report: dict[str, Any] = {"images": [item.name for item in items]}
    for k, lesion in enumerate(LESIONS):
        keep = np.array([lesion in item.annotated for item in items])
        truth = np.array([item.masks[lesion].sum() >= MIN_PIXELS for item in items])[keep]
        auc = evaluation.binary_auc(probs[keep, k], truth)
        report[f"auc_{lesion}"] = None if math.isnan(auc) else round(auc, 6)
        report[f"n_pos_{lesion}"], report[f"n_{lesion}"] = int(truth.sum()), int(keep.sum())
        report[f"mean_prob_{lesion}"] = round(float(probs[keep, k].mean()), 6)
    return report


def run(
    *, out_dir: Path | None, data: Path | None, seed: int, epochs: int | None = None, limit: int | None = None
) -> str:
    """Train, evaluate and write the model folder; returns a text report (see `models.training.run_recipe`)."""
    folder_data = Path(data) if data is not None else IDRID_DIR
    train = load_idrid(TRAIN[:limit] if limit else TRAIN, folder=folder_data, size=IMAGE)
    val = load_idrid(VAL[:limit] if limit else VAL, folder=folder_data, size=IMAGE)
    test = load_idrid(IDRID_HELDOUT[:limit] if limit else IDRID_HELDOUT, folder=folder_data, size=IMAGE)
    folder = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parent.parent / "zoo" / NAME
    mean, std = _channel_stats(train)
    with common.deterministic_cpu(seed):
        started = time.perf_counter()
        model, best_epoch, val_scores, n_epochs = _train(
            train, val, mean, std, epochs or EPOCHS, PATCHES_PER_EPOCH if not limit else BATCH, seed
        )
        seconds = time.perf_counter() - started
        card = _evaluate_and_write(
            model,
            train,
            val,
            test,
            mean,
            std,
            folder,
            seed,
            {"epochs": n_epochs, "selected_epoch": best_epoch, "seconds": round(seconds, 1), "val": val_scores},
        )
    m = card.metrics
    return "\n".join(
        [
            f"trained {card.name} {card.version} -> {card.folder} in {seconds:.0f} s on {common.THREADS} CPU threads "
            f"(epoch {best_epoch} of {n_epochs} selected on val 13-16)",
            f"test patches (17-24, 55): AUC macro {m['auc_macro']:.3f}; "
            + ", ".join(f"{lesion} {m['patch'][f'auc_{lesion}']}" for lesion in LESIONS),
            "test images: " + ", ".join(f"{lesion} {m['image'][f'auc_{lesion}']}" for lesion in LESIONS),
            f"T = {card.calibration_temperature:.3f}; referral threshold {card.uncertainty_threshold:.3f}",
        ]
    )


def _train(
    train: list[LesionImage],
    val: list[LesionImage],
    mean: list[float],
    std: list[float],
    epochs: int,
    per_epoch: int,
    seed: int,
) -> tuple[torch.nn.Module, int, dict[str, Any], int]:
    model = build_network("resnet", **NETWORK)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    fundus = [_fundus(item) for item in train]
    val_patches = grid_patches(val)
    steps = epochs * math.ceil(per_epoch / BATCH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps, pct_start=0.15)
    best, best_epoch, best_state, best_scores = -math.inf, 0, None, {}
    for epoch in range(1, epochs + 1):
        model.train()
        patches = _random_patches(train, fundus, per_epoch, rng)
        total = 0.0
        for batch in torch.randperm(per_epoch, generator=generator).split(BATCH):
            inputs = common.normalise(_augment(patches.x[batch], generator), mean, std)
            weight = patches.known[batch].float()
            loss = F.binary_cross_entropy_with_logits(model(inputs), patches.y[batch], weight=weight, reduction="sum")
            loss = loss / weight.sum().clamp_min(1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(batch)
        scores = patch_auc(model, val_patches, mean, std)
        logger.info(
            "epoch %d/%d loss %.4f val patch AUC %s (%s)", epoch, epochs, total / per_epoch, scores["auc_macro"],
            ", ".join(str(scores[f"auc_{lesion}"]) for lesion in LESIONS),
        )
        if best_state is None or scores["auc_macro"] > best:  # NaN when no lesion has both classes in val
            best, best_epoch, best_scores = scores["auc_macro"], epoch, scores
            best_state = copy.deepcopy(model.state_dict())
    assert best_state is not None  # the first epoch sets it
    model.load_state_dict(best_state)
    return model.eval(), best_epoch, best_scores, epochs


def _evaluate_and_write(
    model: torch.nn.Module,
    train: list[LesionImage],
    val: list[LesionImage],
    test: list[LesionImage],
    mean: list[float],
    std: list[float],
    folder: Path,
    seed: int,
    training: dict[str, Any],
) -> ModelCard:
    val_patches, test_patches = grid_patches(val), grid_patches(test)
    x_val = common.normalise(val_patches.x, mean, std)
    labelled = val_patches.known.all(1)  # temperature from the patches whose every label counts
    val_logits = common.logits_of(model, x_val[labelled], 64)
    temperature = fit_temperature(val_logits, val_patches.y[labelled], multilabel=True)
    card = ModelCard(
        # A research model for checking explanations against lesion masks; the DR model reads fundus studies.
        serve_automatically=False,
        name=NAME,
        version="1.0.0",
        task="multilabel",
        labels=list(LABELS),
        modalities=["OP"],
        input=InputSpec(size=(IMAGE, IMAGE), channels=3, mean=tuple(mean), std=tuple(std), colour="rgb", crop="fundus"),
        architecture=Architecture("resnet", dict(NETWORK)),
        target_layer="features.stage4",
        weights="weights.pt",
        weights_sha256="0" * 64,
        metrics={},
        folder=folder,
        training_data="IDRiD segmentation set, images 01-12 (train) and 13-16 (validation), 512 px, "
        "optic-disc contour inpainted (Porwal et al., IEEE DataPort 2018, doi 10.21227/H25W98; CC BY 4.0)",
        licence="weights: CC BY 4.0, as their training data (IDRiD; cite Porwal et al. 2018, doi 10.21227/H25W98)",
        intended_use="research demonstration of lesion-presence explanations checked against lesion masks; "
        "not for clinical use",
        calibration_temperature=round(temperature, 6),
        uncertainty=UncertaintySpec(method="mc_dropout", samples=20),
        evaluation={
            "localisation": "models.datasets:idrid_heldout",
            "lesion_masks": dict(zip(LABELS, LESIONS, strict=True)),
            "heldout": list(IDRID_HELDOUT),
        },
    )
    x_test = common.normalise(test_patches.x, mean, std)
    full = test_patches.known.all(1)  # 55's patches lack haemorrhage and microaneurysm labels

    def errors(probs: np.ndarray) -> np.ndarray:
        return ((probs > 0.5) != (test_patches.y[full].numpy() > 0.5)).mean(1)

    threshold, selective, curves = common.selective_report(model, card, x_val, x_test[full], errors)
    patch = patch_auc(model, test_patches, mean, std)
    metrics = {
        "dataset": "IDRiD held-out images 17-24 and 55",
        "split": "test (IDRiD 17-24, 55)",
        "auc_macro": patch["auc_macro"],
        "patch": patch,
        "image": image_level(model, test, card),
        "patch_size": PATCH,
        "patch_stride": STRIDE,
        "presence_rule": f">= {MIN_PIXELS} mask pixels at {IMAGE} px",
        "selected_on": "val (IDRiD 13-16, patch AUC macro)",
        "temperature_fitted_on": "val (IDRiD 13-16 patches)",
        "referral": {
            **selective,
            "on": "test patches of 17-24 (all lesions annotated)",
            "error": "Hamming loss at probability 0.5",
        },
    }
    card = ModelCard(
        **{
            **card.__dict__,
            "metrics": metrics,
            "uncertainty_threshold": round(threshold, 6),
            "training": {
                "recipe": NAME,
                "seed": seed,
                **training,
                "threads": common.THREADS,
                "torch": torch.__version__,
                "patches_per_epoch": PATCHES_PER_EPOCH,
                "images": {"train": [i.name for i in train], "val": [i.name for i in val]},
            },
        }
    )
    return common.write_folder(card, model, curves)
