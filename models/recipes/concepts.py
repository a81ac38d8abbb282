"""Concept banks (`models.concepts`) for the served models, learnt from real concept examples.

Fundus (`dr-grading-retinamnist`, `fundus-lesions-idrid`): concepts hard exudates, haemorrhages, microaneurysms,
soft exudates and optic disc from the IDRiD lesion masks (Porwal et al., IEEE DataPort 2018; CC BY 4.0) as
`models.recipes.idrid_data` prepares them in data/idrid (the shared cropped photographs with their colour masks
aligned by crop_offsets.json and the drawn optic-disc contour inpainted, ~1024 px wide). Concept examples are
PATCH-px patches centred on a random pixel of the concept's mask, random examples patches at random places, both
at least FUNDUS_FRACTION inside the fundus; CAVs from images 01-16 only, held-out accuracy on 17-24 and 55 (55:
hard exudates only) with as many random patches as concept patches from each image. A regression concept
vector predicts the hard-exudate area fraction of a patch. Patches go through the served preprocessing (no
fundus crop: they lie inside the fundus).

- dr-grading-retinamnist sees a whole fundus at 28 px; its patches are resized to 28 px. IDRiD's camera is
  not RetinaMNIST's (the model's input gate refuses most IDRiD photographs), so each IDRiD photograph is first
  brought to RetinaMNIST's fundus colour statistics (per-channel mean and std inside the fundus). Without it,
  CAVs fitted on 01-12 (this layer and patch size, C 0.01-1) put most patches of 13-16 on one side: balanced
  accuracy 0.50-0.65 for hard exudates, 0.50 for haemorrhages, 0.51-0.55 for the optic disc, at AUCs of
  0.74-0.82 (the threshold did not carry over between photographs); with it 0.60-0.70, 0.62-0.68 and 0.95.
  Class inputs: RetinaMNIST train.
- fundus-lesions-idrid was trained on 128-px patches of 512-px photographs: the patches are shown at that
  scale (PATCH px at 1024 -> 128 px). Each photograph is brought to the fundus colour statistics of 01-16: the
  camera is the same, but CAVs fitted on 01-12 scored 0.50 (hard exudates), 0.50-0.60 (haemorrhages) and
  0.52-0.58 (optic disc) on 13-16 without it, 0.62-0.65, 0.63-0.65 and 0.95-0.97 with it. Class inputs:
  photographs 01-16 whole at 512 px with their 8 flips and transposes, each under every lesion class it shows.

Chest (`cxr-nih14`): concepts are the NIH findings with >= MIN_POSITIVES train positives: train radiographs with
the finding vs random train radiographs without it; held-out accuracy on the test split (its positives vs as
many random negatives). Class inputs: train radiographs positive for the class.

TCAV significance: `models.concepts.tcav_significance`, R = RUNS runs, each on a disjoint part of the concept
examples (Kim et al. reuse the whole set in every run, which made the t-test call 54 of 100 random concepts
significant on synthetic data), Bonferroni over every (concept, class) of the model.

Layer: the card's target layer feeds global pooling and a linear classifier, whose gradient summed over
positions is the same for every image (avg pool: W_k / positions; max pool: W_k at the argmax), so every image
would get the same sensitivity. The bank uses the layer before the last block (`LAYERS`), from which the logit
is reached through a nonlinear block.

Run: `python -m models.recipes.concepts [--model NAME]` (all models by default); writes concepts.npz and
concepts.json into the model's zoo folder and a "concepts" summary into its evaluation.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import GroupKFold

from models.card import ModelCard, load_card
from models.concepts import (
    ConceptBank,
    RegressionConceptVector,
    fit_rcv,
    heldout_accuracy,
    pooled_activations,
    pooled_gradients,
    reference_quantiles,
    tcav_significance,
    train_cav,
)
from models.datasets import IDRID_HELDOUT, IDRID_TRAIN, load_idrid, load_medmnist
from models.preprocessing import prepare
from models.recipes import common
from models.registry import load_model

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "models" / "zoo"
RETINAMNIST = ROOT / "data" / "retinamnist.npz"
MODELS = ("dr-grading-retinamnist", "fundus-lesions-idrid", "cxr-nih14")
LAYERS = {
    "dr-grading-retinamnist": "features.transition2",
    "fundus-lesions-idrid": "features.stage3",
    "cxr-nih14": "features.stage3",
}
FUNDUS_CONCEPTS = ("hard_exudates", "haemorrhages", "microaneurysms", "soft_exudates", "optic_disc")
PATCH = 256  # px at ~1024 px wide: a quarter of the fundus; 160 px gave the same val accuracies
FUNDUS_FRACTION = 0.75
PER_IMAGE = 30  # concept patches per photograph and concept; also per random set and photograph
FUNDUS_LEVEL = 20
RUNS = 10  # R: concept-vs-random CAVs per concept, and as many random-vs-random CAVs
MIN_POSITIVES = 15
REGULARISATION = (0.01, 0.1, 1.0)  # logistic regression C, chosen per concept by cross-validation over images
SEED = 0


@dataclasses.dataclass(frozen=True)
class ConceptSets:
    """Pooled activations of one concept: `concept` (N, D) and `negatives` (M, D) (for the shipped CAV) with
    their source images' ids; R + 1 `random_sets` for `tcav_significance`; held-out concept and random
    examples (equal numbers)."""

    concept: np.ndarray
    concept_groups: np.ndarray
    negatives: np.ndarray
    negative_groups: np.ndarray
    random_sets: list[np.ndarray]
    heldout_concept: np.ndarray
    heldout_random: np.ndarray


def choose_regularisation(sets: ConceptSets, seed: int) -> float:
    """The C of REGULARISATION with the best balanced accuracy over 4 folds grouped by source image."""
    x = np.vstack([sets.concept, sets.negatives])
    y = np.r_[np.ones(len(sets.concept)), np.zeros(len(sets.negatives))]
    groups = np.r_[sets.concept_groups, sets.negative_groups]
    folds = list(GroupKFold(n_splits=4).split(x, y, groups))

    def score(c: float) -> float:
        accuracies = []
        for train, test in folds:
            cav = train_cav(x[train][y[train] == 1], x[train][y[train] == 0], seed, regularisation=c)
            called = x[test] @ cav.vector > cav.threshold
            accuracies.append(0.5 * (called[y[test] == 1].mean() + (~called[y[test] == 0]).mean()))
        return float(np.mean(accuracies))

    return max(REGULARISATION, key=score)


def build_bank(
    card: ModelCard,
    layer: str,
    concepts: Mapping[str, ConceptSets],
    class_grads: Mapping[str, np.ndarray],
    *,
    rcvs: list[RegressionConceptVector],
    info: dict[str, Any],
    seed: int,
) -> ConceptBank:
    """Shipped CAV per concept (vs all its random examples), its held-out accuracy, TCAV per class with the
    significance test (Bonferroni over every (concept, class)), and the reference quantiles of the shipped
    CAV's sensitivity over each class's inputs."""
    vectors, thresholds, accuracy, tcav, quantiles, chosen = [], [], {}, {}, {}, {}
    for name, sets in concepts.items():
        c = choose_regularisation(sets, seed)
        cav = train_cav(sets.concept, sets.negatives, seed, regularisation=c)
        vectors.append(cav.vector)
        thresholds.append(cav.threshold)
        accuracy[name] = heldout_accuracy(cav, sets.heldout_concept, sets.heldout_random)
        tcav[name] = tcav_significance(
            sets.concept,
            sets.random_sets,
            class_grads,
            seed=seed,
            regularisation=c,
            comparisons=len(concepts) * len(class_grads),
        )
        quantiles[name] = {cls: reference_quantiles(grads @ cav.vector) for cls, grads in class_grads.items()}
        chosen[name] = c
        logger.info(
            "%s: C %s, held-out accuracy %.3f (n %d, p %.2g)",
            name,
            c,
            accuracy[name].accuracy,
            accuracy[name].n,
            accuracy[name].p_value,
        )
    return ConceptBank(
        model=card.name,
        layer=layer,
        classes=list(class_grads),
        concepts=list(concepts),
        vectors=np.stack(vectors),
        thresholds=np.array(thresholds),
        accuracy=accuracy,
        tcav=tcav,
        quantiles=quantiles,
        rcvs=rcvs,
        info={**info, "regularisation_c": chosen, "random_runs": RUNS, "seed": seed},
    )


# Fundus -------------------------------------------------------------------------------------------------------

Window = tuple[int, int]  # (top, left) of a PATCH x PATCH window


def fundus_colour(images: list[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (0-255) of the fundus pixels of (H, W, 3) uint8 photographs."""
    pixels = np.concatenate([np.asarray(image).reshape(-1, 3) for image in images]).astype(np.float64)
    pixels = pixels[pixels.max(axis=1) > FUNDUS_LEVEL]
    return pixels.mean(0), pixels.std(0)


def match_colour(image: np.ndarray, target: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(H, W, 3) uint8 with its fundus pixels' per-channel mean and std moved to `target`'s; background black."""
    fundus = image.max(axis=2) > FUNDUS_LEVEL
    pixels = image[fundus].astype(np.float64)
    out = (image.astype(np.float64) - pixels.mean(0)) / pixels.std(0) * target[1] + target[0]
    out[~fundus] = 0
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def colour_target(card: ModelCard) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """The fundus colour statistics the model's patches are matched to, and where they come from."""
    if card.name == "fundus-lesions-idrid":
        return fundus_colour([item.image for item in load_idrid(IDRID_TRAIN)]), "IDRiD 01-16, fundus pixels"
    images = load_medmnist(RETINAMNIST, num_classes=5)["train"].images
    return fundus_colour(images), "RetinaMNIST train, fundus pixels"


def patch_input(card: ModelCard) -> Callable[[np.ndarray], torch.Tensor]:
    """(PATCH, PATCH, 3) uint8 -> (1, 3, h, w): the served `prepare` without the fundus crop, at the card's size
    (the lesion model: at the size its training patches had, see the module's docstring)."""
    size = card.input.size
    if card.name == "fundus-lesions-idrid":
        from models.recipes.idrid import PATCH as TRAINED_PATCH

        size = (TRAINED_PATCH, TRAINED_PATCH)
    patch_card = dataclasses.replace(card, input=dataclasses.replace(card.input, crop=None, size=size))
    return lambda patch: prepare(patch, patch_card)


@dataclasses.dataclass(frozen=True)
class FundusPatches:
    """Patches of several photographs: `x` (N, 3, h, w) prepared inputs, `group` (N,) photograph index, and
    `exudate` (N,) the hard-exudate area fraction of each patch (nan where not annotated)."""

    x: torch.Tensor
    group: np.ndarray
    exudate: np.ndarray


class Photographs:
    """IDRiD photographs recoloured to a model's colour target, cut into PATCH windows for its input."""

    def __init__(
        self,
        names: tuple[str, ...],
        colour: tuple[np.ndarray, np.ndarray],
        to_input: Callable[[np.ndarray], torch.Tensor],
    ) -> None:
        self.items = load_idrid(names)
        self.images = [match_colour(item.image, colour) for item in self.items]
        self.fundus = [item.image.max(axis=2) > FUNDUS_LEVEL for item in self.items]
        self.to_input = to_input

    def windows(self, index: int, mask: np.ndarray, n: int, rng: np.random.Generator) -> list[Window]:
        """Up to n windows of photograph `index` centred on random pixels of `mask`, FUNDUS_FRACTION inside."""
        rows, cols = np.nonzero(mask)
        fundus = self.fundus[index]
        height, width = fundus.shape
        found: list[Window] = []
        for _ in range(20 * n if rows.size else 0):
            if len(found) == n:
                break
            i = rng.integers(rows.size)
            top = int(np.clip(rows[i] - PATCH // 2, 0, height - PATCH))
            left = int(np.clip(cols[i] - PATCH // 2, 0, width - PATCH))
            if fundus[top : top + PATCH, left : left + PATCH].mean() >= FUNDUS_FRACTION:
                found.append((top, left))
        return found

    def concept(self, lesion: str, n: int, rng: np.random.Generator) -> list[list[Window]]:
        """Up to n windows per photograph centred in `lesion` (none where it was not annotated)."""
        return [
            self.windows(k, item.masks[lesion], n, rng) if lesion in item.annotated else []
            for k, item in enumerate(self.items)
        ]

    def random(self, counts: list[int], rng: np.random.Generator) -> list[list[Window]]:
        """counts[k] windows at random places inside the fundus of photograph k."""
        return [self.windows(k, self.fundus[k], n, rng) for k, n in enumerate(counts)]

    def patches(self, windows: list[list[Window]]) -> FundusPatches:
        xs, groups, exudate = [], [], []
        for k, (item, image, chosen) in enumerate(zip(self.items, self.images, windows, strict=True)):
            for top, left in chosen:
                xs.append(self.to_input(image[top : top + PATCH, left : left + PATCH]))
                groups.append(k)
                area = item.masks["hard_exudates"][top : top + PATCH, left : left + PATCH].mean()
                exudate.append(float(area) if "hard_exudates" in item.annotated else np.nan)
        return FundusPatches(torch.cat(xs), np.array(groups), np.array(exudate))

    def paired(self, lesion: str, rng: np.random.Generator) -> tuple[FundusPatches, FundusPatches]:
        """Patches centred in `lesion` and as many random patches from each photograph: chance is 0.5, and the
        photographs' own colour and quality cannot tell the two sets apart."""
        concept = self.concept(lesion, PER_IMAGE, rng)
        return self.patches(concept), self.patches(self.random([len(w) for w in concept], rng))


def fundus_concepts(
    model: torch.nn.Module, card: ModelCard, layer: str, seed: int
) -> tuple[dict[str, ConceptSets], list[RegressionConceptVector], dict[str, Any]]:
    """The fundus concept sets (01-16 train, 17-24 and 55 held out), the hard-exudate RCV, and provenance."""
    rng = np.random.default_rng(seed)
    colour, colour_source = colour_target(card)
    train = Photographs(IDRID_TRAIN, colour, patch_input(card))
    heldout = Photographs(IDRID_HELDOUT, colour, patch_input(card))

    def acts(patches: FundusPatches) -> np.ndarray:
        return pooled_activations(model, layer, patches.x)

    randoms = [train.patches(train.random([PER_IMAGE] * len(train.items), rng)) for _ in range(RUNS + 1)]
    random_acts = [acts(r) for r in randoms]
    concepts, rcvs = {}, []
    for name in FUNDUS_CONCEPTS:
        patches = train.patches(train.concept(name, PER_IMAGE, rng))
        held_concept, held_random = heldout.paired(name, rng)
        concept_acts, held_concept_acts, held_random_acts = acts(patches), acts(held_concept), acts(held_random)
        concepts[name] = ConceptSets(
            concept_acts,
            patches.group,
            np.vstack(random_acts),
            np.concatenate([r.group for r in randoms]),
            random_acts,
            held_concept_acts,
            held_random_acts,
        )
        if name == "hard_exudates":
            # Exudate-centred and random patches together, so that the area fraction spans 0 to its largest.
            rcv = fit_rcv(
                "hard_exudate_area",
                "fraction of the patch's pixels in the hard-exudate mask",
                np.vstack([concept_acts, random_acts[0]]),
                np.r_[patches.exudate, randoms[0].exudate],
                np.vstack([held_concept_acts, held_random_acts]),
                np.r_[held_concept.exudate, held_random.exudate],
                groups=np.r_[patches.group, randoms[0].group],
            )
            logger.info("RCV hard-exudate area: R2 train %.3f, held-out %.3f", rcv.r2_train, rcv.r2_heldout)
            rcvs.append(rcv)
    info = {
        "concept_data": "IDRiD lesion masks (Porwal et al. 2018, doi 10.21227/H25W98; CC BY 4.0), data/idrid",
        "train_images": list(IDRID_TRAIN),
        "heldout_images": list(IDRID_HELDOUT),
        "patch_px_at_1024": PATCH,
        "patches_per_image": PER_IMAGE,
        "fundus_fraction": FUNDUS_FRACTION,
        "colour_matched_to": colour_source,
        "random_examples": "patches at random places inside the fundus of 01-16",
    }
    return concepts, rcvs, info


def dr_bank(model: torch.nn.Module, card: ModelCard, seed: int) -> ConceptBank:
    layer = LAYERS[card.name]
    concepts, rcvs, info = fundus_concepts(model, card, layer, seed)
    split = load_medmnist(RETINAMNIST, num_classes=5)["train"]
    x = torch.cat([prepare(image, card) for image in split.images])
    grads = pooled_gradients(model, layer, x, torch.from_numpy(split.labels))
    class_grads = {label: grads[split.labels == k] for k, label in enumerate(card.labels)}
    info["class_inputs"] = "RetinaMNIST train images of each grade, prepared as served"
    return build_bank(card, layer, concepts, class_grads, rcvs=rcvs, info=info, seed=seed)


def lesion_model_bank(model: torch.nn.Module, card: ModelCard, seed: int) -> ConceptBank:
    from models.recipes.idrid import LESIONS

    layer = LAYERS[card.name]
    concepts, rcvs, info = fundus_concepts(model, card, layer, seed)
    class_grads: dict[str, list[np.ndarray]] = {label: [] for label in card.labels}
    for item in load_idrid(IDRID_TRAIN):
        x = prepare(item.image, card)
        views = torch.cat([v for t in (x, x.transpose(2, 3)) for v in (t, t.flip(2), t.flip(3), t.flip(2).flip(3))])
        for k, (label, lesion) in enumerate(zip(card.labels, LESIONS, strict=True)):
            if item.masks[lesion].any():
                class_grads[label].append(pooled_gradients(model, layer, views, torch.full((8,), k)))
    info["class_inputs"] = "IDRiD 01-16 whole photographs (8 flips/transposes each) showing the lesion, as served"
    grads = {label: np.vstack(parts) for label, parts in class_grads.items()}
    return build_bank(card, layer, concepts, grads, rcvs=rcvs, info=info, seed=seed)


# Chest --------------------------------------------------------------------------------------------------------


def chest_bank(model: torch.nn.Module, card: ModelCard, seed: int) -> ConceptBank:
    from models.recipes.cxr_nih import DATA, FINDINGS, load_split, read_labels

    layer = LAYERS[card.name]
    rows = read_labels(DATA)
    train, test = load_split(DATA, rows, "train"), load_split(DATA, rows, "test")
    mean, std = list(card.input.mean), list(card.input.std)
    acts_train = pooled_activations(model, layer, common.normalise(train.x, mean, std))
    acts_test = pooled_activations(model, layer, common.normalise(test.x, mean, std))
    rng = np.random.default_rng(seed)
    concepts = {}
    for k, finding in enumerate(FINDINGS):
        positive, test_positive = train.y[:, k].numpy() > 0.5, test.y[:, k].numpy() > 0.5
        if positive.sum() < MIN_POSITIVES:
            continue
        pool, n = np.flatnonzero(~positive), int(positive.sum())
        # Set 0 (the nulls' pseudo-concept) apart from the negatives of the runs, each as large as the concept.
        null_concept = rng.choice(pool, size=n, replace=False)
        rest = np.setdiff1d(pool, null_concept)
        sets = [null_concept] + [rng.choice(rest, size=n, replace=False) for _ in range(RUNS)]
        test_negatives = rng.choice(np.flatnonzero(~test_positive), size=int(test_positive.sum()), replace=False)
        concepts[finding] = ConceptSets(
            acts_train[positive],
            np.flatnonzero(positive),
            acts_train[pool],
            pool,
            [acts_train[s] for s in sets],
            acts_test[test_positive],
            acts_test[test_negatives],
        )
    x = common.normalise(train.x, mean, std)
    class_grads = {}
    for k, label in enumerate(card.labels):
        column = [f.lower() for f in FINDINGS].index(label)
        chosen = train.y[:, column] > 0.5
        class_grads[label] = pooled_gradients(model, layer, x[chosen], torch.full((int(chosen.sum()),), k))
    info = {
        "concept_data": "nih-cxr14-621 (NIH ChestX-ray14, Wang et al. CVPR 2017): train split for CAVs, test split "
        "for held-out accuracy (positives vs as many random negatives)",
        "random_examples": "random train radiographs without the finding, as many as its positives",
        "min_train_positives": MIN_POSITIVES,
        "class_inputs": "train radiographs positive for the class, prepared as served",
    }
    return build_bank(card, layer, concepts, class_grads, rcvs=[], info=info, seed=seed)


# Writing ------------------------------------------------------------------------------------------------------

BUILDERS = {"dr-grading-retinamnist": dr_bank, "fundus-lesions-idrid": lesion_model_bank, "cxr-nih14": chest_bank}


def summary(bank: ConceptBank) -> dict[str, Any]:
    """The "concepts" block of evaluation.json."""
    return {
        "files": ["concepts.npz", "concepts.json"],
        "layer": bank.layer,
        "method": "TCAV (Kim et al., ICML 2018): R = 10 runs on disjoint parts of the concept examples vs "
        "random-vs-random runs, Welch t-test, Bonferroni over every (concept, class); RCV (Graziani et al., "
        "iMIMIC 2018)",
        "heldout_accuracy": {
            k: {"accuracy": round(v.accuracy, 4), "n": v.n, "p": float(f"{v.p_value:.3g}")}
            for k, v in bank.accuracy.items()
        },
        "tcav_significant": {
            cls: {
                k: {
                    "score": round(bank.tcav[k][cls].score_mean, 3),
                    "p_corrected": float(f"{bank.tcav[k][cls].p_corrected:.3g}"),
                }
                for k in bank.concepts
                if bank.tcav[k][cls].significant
            }
            for cls in bank.classes
        },
        "rcv_r2_heldout": {r.name: round(r.r2_heldout, 4) for r in bank.rcvs},
    }


def run(name: str, seed: int = SEED) -> ConceptBank:
    """Build and write the bank of model `name`; add its summary to the model's evaluation.json."""
    folder = ZOO / name
    card = load_card(folder)
    model = load_model(card)
    with common.deterministic_cpu(seed):
        started = time.perf_counter()
        bank = BUILDERS[name](model, card, seed)
        bank.info["seconds"] = round(time.perf_counter() - started, 1)
    bank.save(folder)
    path = folder / common.EVALUATION_FILE
    evaluation = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    evaluation["concepts"] = summary(bank)
    path.write_text(json.dumps(evaluation, indent=1) + "\n", encoding="utf-8")
    logger.info("%s: bank written in %.1f s: %s", name, bank.info["seconds"], json.dumps(summary(bank)))
    return bank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, action="append", help="default: every model")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    for name in args.model or MODELS:
        run(name, args.seed)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
