"""Recipe "cxr-nih14": findings on real frontal chest radiographs, trained from scratch on 358 NIH ChestX-ray14
images (Wang et al., "ChestX-ray8", CVPR 2017; NIH Clinical Center, no use restrictions).

Data: `nih-cxr14-621` (default ../shared/data/nih-cxr14-621, `--data` overrides): 621 radiographs, one per
patient, 512 px, 14 NLP-mined findings, a fixed patient-level split train 358 / val 126 / test 137 (labels.csv
`split`); the 12 images with radiologists' boxes (bboxes.csv) are all in test. The sample is enriched for
disease (100 of 621 "No Finding"), so probabilities and prevalences are this sample's, not a hospital's.

Every image goes through the product's own preprocessing (`models.preprocessing.prepare`: the PNG decoded as
(H, W) grayscale like an upload, 1st-99th percentile window, MONOCHROME1 inverted, resized to SIZE), training
augments those inputs (small rotations, zoom/shift crops, gamma and gain), and the test metrics are those of
the served pipeline (the card's MC dropout, per row, seed 0, as the worker calls `estimate_batch`).

Model: a small ResNet (`models.networks.resnet`, ~0.3 M parameters), one sigmoid per finding, BCE with
`pos_weight` = negatives / positives (capped) so rare findings are not ignored; the best epoch by val macro
AUROC over the findings with >= MIN_TRAIN_POSITIVES training positives is kept. Then:

1. prior correction: the positive weight w shifts the BCE minimiser by log w (logit(p) + log w), so log w is
   taken off each finding's classifier bias and the logits estimate this sample's probabilities again;
2. findings: those with >= MIN_TRAIN_POSITIVES training positives whose val AUROC's bootstrap 95% interval lies
   above 0.5 are kept; the classifier rows of the others are dropped (the backbone is shared, so the kept
   findings' logits do not change);
3. calibration: one temperature shared by the kept findings, fitted on val (`fit_temperature(multilabel=True)`);
   one parameter over 126 x K labels, where a temperature per finding would rest on 7-27 val positives each;
4. referral: the predictive entropy (sum of the findings' binary entropies) above its val 80th percentile.

What the worker stores for this multilabel card (unchanged code): `probabilities` one calibrated presence
probability per kept finding (they do not sum to 1), `label`/`label_index` the most probable finding, which
explanations target; it is the finding the model ranks first, not a statement that it is present.
"""

from __future__ import annotations

import copy
import csv
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

from models import evaluation, uncertainty
from models.calibration import fit_temperature
from models.card import Architecture, DomainSpec, InputSpec, ModelCard, UncertaintySpec
from models.datasets import TrainingDataError
from models.networks import build_network
from models.preprocessing import prepare
from models.recipes import common

logger = logging.getLogger(__name__)

NAME = "cxr-nih14"
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "nih-cxr14-621"
TEST_SAMPLE = ROOT / "data" / "nih_cxr14_test.npz"
FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
BOX_FINDINGS = {"Infiltrate": "Infiltration"}  # BBox_List_2017 spells one finding differently
SIZE = 224
ARCH = "resnet"
NETWORK = {
    "spatial_dims": 2,
    "in_channels": 1,
    "num_classes": len(FINDINGS),
    "widths": [16, 32, 64, 128],
    "blocks": [1, 1, 1, 1],
    "stem_stride": 2,
    "stem_pool": True,
    "dropout": 0.3,
    "pool": "avg",
}
EPOCHS = 80
PATIENCE = 25  # epochs without a better val macro AUROC before stopping
BATCH = 16  # 23 steps an epoch: with 32, 60 epochs were 720 steps and the training loss had hardly moved
LR = 2e-3
WEIGHT_DECAY = 5e-4
POS_WEIGHT_CAP = 10.0
MIN_TRAIN_POSITIVES = 20
ROTATION_DEGREES = 7.0
ZOOM = (1.0, 1.15)  # crops of 87-100% of the side, resized back to SIZE
SHIFT = 0.05  # of the side
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 2000, 2017
# One thread: on the shared 2-core machine a 2-thread step took 4x longer than one thread whenever another
# process held a core (see models/recipes/cxr.py); results are deterministic either way.
THREADS = 1
LICENCE = (
    "weights: derived from NIH ChestX-ray14 (NIH Clinical Center, no use restrictions; link "
    "https://nihcc.app.box.com/v/ChestXray-NIHCC, cite Wang et al., CVPR 2017, acknowledge the NIH Clinical Center)"
)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: `files` (N,) image names; `images` (N, H, W) float32 grey levels as decoded (0-255);
    `x` (N, 1, SIZE, SIZE) the served input before mean/std (windowed, [0, 1]); `y` (N, 14) float 0/1."""

    files: list[str]
    images: list[np.ndarray]
    x: torch.Tensor
    y: torch.Tensor


def unit_card(folder: Path) -> ModelCard:
    """The card's input spec with mean 0 and std 1: `prepare` then gives the windowed, resized [0, 1] input that
    the real card's mean/std normalise (training augments that, and normalises after)."""
    return _card(folder, mean=0.0, std=1.0, labels=[display_name(f) for f in FINDINGS], temperature=1.0)


def read_labels(folder: Path) -> list[dict[str, str]]:
    """labels.csv rows, checked for the columns this recipe reads."""
    path = folder / "labels.csv"
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file (pass --data the nih-cxr14-621 folder)")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"file", "split", *FINDINGS} - set(rows[0] if rows else {})
    if missing:
        raise TrainingDataError(f"{path}: columns {sorted(missing)} are missing")
    return rows


def read_radiograph(path: Path) -> np.ndarray:
    """(H, W) float32 grey levels, as the product decodes a grayscale PNG upload (`app.ingest.pixels`)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")).astype(np.float32)
    except OSError as exc:
        raise TrainingDataError(f"{path}: cannot read the radiograph ({exc})") from None


def load_split(folder: Path, rows: list[dict[str, str]], split: str, limit: int | None = None) -> Split:
    """The rows of `split` (the first `limit`), read and prepared as served."""
    chosen = [row for row in rows if row["split"] == split][:limit]
    if not chosen:
        raise TrainingDataError(f"{folder / 'labels.csv'}: no images in split {split!r}")
    card = unit_card(folder)
    images = [read_radiograph(folder / row["file"]) for row in chosen]
    x = torch.cat([prepare(image, card) for image in images])
    y = torch.tensor([[float(row[name]) for name in FINDINGS] for row in chosen])
    return Split([Path(row["file"]).name for row in chosen], images, x, y)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, zoom and shift (one affine resampling, border pixels repeated), then gamma and gain:
    (N, 1, H, W) [0, 1] -> the same. No flips: a left-right flip moves the heart to the other side."""
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-ROTATION_DEGREES, ROTATION_DEGREES) * math.pi / 180
    scale = 1 / uniform(*ZOOM)
    shift = torch.stack([uniform(-SHIFT, SHIFT), uniform(-SHIFT, SHIFT)], 1) * 2
    cos, sin = angle.cos() * scale, angle.sin() * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gamma = torch.exp(uniform(-0.25, 0.25)).view(-1, 1, 1, 1)
    gain = uniform(0.9, 1.1).view(-1, 1, 1, 1)
    return (x.clamp(0, 1) ** gamma * gain).clamp(0, 1)


def per_finding_auc(probs: np.ndarray, y: np.ndarray, names: list[str]) -> dict[str, float]:
    """AUROC of each finding's column; NaN where a split lacks one class."""
    return {name: evaluation.binary_auc(probs[:, k], y[:, k] > 0.5) for k, name in enumerate(names)}


def run(
    *, out_dir: Path | None, data: Path | None, seed: int, epochs: int | None = None, limit: int | None = None
) -> str:
    """Train, choose the findings, calibrate, evaluate and write the model folder; returns a text report (see
    `models.training.run_recipe`). `limit` (smoke runs) takes the first images of each split and keeps
    every finding with positives in train and val, whatever its val AUROC."""
    folder_data = Path(data) if data is not None else DATA
    rows = read_labels(folder_data)
    train, val, test = (load_split(folder_data, rows, split, limit) for split in ("train", "val", "test"))
    folder = Path(out_dir) if out_dir is not None else ROOT / "models" / "zoo" / NAME
    mean, std = round(float(train.x.mean()), 4), round(float(train.x.std()), 4)
    min_positives = MIN_TRAIN_POSITIVES if not limit else 1
    candidates = [k for k in range(len(FINDINGS)) if train.y[:, k].sum() >= min_positives and val.y[:, k].any()]
    with common.deterministic_cpu(seed):
        torch.set_num_threads(THREADS)  # deterministic_cpu gives the caller's thread count back on exit
        started = time.perf_counter()
        model, training = _train(train, val, mean, std, candidates, epochs or EPOCHS, seed)
        seconds = time.perf_counter() - started
        positives = [int(n) for n in train.y.sum(0)]
        kept, selection = choose_findings(model, val, mean, std, candidates, positives, strict=not limit)
        model = keep_findings(model, kept)
        card = _evaluate_and_write(
            model, val, test, kept, mean, std, folder, seed, {**training, "seconds": round(seconds, 1)}, selection
        )
    m = card.metrics
    lines = [
        f"trained {card.name} {card.version} -> {card.folder} in {seconds:.0f} s on {THREADS} CPU thread "
        f"(epoch {training['selected_epoch']} of {training['epochs_run']} selected on val macro AUROC)",
        f"kept {', '.join(card.labels)}; dropped {', '.join(f'{k} ({v})' for k, v in selection['dropped'].items())}",
        f"test (n={m['n']}, served pipeline): macro AUROC {m['auc_macro']['auc']} "
        f"[{m['auc_macro']['low']}, {m['auc_macro']['high']}]",
        *(f"  {name}: {r['auc']} [{r['low']}, {r['high']}] ({r['n_positive']} positive)"
          for name, r in m["per_finding"].items()),
        f"T = {card.calibration_temperature:.3f}; Brier {m['calibration']['calibrated']['brier']}, "
        f"ECE {m['calibration']['uncalibrated']['ece']} -> {m['calibration']['calibrated']['ece']}; "
        f"referral threshold {card.uncertainty_threshold:.3f}",
    ]
    return "\n".join(lines)


def _train(
    train: Split, val: Split, mean: float, std: float, candidates: list[int], epochs: int, seed: int
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """BCE with capped pos_weight; the epoch with the best val macro AUROC over `candidates` is kept; stops
    after PATIENCE epochs without improvement."""
    model = build_network(ARCH, **NETWORK)
    generator = torch.Generator().manual_seed(seed)
    positives = train.y.sum(0)
    pos_weight = ((len(train.y) - positives) / positives.clamp_min(1)).clamp(1.0, POS_WEIGHT_CAP)
    x_val = common.normalise(val.x, [mean], [std])
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(len(train.y) / BATCH)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LR, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    best, best_epoch, best_state, history = -math.inf, 0, None, []
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(train.y), generator=generator).split(BATCH):
            if len(batch) > 1:  # batch norm needs two samples
                inputs = common.normalise(augment(train.x[batch], generator), [mean], [std])
                loss = F.binary_cross_entropy_with_logits(model(inputs), train.y[batch], pos_weight=pos_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            scheduler.step()
        probs = torch.sigmoid(common.logits_of(model, x_val, 64)).numpy()
        aucs = per_finding_auc(probs, val.y.numpy(), list(FINDINGS))
        score = float(np.nanmean([aucs[FINDINGS[k]] for k in candidates])) if candidates else math.nan
        history.append(round(score, 4))
        logger.info("epoch %d/%d loss %.4f val macro AUROC %.4f (%s)", epoch, epochs, total / len(train.y), score,
                    " ".join(f"{FINDINGS[k][:4]} {aucs[FINDINGS[k]]:.2f}" for k in candidates))
        if best_state is None or score > best:  # NaN (no candidate) keeps the first epoch
            best, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= PATIENCE:
            break
    assert best_state is not None  # the first epoch sets it
    model.load_state_dict(best_state)
    classifier = model.get_submodule("head.classifier")
    assert isinstance(classifier, torch.nn.Linear)
    with torch.no_grad():  # prior correction (module docstring, step 1)
        classifier.bias.sub_(pos_weight.log())
    training = {
        "epochs": epochs, "epochs_run": epoch, "selected_epoch": best_epoch, "val_macro_auc": round(best, 6),
        "val_macro_auc_by_epoch": history, "pos_weight": [round(float(w), 4) for w in pos_weight],
        "images": {"train": len(train.files), "val": len(val.files)},
    }
    return model.eval(), training


def choose_findings(
    model: torch.nn.Module,
    val: Split,
    mean: float,
    std: float,
    candidates: list[int],
    train_positives: list[int],
    *,
    strict: bool = True,
) -> tuple[list[int], dict[str, Any]]:
    """The findings to serve: candidates whose val AUROC's bootstrap 95% interval lies above 0.5 (`strict`),
    or every candidate (smoke runs). Returns their indices in FINDINGS and why each other finding was dropped."""
    probs = torch.sigmoid(common.logits_of(model, common.normalise(val.x, [mean], [std]), 64)).numpy()
    val_auc, dropped, kept = {}, {}, []
    for k, name in enumerate(FINDINGS):
        interval = evaluation.bootstrap_auc(
            probs[:, k], val.y[:, k].numpy() > 0.5, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED
        )
        val_auc[name] = interval
        if k not in candidates:
            dropped[name] = f"{train_positives[k]} training positives (< {MIN_TRAIN_POSITIVES}) or none in val"
        elif strict and (interval["low"] is None or interval["low"] <= 0.5):
            dropped[name] = f"val AUROC {interval['auc']} [{interval['low']}, {interval['high']}] includes chance"
        else:
            kept.append(k)
    # A card names at least 2 labels: when fewer clear chance, the candidates with the highest val lower bounds
    # fill up, and are listed as near chance on val (the card and its summary say so).
    near_chance_on_val = []
    for k in sorted(set(candidates) - set(kept), key=lambda k: -(val_auc[FINDINGS[k]]["low"] or 0.0)):
        if len(kept) >= 2:
            break
        kept.append(k)
        near_chance_on_val.append(FINDINGS[k])
        del dropped[FINDINGS[k]]
    if len(kept) < 2:
        raise TrainingDataError(f"fewer than 2 findings with positives in train and val: {dropped}")
    return sorted(kept), {
        "rule": f">= {MIN_TRAIN_POSITIVES} training positives and val AUROC 95% bootstrap interval above 0.5",
        "val_auc": val_auc, "dropped": dropped, "kept_although_near_chance_on_val": near_chance_on_val,
    }


def keep_findings(model: torch.nn.Module, kept: list[int]) -> torch.nn.Module:
    """The same network with only the `kept` rows of its classifier (num_classes = len(kept))."""
    smaller = build_network(ARCH, **{**NETWORK, "num_classes": len(kept)})
    state = model.state_dict()
    index = torch.tensor(kept)
    state["head.classifier.weight"] = state["head.classifier.weight"][index]
    state["head.classifier.bias"] = state["head.classifier.bias"][index]
    smaller.load_state_dict(state)
    return smaller.eval()


def served_probabilities(model: torch.nn.Module, card: ModelCard, images: list[np.ndarray]) -> np.ndarray:
    """(N, K) what the worker stores as `probabilities` for each image: `prepare`, then the card's uncertainty
    method through `estimate_batch` (MC dropout per row, seed 0), calibrated."""
    parts: list[torch.Tensor] = []
    for start in range(0, len(images), 32):
        x = torch.cat([prepare(image, card) for image in images[start : start + 32]])
        parts.extend(result.probabilities for result in uncertainty.estimate_batch(model, x, card))
    return torch.stack(parts).numpy()


def display_name(finding: str) -> str:
    return finding.replace("_", " ").lower()


def _card(
    folder: Path, *, mean: float, std: float, labels: list[str], temperature: float, **fields: Any
) -> ModelCard:
    network = {**NETWORK, "num_classes": len(labels)}
    return ModelCard(
        name=NAME,
        version="1.0.0",
        task="multilabel",
        labels=labels,
        modalities=["CR", "DX"],
        input=InputSpec(
            size=(SIZE, SIZE), channels=1, mean=(mean,), std=(std,), colour="grayscale", windowing="percentile",
            invert_monochrome1=True,
        ),
        architecture=Architecture(ARCH, network),
        target_layer="features.stage4",
        weights="weights.pt",
        weights_sha256="0" * 64,
        metrics=fields.pop("metrics", {"split": "none"}),
        folder=folder,
        training_data="358 frontal chest radiographs of 358 patients from NIH ChestX-ray14 (NIH Clinical Center, "
        "2017; NLP-mined labels), sample enriched for disease; validation 126 patients, test 137 patients",
        licence=LICENCE,
        intended_use="research demonstration of a chest radiograph model trained from scratch on a small public "
        "sample; not for clinical use",
        calibration_temperature=temperature,
        uncertainty=UncertaintySpec(method="mc_dropout", samples=20),
        domain=DomainSpec(
            body_part="chest", body_parts=["CHEST"], view="frontal (PA/AP)",
            photometric="grayscale radiograph, MONOCHROME2 after inversion",
        ),
        **fields,
    )


def _evaluate_and_write(
    model: torch.nn.Module,
    val: Split,
    test: Split,
    kept: list[int],
    mean: float,
    std: float,
    folder: Path,
    seed: int,
    training: dict[str, Any],
    selection: dict[str, Any],
) -> ModelCard:
    names = [FINDINGS[k] for k in kept]
    labels = [display_name(name) for name in names]
    x_val = common.normalise(val.x, [mean], [std])
    temperature = fit_temperature(common.logits_of(model, x_val, 64), val.y[:, kept], multilabel=True)
    card = _card(folder, mean=mean, std=std, labels=labels, temperature=round(temperature, 6),
                 evaluation={"samples": "models.recipes.cxr_nih:boxed_test_images"})
    y_test = test.y[:, kept].numpy()
    calibrated = served_probabilities(model, card, test.images)
    uncalibrated = served_probabilities(model, dataclasses.replace(card, calibration_temperature=1.0), test.images)
    metrics = test_metrics(calibrated, uncalibrated, y_test, labels)
    metrics["shipped_sample"] = shipped_sample_metrics(model, card, test, kept)
    metrics["findings_selection"] = selection

    def errors(probs: np.ndarray) -> np.ndarray:
        return ((probs - y_test) ** 2).mean(1)

    threshold, selective, curves = common.selective_report(
        model, card, x_val, common.normalise(test.x, [mean], [std]), errors
    )
    metrics["referral"] = {**selective, "error": "per-case Brier score (mean over the kept findings)"}
    card = dataclasses.replace(
        card,
        metrics=metrics,
        uncertainty_threshold=round(threshold, 6),
        summary=clinician_summary(metrics, selection),
        training={
            "recipe": NAME, "seed": seed, **training, "threads": THREADS, "torch": torch.__version__,
            "images": {**training["images"], "test": len(test.files)},
            "augmentation": f"rotation +-{ROTATION_DEGREES} deg, zoom {ZOOM}, shift +-{SHIFT}, gamma, gain; no flips",
            "loss": f"BCE, pos_weight negatives/positives capped at {POS_WEIGHT_CAP}, prior-corrected after training",
        },
    )
    return common.write_folder(card, model, {**curves, "test_probabilities": calibrated.round(6).tolist(),
                                             "test_files": test.files})


def test_metrics(
    calibrated: np.ndarray, uncalibrated: np.ndarray, y: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """Per-finding AUROC with bootstrap 95% intervals, the macro AUROC with its interval (the same resampled
    cases for every finding), and calibration before and after the temperature, on (N, K) test arrays."""
    per_finding = {
        label: evaluation.bootstrap_auc(
            calibrated[:, k], y[:, k] > 0.5, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED
        )
        for k, label in enumerate(labels)
    }
    return {
        "dataset": "NIH ChestX-ray14, nih-cxr14-621 test split (137 patients, enriched for disease)",
        "split": "test",
        "n": int(y.shape[0]),
        "measured": "served pipeline: prepare (percentile window, 224 px) + MC dropout (20 samples, seed 0), "
        "calibrated",
        "auc_macro": macro_auc_interval(calibrated, y),
        "per_finding": per_finding,
        "prevalence": {label: round(float(y[:, k].mean()), 4) for k, label in enumerate(labels)},
        "calibration": {
            "uncalibrated": evaluation.binary_calibration(uncalibrated, y),
            "calibrated": evaluation.binary_calibration(calibrated, y),
            "prevalence_baseline": evaluation.binary_calibration(np.broadcast_to(y.mean(0), y.shape), y),
            "note": "Brier and ECE of each finding's presence probability, all (case, finding) pairs pooled; "
            "the baseline predicts each finding's test prevalence for every case",
        },
    }


def macro_auc_interval(probs: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """Macro AUROC over the findings of (N, K) arrays, with a percentile bootstrap 95% interval over cases."""
    auc = float(np.nanmean([evaluation.binary_auc(probs[:, k], y[:, k] > 0.5) for k in range(y.shape[1])]))
    rows = np.random.default_rng(BOOTSTRAP_SEED).integers(0, y.shape[0], size=(BOOTSTRAP_RESAMPLES, y.shape[0]))
    per = np.stack([evaluation.mann_whitney_auc(probs[rows, k], y[rows, k] > 0.5) for k in range(y.shape[1])], 1)
    with np.errstate(invalid="ignore"):
        macro = np.nanmean(per, axis=1)
    low, high = np.nanpercentile(macro, [2.5, 97.5])
    return {"auc": round(auc, 6), "low": round(float(low), 6), "high": round(float(high), 6)}


def downscale(image: np.ndarray) -> np.ndarray:
    """(H, W) grey levels -> (SIZE, SIZE) uint8, resized as `prepare` resizes (antialiased bilinear): the
    shipped test sample, an upload of the radiograph at the model's input size."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    small = F.interpolate(t, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)[0, 0]
    return small.round().clamp(0, 255).to(torch.uint8).numpy()


def shipped_sample_metrics(model: torch.nn.Module, card: ModelCard, test: Split, kept: list[int]) -> dict[str, Any]:
    """The served-pipeline AUROCs on the test images downscaled to SIZE (`downscale`), as data/nih_cxr14_test.npz
    ships them: what the model tests recompute without ../shared."""
    probs = served_probabilities(model, card, [downscale(image).astype(np.float32) for image in test.images])
    y = test.y[:, kept].numpy()
    aucs = per_finding_auc(probs, y, card.labels)
    return {
        "file": "data/nih_cxr14_test.npz",
        "auc_macro": round(float(np.nanmean(list(aucs.values()))), 6),
        "per_finding": {label: round(auc, 6) for label, auc in aucs.items()},
    }


def export_test_sample(data: Path = DATA, path: Path = TEST_SAMPLE) -> Path:
    """Write the test split at SIZE px with its labels and boxes to `path` (compressed .npz, no pickles):
    images (N, SIZE, SIZE) uint8, labels (N, 14) uint8, findings (14,) display names, files (N,), and the
    boxes: box_image (B,) row in images, box_finding (B,), boxes (B, 4) x, y, w, h in the SIZE-px frame."""
    rows = read_labels(data)
    test = [row for row in rows if row["split"] == "test"]
    files = [Path(row["file"]).name for row in test]
    images = [read_radiograph(data / row["file"]) for row in test]
    box_image, box_finding, boxes = [], [], []
    with open(data / "bboxes.csv", newline="", encoding="utf-8") as handle:
        for box in csv.DictReader(handle):
            index = files.index(Path(box["file"]).name)
            scale = SIZE / images[index].shape[1]
            box_image.append(index)
            box_finding.append(display_name(BOX_FINDINGS.get(box["finding"], box["finding"])))
            boxes.append([float(box[key]) * scale for key in ("x", "y", "w", "h")])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        images=np.stack([downscale(image) for image in images]),
        labels=np.array([[int(row[name]) for name in FINDINGS] for row in test], dtype=np.uint8),
        findings=np.array([display_name(name) for name in FINDINGS]),
        files=np.array(files),
        box_image=np.array(box_image, dtype=np.int64),
        box_finding=np.array(box_finding),
        boxes=np.array(boxes, dtype=np.float32),
    )
    return path


def box_mask(box: np.ndarray, size: int) -> torch.Tensor:
    """(1, 1, size, size) bool: the pixels any part of the box (x, y, w, h in that frame) covers."""
    x, y, w, h = (float(v) for v in box)
    mask = torch.zeros(1, 1, size, size, dtype=torch.bool)
    mask[..., max(0, math.floor(y)) : math.ceil(y + h), max(0, math.floor(x)) : math.ceil(x + w)] = True
    return mask


def boxed_test_images(card: ModelCard, limit: int) -> Any:
    """The evaluation samples of `lumen evaluate-explanations cxr-nih14`: the boxed test radiographs of
    data/nih_cxr14_test.npz whose boxed finding the model serves, prepared as the card says, each labelled
    with that finding and masked with its box (`models.explain.evaluate.Samples`)."""
    from models.explain.evaluate import Samples  # evaluate imports the sample sources, not the other way round

    with np.load(TEST_SAMPLE, allow_pickle=False) as sample:
        images, box_image = sample["images"], sample["box_image"]
        box_finding, boxes = [str(f) for f in sample["box_finding"]], sample["boxes"]
    size = card.input.size[0]
    chosen = [i for i, finding in enumerate(box_finding) if finding in card.labels][:limit]
    if not chosen:
        raise ValueError(f"no boxed test image shows a finding of {card.name!r} ({card.labels})")
    scale = size / images.shape[1]
    return Samples(
        x=torch.cat([prepare(images[box_image[i]].astype(np.float32), card) for i in chosen]),
        labels=torch.tensor([card.labels.index(box_finding[i]) for i in chosen]),
        masks=torch.cat([box_mask(boxes[i] * scale, size) for i in chosen]),
    )


def clinician_summary(metrics: dict[str, Any], selection: dict[str, Any]) -> str:
    """One sentence a clinician reads in five seconds: the data, each served finding's test AUROC with its 95%
    interval (flagged when near chance on test, or kept although near chance on val), what it does not report,
    and not for clinical use."""
    weak_on_val = {display_name(f) for f in selection.get("kept_although_near_chance_on_val", [])}
    results = sorted(metrics["per_finding"].items(), key=lambda item: -(item[1]["auc"] or 0))
    findings = []
    for name, r in results:
        caveats = [f"{r['n_positive']} test cases"]
        if r["low"] is None or r["low"] <= 0.5:
            caveats.append("near chance")
        if name in weak_on_val:
            caveats.append("near chance on validation")
        interval = "no interval" if r["low"] is None else f"95% CI {r['low']:.2f}-{r['high']:.2f}"
        auc = "undefined" if r["auc"] is None else f"{r['auc']:.2f}"
        findings.append(f"{name} AUROC {auc} ({interval}; {', '.join(caveats)})")
    return (
        f"Trained from scratch on 358 NIH chest radiographs (one US hospital, labels mined from reports). "
        f"On {metrics['n']} test patients: {'; '.join(findings)}. Does not report the {len(selection['dropped'])} "
        "other NIH findings (near chance on validation or too few examples). Research only, not for clinical use."
    )


def domain_sets(card: ModelCard, data: Path = DATA) -> Any:
    """The in-domain images of the input-domain gate (`models.recipes.ood.DomainSets`, for `lumen fit-ood`):
    the nih-cxr14-621 splits as decoded (train 358 fits, val 126 sets the threshold, test 137 measures), one
    mean (multilabel: no class per image)."""
    from models.recipes.ood import DomainSets  # ood's recipe table imports this module, not the other way round

    rows = read_labels(data)

    def split(name: str) -> list[np.ndarray]:
        return [read_radiograph(data / row["file"]) for row in rows if row["split"] == name]

    return DomainSets(
        train=list(split("train")),
        val=list(split("val")),
        test=list(split("test")),
        train_classes=None,
        fitted_on="nih-cxr14-621 train (358 radiographs, one mean: multilabel); threshold on val (126); false "
        "rejection on test (137)",
        domain=card.domain or _card(card.folder, mean=0.0, std=1.0, labels=card.labels, temperature=1.0).domain,
    )
