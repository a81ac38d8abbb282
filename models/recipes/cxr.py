"""Recipe "cxr-demo": a DEMONSTRATION chest radiograph model for the DICOM path, trained on SYNTHETIC
nodules inserted into real radiographs. It has never seen a real nodule: not for clinical use.

Real labelled chest radiographs are not available to this project, so the task is synthetic. Each sample is
a random crop (85-100% of the side) of a real radiograph, windowed as the card declares and resized to
SIZE px as `models.preprocessing.prepare` resizes; half of them get a nodule first, at the radiograph's own
resolution: a slightly elliptical opacity of 5-30 mm diameter (SPACING_MM: about 0.7 mm per px at 512 px,
estimated from a rib cage about 32 cm wide; the PNGs carry no spacing) with a sphere's path-length profile
and blurred edges, centred in a lung field (`lung_fields`), its peak 0.3-1.0 times the local lung contrast
(the interdecile range around it). Label "nodule" when one was added, with its mask known.

Trained and validated on NIH 00000001_000.png only (different samples); NIH 00027426_000.png is held out for
the test set (Wang et al., CVPR 2017; no use restrictions). RG1_J2KI.dcm (pydicom-data, MIT) is decoded by
`load_radiograph` to check the DICOM path but not trained on: it carries round opacities of its own.

The network, a small ResNet with global max pooling, is trained on PATCH-px patches holding the nodule
(`training_patches`), with the known mask supervising its class activation map (`nodule_loss`), and applied
to the whole SIZE-px image. Version 1 (a DenseNet with global average pooling on whole images, image label
only) stayed at chance; docs/cxr-demo.md has the cause, the val ablation and the limitations. The test
radiograph carries a round opacity of its own in the left mid zone, which the model flags on its
"no nodule" samples: the test AUC holds, its accuracy and calibration at the 0.5 threshold do not.

Photometric handling, as the card declares: modality LUT, 1st-99th percentile window, MONOCHROME1 inverted
(`models.datasets.window_grayscale`); training windows each radiograph whole, as the worker does.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

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
BASE = 512
SPACING_MM = 0.7  # mm per px of the BASE-px radiograph (not stored in the PNGs; see the module docstring)
DIAMETER_MM = (5.0, 30.0)
CONTRAST = (0.3, 1.0)  # peak opacity as a fraction of the local lung contrast (interdecile range)
CROP = (0.85, 1.0)  # side of the random crop, as a fraction of the radiograph's shorter side
LUNG_LEVEL = 0.45  # lung fields are darker than this in the smoothed, windowed radiograph
ARCH = "resnet"
NETWORK = {
    "spatial_dims": 2,
    "in_channels": 1,
    "num_classes": 2,
    "widths": [16, 32, 64],
    "blocks": [1, 1, 1],
    "stem_stride": 1,
    "stem_pool": True,
    "dropout": 0.3,
    "pool": "max",
}
PATCH = 48  # training patches, px at SIZE (about 13 cm): a nodule and the lung around it
TRAIN_SAMPLES = 6144  # synthesised once; every epoch takes one random patch of each
EPOCHS = 8
BATCH = 32
LR = 2e-3
MASK_WEIGHT, MASK_POS_WEIGHT = 1.0, 5.0  # the class-activation-map loss (`nodule_loss`)
DIAMETER_BANDS = ((5, 10), (10, 20), (20, 30))  # mm, for the test AUC by nodule size
INTENDED_USE = (
    "DEMONSTRATION ONLY of the DICOM path (16-bit, MONOCHROME1, windowing) and of explanations checked against "
    "known synthetic masks; not for clinical use. Limitations: trained and validated on SYNTHETIC nodules "
    "inserted into ONE radiograph and tested on one other; it has never seen a real nodule, another patient, "
    "projection or device, and its performance on real radiographs is unknown. It flags round opacities in the "
    "lung fields, real ones included: the test radiograph's own opacity makes most of its 'no nodule' samples "
    "positive, so test accuracy and calibration at the 0.5 threshold are poor while the AUC holds. Nodules "
    "under 10 mm are barely detected (metrics.auc_by_diameter_mm)."
)
# One thread: on this shared 2-core machine a 2-thread step took 1.1-1.5 s instead of 0.03 s whenever another
# process held a core (OpenMP threads waiting on each other), against 0.05 s for one thread either way.
THREADS = 1
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


def lung_fields(base: np.ndarray) -> np.ndarray:
    """(H, W) bool: where a nodule may be centred. The two largest dark regions of the central field of the
    smoothed, windowed radiograph, eroded so that a nodule sits in aerated lung, not on the mediastinum,
    the diaphragm or the chest wall (where it would be clipped by the window or hidden by bone)."""
    smooth = ndimage.gaussian_filter(base, 6)
    rows, cols = base.shape
    dark = (smooth < LUNG_LEVEL) & (smooth > 0.05)
    dark[: rows // 8] = dark[-rows // 8 :] = False
    dark[:, : cols // 16] = dark[:, -cols // 16 :] = False
    dark = ndimage.binary_erosion(dark, iterations=10)
    labels, count = ndimage.label(dark)
    if count == 0:
        raise TrainingDataError("no lung field found in the radiograph")
    sizes = ndimage.sum(dark, labels, range(1, count + 1))
    return np.isin(labels, 1 + np.argsort(sizes)[-2:])


def nodule(
    base: np.ndarray, centre: tuple[int, int], rng: np.random.Generator
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, float]:
    """A smooth, slightly elliptical opacity centred on `centre` of `base`: (the region it covers, the
    opacity added there, its footprint (bool), its diameter in mm). Its profile is a sphere's path length,
    blurred at the edge; its peak is a fraction of the local lung contrast (interdecile range of `base`
    around it), so it is as faint as the texture around it allows."""
    diameter = rng.uniform(*DIAMETER_MM)
    radius = diameter / 2 / SPACING_MM
    ry, rx = radius * rng.uniform(0.85, 1.15), radius * rng.uniform(0.85, 1.15)
    half = int(math.ceil(1.6 * max(ry, rx))) + 2
    cy, cx = centre
    region = (slice(max(cy - half, 0), cy + half + 1), slice(max(cx - half, 0), cx + half + 1))
    grid = np.mgrid[region[0], region[1]].astype(np.float32)
    grid = grid[:, : base[region].shape[0], : base[region].shape[1]]
    d2 = ((grid[0] - cy) / ry) ** 2 + ((grid[1] - cx) / rx) ** 2
    profile = ndimage.gaussian_filter(np.sqrt(np.clip(1 - d2, 0, None)), max(1.0, 0.15 * radius))
    near = base[max(cy - 3 * half, 0) : cy + 3 * half + 1, max(cx - 3 * half, 0) : cx + 3 * half + 1]
    low, high = np.percentile(near, [10, 90])
    peak = rng.uniform(*CONTRAST) * float(high - low)
    return region, (peak * profile / profile.max()).astype(np.float32), d2 <= 1, diameter


class Samples(NamedTuple):
    """x (n, 1, SIZE, SIZE) [0, 1]; y (n,) 0/1 nodule; masks (n, SIZE, SIZE) bool (the nodule's footprint,
    empty without one); diameter_mm (n,) float64 (0 without a nodule)."""

    x: torch.Tensor
    y: torch.Tensor
    masks: torch.Tensor
    diameter_mm: np.ndarray


def synthesise(bases: list[np.ndarray], n: int, rng: np.random.Generator) -> Samples:
    """n samples from random crops of `bases` ((H, W) [0, 1], windowed as served), half of them with a
    nodule inserted in a lung field at the radiograph's resolution, then resized to SIZE as
    `models.preprocessing.prepare` resizes (antialiased bilinear)."""
    lungs = [lung_fields(base) for base in bases]
    xs, ys, masks, diameters = [], [], [], []
    for _ in range(n):
        k = int(rng.integers(len(bases)))
        base, lung = bases[k], lungs[k]
        side = int(min(base.shape) * rng.uniform(*CROP))
        top, left = int(rng.integers(base.shape[0] - side + 1)), int(rng.integers(base.shape[1] - side + 1))
        image = base[top : top + side, left : left + side].copy()
        footprint, diameter = np.zeros(image.shape, bool), 0.0
        label = int(rng.random() < 0.5)
        if label:
            rows, cols = np.nonzero(lung[top : top + side, left : left + side])
            if rows.size == 0:
                raise TrainingDataError("a crop of the radiograph holds no lung field")
            i = int(rng.integers(rows.size))
            region, opacity, inside, diameter = nodule(image, (int(rows[i]), int(cols[i])), rng)
            image[region] += opacity
            footprint[region] = inside
        x = resize(np.clip(image, 0, 1), "bilinear") ** rng.uniform(0.8, 1.25)
        x = x + rng.normal(0, 0.01, x.shape)
        xs.append(np.clip(x, 0, 1).astype(np.float32))
        ys.append(label)
        masks.append(resize(footprint.astype(np.float32), "area") > 0)
        diameters.append(diameter)
    x_all, masks_all = torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(masks))
    return Samples(x_all, torch.tensor(ys), masks_all, np.array(diameters))


def resize(image: np.ndarray, mode: str) -> np.ndarray:
    """(h, w) -> (SIZE, SIZE): "bilinear" antialiased as `prepare` does; "area" for footprints (> 0: any
    nodule pixel, so a 5-mm nodule keeps its mask at SIZE)."""
    t = torch.tensor(image, dtype=torch.float32)[None, None]
    if mode == "area":
        return F.interpolate(t, size=(SIZE, SIZE), mode="area")[0, 0].numpy()
    return F.interpolate(t, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()


def heldout_set(n: int = 40, *, folder: Path = DATA) -> list[tuple[np.ndarray, dict[str, np.ndarray], str]]:
    """Held-out synthetic samples for the localisation of explanations: (image (SIZE, SIZE) float32 [0, 1],
    already windowed, {"nodule": (SIZE, SIZE) bool}, name), from the test radiograph only; the first `n` of
    the test set (about half carry a nodule, whose mask is empty otherwise)."""
    x, y, masks, _ = synthesise([load_radiograph(folder / TEST_FILE)], n, np.random.default_rng(TEST_SEED))
    return [
        (x[i, 0].numpy(), {"nodule": masks[i].numpy()}, f"cxr-synthetic-{i:03d}-{'nodule' if y[i] else 'none'}")
        for i in range(n)
    ]


def test_set(folder: Path = DATA, n: int = N_TEST) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out synthetic test set, x (n, 1, SIZE, SIZE) [0, 1] and y (n,), as the card's metrics use."""
    x, y, _, _ = test_samples(folder, n)
    return x, y


def test_samples(folder: Path = DATA, n: int = N_TEST) -> Samples:
    """The held-out synthetic test set with its masks and nodule diameters (see `Samples`)."""
    return synthesise([load_radiograph(folder / TEST_FILE)], n, np.random.default_rng(TEST_SEED))


def run(
    *, out_dir: Path | None, data: Path | None, seed: int, epochs: int | None = None, limit: int | None = None
) -> str:
    """Train, evaluate and write the model folder; returns a text report (see `models.training.run_recipe`)."""
    folder_data = Path(data) if data is not None else DATA
    bases = [load_radiograph(folder_data / name) for name in TRAIN_FILES]
    folder = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parent.parent / "zoo" / NAME
    val = synthesise(bases, limit or N_VAL, np.random.default_rng(VAL_SEED))
    test = test_samples(folder_data, limit or N_TEST)
    mean, std = [round(float(val.x.mean()), 4)], [round(float(val.x.std()), 4)]
    with common.deterministic_cpu(seed):
        torch.set_num_threads(THREADS)  # deterministic_cpu gives the caller's thread count back on exit
        started = time.perf_counter()
        model, best_epoch, val_scores = _train(bases, val, mean, std, epochs or EPOCHS, limit or TRAIN_SAMPLES, seed)
        seconds = time.perf_counter() - started
        training = {
            "epochs": epochs or EPOCHS,
            "selected_epoch": best_epoch,
            "seconds": round(seconds, 1),
            "train_samples": limit or TRAIN_SAMPLES,
        }
        card = _evaluate_and_write(model, val, test, mean, std, folder, seed, {**training, "val": val_scores})
    m = card.metrics
    by_size = "  ".join(f"{k} mm {v['auc']}" for k, v in m["auc_by_diameter_mm"].items())
    return "\n".join(
        [
            f"trained {card.name} {card.version} -> {card.folder} in {seconds:.0f} s on {THREADS} CPU thread "
            f"(epoch {best_epoch} selected on val)",
            f"synthetic test (n={m['n']}, radiograph {TEST_FILE}): AUC {m['auc']:.3f}  ACC {m['accuracy']:.3f}  "
            f"ECE {m['ece_uncalibrated']:.3f} -> {m['ece_calibrated']:.3f}",
            f"AUC by nodule diameter (vs all negatives): {by_size}",
            f"T = {card.calibration_temperature:.3f}; referral threshold {card.uncertainty_threshold:.3f}",
        ]
    )


def training_patches(
    x: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, PATCH, PATCH) crops of (N, 1, SIZE, SIZE) samples and of their (N, SIZE, SIZE) masks, each crop
    holding its nodule (if any) whole, at a random place: the network is fully convolutional with global max
    pooling, so it is trained on patches and applied to the whole SIZE x SIZE image."""
    crops, mask_crops = [], []
    for i in range(x.shape[0]):
        rows, cols = np.nonzero(masks[i].numpy())
        if rows.size:
            top = int(rng.integers(max(0, rows.max() - PATCH + 1), min(rows.min(), SIZE - PATCH) + 1))
            left = int(rng.integers(max(0, cols.max() - PATCH + 1), min(cols.min(), SIZE - PATCH) + 1))
        else:
            top, left = int(rng.integers(SIZE - PATCH + 1)), int(rng.integers(SIZE - PATCH + 1))
        crops.append(x[i, :, top : top + PATCH, left : left + PATCH])
        mask_crops.append(masks[i, top : top + PATCH, left : left + PATCH])
    return torch.stack(crops), torch.stack(mask_crops)


def nodule_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the image label, plus MASK_WEIGHT times the binary cross-entropy of the class
    activation map (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016): the
    classifier's nodule-minus-none weights applied at every cell of the last feature map, against "the cell
    holds part of the nodule" from the known mask. The masks are what the synthetic task gives for free;
    with the image label alone the network stayed near chance within the CPU budget.

    Args:
        x: (N, 1, h, w) normalised; y: (N,) 0/1; masks: (N, h, w) bool.
    """
    classifier = model.get_submodule("head.classifier")
    if not isinstance(classifier, torch.nn.Linear):
        raise TypeError(f"{ARCH} must end in head.classifier (nn.Linear) for the activation-map loss")
    features = model.get_submodule("features")(x)
    loss = F.cross_entropy(model.get_submodule("head")(features), y)
    weight, bias = classifier.weight, classifier.bias
    cam = torch.einsum("nchw,c->nhw", features, weight[1] - weight[0]) + (bias[1] - bias[0])
    cells = F.adaptive_max_pool2d(masks[:, None].float(), tuple(features.shape[-2:]))[:, 0]
    positive = torch.tensor(MASK_POS_WEIGHT)
    return loss + MASK_WEIGHT * F.binary_cross_entropy_with_logits(cam, cells, pos_weight=positive)


def _val_scores(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    probs = torch.softmax(common.logits_of(model, x, 100), 1).numpy()
    return {
        "auc": evaluation.binary_auc(probs[:, 1], y.numpy() == 1),
        "accuracy": evaluation.accuracy(probs, y.numpy()),
        "nll": evaluation.negative_log_likelihood(probs, y.numpy()),
    }


def _train(
    bases: list[np.ndarray], val: Samples, mean: list[float], std: list[float], epochs: int, samples: int, seed: int
) -> tuple[torch.nn.Module, int, dict[str, Any]]:
    """Synthesise `samples` training images once; each epoch takes one random patch of each (and random
    flips); the epoch with the best val AUC (whole images) is kept."""
    model = build_network(ARCH, **NETWORK)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    train = synthesise(bases, samples, rng)
    x_train, x_val = common.normalise(train.x, mean, std), common.normalise(val.x, mean, std)
    steps = epochs * math.ceil(samples / BATCH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps, pct_start=0.15)
    best: tuple[float, ...] = (-math.inf,)
    best_epoch, best_state, best_scores = 0, None, {}
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in torch.randperm(samples, generator=generator).split(BATCH):
            x, masks = training_patches(x_train[batch], train.masks[batch], rng)
            flipped = common.random_flips(torch.cat([x, masks[:, None].to(x.dtype)], 1), generator)
            loss = nodule_loss(model, flipped[:, :1], train.y[batch], flipped[:, 1] > 0.5)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        scores = _val_scores(model, x_val, val.y)
        logger.info("epoch %d/%d val auc %.4f acc %.3f nll %.3f", epoch, epochs, *scores.values())
        key = (round(scores["auc"], 6), -scores["nll"])
        if best_state is None or key > best:  # a tiny val split (limit) may have one class: AUC NaN
            best, best_epoch, best_scores = key, epoch, {k: round(v, 6) for k, v in scores.items()}
            best_state = copy.deepcopy(model.state_dict())
    assert best_state is not None  # the first epoch sets it
    model.load_state_dict(best_state)
    return model.eval(), best_epoch, best_scores


def auc_by_diameter(scores: np.ndarray, samples: Samples) -> dict[str, dict[str, float | int]]:
    """AUC of the nodule `scores` (N,) for the positives of each diameter band against all negatives, with
    the number of positives; bands without positives are left out."""
    labels = samples.y.numpy() == 1
    bands = {}
    for low, high in DIAMETER_BANDS:
        inside = labels & (samples.diameter_mm >= low) & (samples.diameter_mm < high)
        if inside.any() and (~labels).any():
            auc = evaluation.binary_auc(scores[inside | ~labels], inside[inside | ~labels])
            bands[f"{low:g}-{high:g}"] = {"auc": round(auc, 6), "n_nodules": int(inside.sum())}
    return bands


def summary(auc: float) -> str:
    """The card's sentence for clinicians (`ModelCard.summary`)."""
    return (
        "Demonstration only: trained on synthetic nodules pasted into one NIH chest radiograph, never on real "
        f"findings; AUROC {auc:.2f} on synthetic nodules in a second radiograph, unknown on real ones; not run on "
        "incoming studies (cxr-nih14 reads chest radiographs); not for clinical use."
    )


def _evaluate_and_write(
    model: torch.nn.Module,
    val: Samples,
    test: Samples,
    mean: list[float],
    std: list[float],
    folder: Path,
    seed: int,
    training: dict[str, Any],
) -> ModelCard:
    x_val, x_test = common.normalise(val.x, mean, std), common.normalise(test.x, mean, std)
    temperature = fit_temperature(common.logits_of(model, x_val, 100), val.y)
    logits = common.logits_of(model, x_test, 100)
    raw, scaled = torch.softmax(logits, 1).numpy(), torch.softmax(logits / temperature, 1).numpy()
    labels = test.y.numpy()
    metrics: dict[str, Any] = {
        "dataset": f"SYNTHETIC nodules in the held-out NIH radiograph {TEST_FILE} (seed {TEST_SEED})",
        "split": "test (synthetic, held-out radiograph)",
        "n": int(labels.size),
        "n_nodules": int(labels.sum()),
        "auc": round(evaluation.binary_auc(raw[:, 1], labels == 1), 6),
        "accuracy": round(evaluation.accuracy(raw, labels), 6),
        "ece_uncalibrated": round(evaluation.expected_calibration_error(raw, labels), 6),
        "ece_calibrated": round(evaluation.expected_calibration_error(scaled, labels), 6),
        "nll_uncalibrated": round(evaluation.negative_log_likelihood(raw, labels), 6),
        "nll_calibrated": round(evaluation.negative_log_likelihood(scaled, labels), 6),
        "auc_by_diameter_mm": auc_by_diameter(raw[:, 1], test),
        "selected_on": "val (synthetic, training radiograph, other samples)",
        "temperature_fitted_on": "val",
    }
    card = ModelCard(
        # Synthetic nodules only: listed with its metrics and run on request, never on incoming studies.
        serve_automatically=False,
        name=NAME,
        version="2.0.0",
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
        target_layer="features.stage3",
        weights="weights.pt",
        weights_sha256="0" * 64,
        metrics=metrics,
        folder=folder,
        training_data="SYNTHETIC nodules (5-30 mm, contrast a fraction of the local lung contrast) inserted "
        "into the lung fields of one real radiograph, NIH ChestX-ray14 00000001_000.png (NIH Clinical Center, "
        "no use restrictions; Wang et al., CVPR 2017)",
        licence="weights: a demonstration shipped with Lumen; derived from NIH ChestX-ray14 (no use "
        "restrictions; cite Wang et al., CVPR 2017)",
        intended_use=INTENDED_USE,
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
        summary=summary(metrics["auc"]),
        training={
            "recipe": NAME,
            "seed": seed,
            **training,
            "threads": THREADS,
            "torch": torch.__version__,
            "patch": PATCH,
            "mask_loss_weight": MASK_WEIGHT,
            "radiographs": {"train_val": list(TRAIN_FILES), "test": TEST_FILE},
        },
    )
    return common.write_folder(card, model, curves)
