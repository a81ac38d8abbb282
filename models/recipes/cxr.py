"""Recipe "cxr-demo": a DEMONSTRATION chest radiograph model for the DICOM path, trained on SYNTHETIC
nodules inserted into real radiographs. It has never seen a real nodule: not for clinical use.

Real labelled chest radiographs are not available to this project, so the task is synthetic: a smooth,
slightly elliptical opacity (radius 2-6 px at 128 px, contrast 0.12-0.30 of the window) is added at a
random place in the central field of a random crop of a real radiograph; label "nodule" when one was added
(half of the samples), with its mask known. Trained and validated on NIH 00000001_000.png only (different
samples); RG1_J2KI.dcm is decoded by `load_radiograph` (pydicom) to check the DICOM path but not trained on:
it carries round opacities of its own. A small DenseNet on whole 128-px images (`training_crops` can
train on smaller crops holding the nodule; PATCH = SIZE turns it off). ResNet variants with global max
pooling, at 256 px and on 96-px crops, stayed at chance on val within the time budget. NIH
00027426_000.png is held out for the test set (Wang et al., CVPR 2017; no use restrictions); RG1_J2KI.dcm is
from pydicom-data (MIT).

Photometric handling, as the card declares: modality LUT, 1st-99th percentile window, MONOCHROME1 inverted
(`models.datasets.window_grayscale`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models import evaluation
from models.calibration import fit_temperature
from models.card import Architecture, InputSpec, ModelCard, UncertaintySpec
from models.datasets import TrainingDataError, window_grayscale
from models.networks import build_network
from models.recipes import common

logger = logging.getLogger(__name__)

NAME = "cxr-demo"
DATA = Path(__file__).resolve().parents[2] / "data" / "cxr"
TRAIN_FILES = ("00000001_000.png",)
# RG1_J2KI.dcm (16-bit JPEG 2000, MONOCHROME1) shows many round opacities of its own, which made "no nodule"
# samples from it wrong; it stays the DICOM-path check of `load_radiograph`, not training data.
DICOM_FILE = "RG1_J2KI.dcm"
TEST_FILE = "00027426_000.png"
SIZE = 128
RADIUS = (2.0, 6.0)  # px at SIZE
CONTRAST = (0.12, 0.3)  # peak opacity added, in units of the [0, 1] window
PATCH = 128  # training crops (= SIZE: whole images)
BASE = 512
ARCH = "densenet"
NETWORK = {
    "spatial_dims": 2,
    "in_channels": 1,
    "num_classes": 2,
    "growth_rate": 12,
    "block_layers": [4, 4, 4],
    "init_features": 24,
    "stem_stride": 2,
    "dropout": 0.3,
}
EPOCHS = 8
PER_EPOCH = 1024
BATCH = 32
LR = 2e-3
N_VAL, N_TEST = 300, 400
VAL_SEED, TEST_SEED = 1001, 2002


def load_radiograph(path: Path) -> np.ndarray:
    """(H, W) float32 [0, 1], longer side BASE px: DICOM (pydicom, modality LUT) or PNG, percentile-windowed,
    MONOCHROME1 inverted to MONOCHROME2."""
    try:
        if path.suffix.lower() == ".dcm":
            import pydicom
            from pydicom.pixels import apply_modality_lut

            ds = pydicom.dcmread(path)
            values = apply_modality_lut(ds.pixel_array, ds)
            pixels = window_grayscale(
                values, "percentile", photometric=str(ds.PhotometricInterpretation), invert_monochrome1=True
            )
        else:
            pixels = window_grayscale(np.asarray(Image.open(path).convert("L")), "percentile")
    except (OSError, ValueError, AttributeError) as exc:
        raise TrainingDataError(f"{path}: cannot read the radiograph ({exc})") from None
    scale = BASE / max(pixels.shape)
    shape = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    return np.asarray(Image.fromarray(pixels).resize(shape, Image.Resampling.BOX), dtype=np.float32)


def synthesise(
    bases: list[np.ndarray], n: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n samples: x (n, 1, SIZE, SIZE) [0, 1], y (n,) 0/1 nodule, masks (n, SIZE, SIZE) bool."""
    xs, ys, masks = [], [], []
    grid = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    for _ in range(n):
        base = bases[int(rng.integers(len(bases)))]
        side = int(min(base.shape) * rng.uniform(0.6, 1.0))
        top, left = int(rng.integers(base.shape[0] - side + 1)), int(rng.integers(base.shape[1] - side + 1))
        crop = torch.from_numpy(np.ascontiguousarray(base[top : top + side, left : left + side]))[None, None]
        x = F.interpolate(crop, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()
        x = x ** rng.uniform(0.8, 1.25)
        mask = np.zeros((SIZE, SIZE), bool)
        label = int(rng.random() < 0.5)
        if label:
            cy, cx = rng.uniform(0.2, 0.8) * SIZE, rng.uniform(0.15, 0.85) * SIZE
            ry, rx = rng.uniform(*RADIUS), rng.uniform(*RADIUS)
            d2 = ((grid[0] - cy) / ry) ** 2 + ((grid[1] - cx) / rx) ** 2
            profile = np.sqrt(np.clip(1 - d2, 0, None))
            x = x + rng.uniform(*CONTRAST) * profile
            mask = profile > 0
        x = x + rng.normal(0, 0.01, x.shape)
        xs.append(np.clip(x, 0, 1).astype(np.float32))
        ys.append(label)
        masks.append(mask)
    return torch.from_numpy(np.stack(xs))[:, None], torch.tensor(ys), torch.from_numpy(np.stack(masks))


def training_crops(x: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(N, 1, PATCH, PATCH) crops of (N, 1, SIZE, SIZE) samples, each holding its nodule (if any) whole:
    the network is fully convolutional with global max pooling, so it is trained on crops and applied to the
    whole SIZE x SIZE image."""
    crops = []
    for i in range(x.shape[0]):
        rows, cols = np.nonzero(masks[i].numpy())
        if rows.size:
            top = int(rng.integers(max(0, rows.max() - PATCH + 1), min(rows.min(), SIZE - PATCH) + 1))
            left = int(rng.integers(max(0, cols.max() - PATCH + 1), min(cols.min(), SIZE - PATCH) + 1))
        else:
            top, left = int(rng.integers(SIZE - PATCH + 1)), int(rng.integers(SIZE - PATCH + 1))
        crops.append(x[i, :, top : top + PATCH, left : left + PATCH])
    return torch.stack(crops)


def heldout_set(n: int = 40, *, folder: Path = DATA) -> list[tuple[np.ndarray, dict[str, np.ndarray], str]]:
    """Held-out synthetic samples for the localisation of explanations: (image (SIZE, SIZE) float32 [0, 1],
    already windowed, {"nodule": (SIZE, SIZE) bool}, name), from the test radiograph only; the first `n` of
    the test set (about half carry a nodule, whose mask is empty otherwise)."""
    x, y, masks = synthesise([load_radiograph(folder / TEST_FILE)], n, np.random.default_rng(TEST_SEED))
    return [
        (x[i, 0].numpy(), {"nodule": masks[i].numpy()}, f"cxr-synthetic-{i:03d}-{'nodule' if y[i] else 'none'}")
        for i in range(n)
    ]


def test_set(folder: Path = DATA, n: int = N_TEST) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out synthetic test set, x (n, 1, SIZE, SIZE) [0, 1] and y (n,), as the card's metrics use."""
    x, y, _ = synthesise([load_radiograph(folder / TEST_FILE)], n, np.random.default_rng(TEST_SEED))
    return x, y


def run(
    *, out_dir: Path | None, data: Path | None, seed: int, epochs: int | None = None, limit: int | None = None
) -> str:
    """Train, evaluate and write the model folder; returns a text report (see `models.training.run_recipe`)."""
    folder_data = Path(data) if data is not None else DATA
    bases = [load_radiograph(folder_data / name) for name in TRAIN_FILES]
    folder = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parent.parent / "zoo" / NAME
    x_val, y_val, _ = synthesise(bases, limit or N_VAL, np.random.default_rng(VAL_SEED))
    x_test, y_test = test_set(folder_data, limit or N_TEST)
    mean, std = [round(float(x_val.mean()), 4)], [round(float(x_val.std()), 4)]
    with common.deterministic_cpu(seed):
        started = time.perf_counter()
        model, best_epoch, val_scores = _train(
            bases, x_val, y_val, mean, std, epochs or EPOCHS, limit or PER_EPOCH, seed
        )
        seconds = time.perf_counter() - started
        card = _evaluate_and_write(
            model,
            x_val,
            y_val,
            x_test,
            y_test,
            mean,
            std,
            folder,
            seed,
            {"epochs": epochs or EPOCHS, "selected_epoch": best_epoch, "seconds": round(seconds, 1), "val": val_scores},
        )
    m = card.metrics
    return "\n".join(
        [
            f"trained {card.name} {card.version} -> {card.folder} in {seconds:.0f} s on {common.THREADS} CPU threads "
            f"(epoch {best_epoch} selected on val)",
            f"synthetic test (n={m['n']}, radiograph {TEST_FILE}): AUC {m['auc']:.3f}  ACC {m['accuracy']:.3f}  "
            f"ECE {m['ece_uncalibrated']:.3f} -> {m['ece_calibrated']:.3f}",
            f"T = {card.calibration_temperature:.3f}; referral threshold {card.uncertainty_threshold:.3f}",
        ]
    )


def _val_scores(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    probs = torch.softmax(common.logits_of(model, x, 100), 1).numpy()
    return {
        "auc": evaluation.binary_auc(probs[:, 1], y.numpy() == 1),
        "accuracy": evaluation.accuracy(probs, y.numpy()),
        "nll": evaluation.negative_log_likelihood(probs, y.numpy()),
    }


def _train(
    bases: list[np.ndarray],
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    mean: list[float],
    std: list[float],
    epochs: int,
    per_epoch: int,
    seed: int,
) -> tuple[torch.nn.Module, int, dict[str, Any]]:
    model = build_network(ARCH, **NETWORK)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(per_epoch / BATCH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps, pct_start=0.15)
    x_val_n = common.normalise(x_val, mean, std)
    best, best_epoch, best_state, best_scores = (-math.inf,), 0, None, {}
    for epoch in range(1, epochs + 1):
        model.train()
        x, y, masks = synthesise(bases, per_epoch, rng)
        x = common.random_flips(training_crops(x, masks, rng), generator)
        for batch in torch.randperm(per_epoch, generator=generator).split(BATCH):
            loss = F.cross_entropy(model(common.normalise(x[batch], mean, std)), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        scores = _val_scores(model, x_val_n, y_val)
        logger.info(
            "epoch %d/%d val auc %.4f acc %.3f nll %.3f",
            epoch,
            epochs,
            scores["auc"],
            scores["accuracy"],
            scores["nll"],
        )
        key = (round(scores["auc"], 6), -scores["nll"])
        if key > best:
            best, best_epoch, best_scores = key, epoch, {k: round(v, 6) for k, v in scores.items()}
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval(), best_epoch, best_scores


def _evaluate_and_write(
    model: torch.nn.Module,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    mean: list[float],
    std: list[float],
    folder: Path,
    seed: int,
    training: dict[str, Any],
) -> ModelCard:
    x_val, x_test = common.normalise(x_val, mean, std), common.normalise(x_test, mean, std)
    temperature = fit_temperature(common.logits_of(model, x_val, 100), y_val)
    logits = common.logits_of(model, x_test, 100)
    raw, scaled = torch.softmax(logits, 1).numpy(), torch.softmax(logits / temperature, 1).numpy()
    labels = y_test.numpy()
    metrics: dict[str, Any] = {
        "dataset": f"SYNTHETIC nodules in the held-out NIH radiograph {TEST_FILE} (seed {TEST_SEED})",
        "split": "test (synthetic, held-out radiograph)",
        "n": int(labels.size),
        "auc": round(evaluation.binary_auc(raw[:, 1], labels == 1), 6),
        "accuracy": round(evaluation.accuracy(raw, labels), 6),
        "ece_uncalibrated": round(evaluation.expected_calibration_error(raw, labels), 6),
        "ece_calibrated": round(evaluation.expected_calibration_error(scaled, labels), 6),
        "nll_uncalibrated": round(evaluation.negative_log_likelihood(raw, labels), 6),
        "nll_calibrated": round(evaluation.negative_log_likelihood(scaled, labels), 6),
        "selected_on": "val (synthetic, training radiographs, other samples)",
        "temperature_fitted_on": "val",
    }
    card = ModelCard(
        # At chance on its synthetic test set: listed with its metrics, never run on studies.
        serve_automatically=False,
        name=NAME,
        version="1.0.0",
        task="classification",
        labels=["no nodule", "nodule"],
        modalities=["CR", "DX"],
        input=InputSpec(
            size=(SIZE, SIZE),
            channels=1,
            mean=tuple(mean),
            std=tuple(std),
            colour="grayscale",
            windowing="percentile",
            invert_monochrome1=True,
        ),
        architecture=Architecture(ARCH, dict(NETWORK)),
        target_layer="features.relu_final",
        weights="weights.pt",
        weights_sha256="0" * 64,
        metrics=metrics,
        folder=folder,
        training_data="SYNTHETIC nodules inserted into a real radiograph: NIH ChestX-ray14 00000001_000.png "
        "(NIH Clinical Center, no use restrictions; Wang et al., CVPR 2017)",
        licence="weights: a demonstration shipped with Lumen; derived from pydicom-data (MIT) and NIH ChestX-ray14 "
        "(no use restrictions; cite Wang et al., CVPR 2017)",
        intended_use="DEMONSTRATION ONLY of the DICOM path (16-bit, MONOCHROME1, windowing) and of explanations "
        "checked against known synthetic masks; trained on synthetic nodules, never on real findings; "
        "not for clinical use",
        calibration_temperature=round(temperature, 6),
        uncertainty=UncertaintySpec(method="mc_dropout", samples=20),
        evaluation={"localisation": "models.recipes.cxr:heldout_set", "synthetic": True},
    )
    threshold, selective, curves = common.selective_report(
        model, card, x_val, x_test, lambda probs: (probs.argmax(1) != labels).astype(np.float64)
    )
    card = dataclasses.replace(
        card,
        uncertainty_threshold=round(threshold, 6),
        metrics={**metrics, "referral": selective},
        training={
            "recipe": NAME,
            "seed": seed,
            **training,
            "threads": common.THREADS,
            "torch": torch.__version__,
            "samples_per_epoch": PER_EPOCH,
            "radiographs": {"train_val": list(TRAIN_FILES), "test": TEST_FILE},
        },
    )
    return common.write_folder(card, model, curves)
