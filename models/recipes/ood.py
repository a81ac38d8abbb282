"""Fit the input-domain gate (`models.ood`) of a reference model folder: `lumen fit-ood MODEL_DIR`.

The in-domain images come from the recipe that trained the model (the card's `training.recipe`), with the
recipe's own splits, read from data/ in the repository: the gate is fitted on training images, its threshold
set on validation images, its false rejection measured on the test split. Foreign sets (other modalities and
body parts) are decoded by the caller (the CLI decodes them with the product's own loaders) and only measured.

- "dr-grading-retinamnist": RetinaMNIST train (1080, with their DR grades as classes) / val (120) / test (400).
- "fundus-lesions-idrid": IDRiD 01-12 / 13-16 / 17-24 and 55 as whole photographs, as the product serves them
  (the network was trained on patches; the gate sees what the worker gives it). Twelve training images are
  few: each is also taken with its 8 flips and transposes (the recipe's own augmentation), which the
  network's task is invariant to.
- "cxr-demo": synthetic samples of the recipe: the first TRAIN_SAMPLES of its training draw and its val set,
  from radiograph 00000001_000.png; its test set from the held-out 00027426_000.png.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import ood
from models.card import DomainSpec, ModelCard, OodSpec, load_card, write_card
from models.datasets import IDRID_HELDOUT, load_idrid, load_medmnist
from models.recipes import common
from models.registry import load_model

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CXR_TRAIN_SAMPLES = 1000


@dataclass(frozen=True)
class DomainSets:
    """A model's in-domain images by split (as decoded, prepared by `models.ood` as served), the class of
    each training image (None: one mean), what they are, and the card's `domain` block."""

    train: Sequence[ood.ImageLike]
    val: Sequence[ood.ImageLike]
    test: Sequence[ood.ImageLike]
    train_classes: np.ndarray | None
    fitted_on: str
    domain: DomainSpec | None  # None: the card's own `domain` block is kept


def _retinamnist(card: ModelCard) -> DomainSets:
    splits = load_medmnist(ROOT / "data" / "retinamnist.npz", num_classes=card.num_classes)
    return DomainSets(
        train=list(splits["train"].images),
        val=list(splits["val"].images),
        test=list(splits["test"].images),
        train_classes=splits["train"].labels,
        fitted_on="RetinaMNIST train (1080 images, class means per DR grade); threshold on val (120); "
        "false rejection on test (400)",
        domain=DomainSpec(body_part="eye fundus", body_parts=["EYE"], photometric="colour fundus photograph (RGB)"),
    )


def _dihedral(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and transposes of an (H, W, C) image."""
    turns = [np.rot90(image, k) for k in range(4)]
    return [np.ascontiguousarray(v) for t in turns for v in (t, t[:, ::-1])]


def _idrid(card: ModelCard) -> DomainSets:
    from models.recipes import idrid

    train = [view for item in load_idrid(idrid.TRAIN) for view in _dihedral(item.image)]
    return DomainSets(
        train=train,
        val=[view for item in load_idrid(idrid.VAL) for view in _dihedral(item.image)],
        test=[item.image for item in load_idrid(IDRID_HELDOUT)],
        train_classes=None,
        fitted_on="IDRiD 01-12 whole photographs, each with its 8 flips and transposes (96 views); threshold on "
        "13-16 (32 views); false rejection on the held-out 17-24 and 55 (9 photographs, as served)",
        domain=DomainSpec(body_part="eye fundus", body_parts=["EYE"], photometric="colour fundus photograph (RGB)"),
    )


def _cxr(card: ModelCard) -> DomainSets:
    from models.recipes import cxr

    bases = [cxr.load_radiograph(cxr.DATA / name) for name in cxr.TRAIN_FILES]
    # The recipe draws its training samples from a generator seeded with the training seed, one after another:
    # the first CXR_TRAIN_SAMPLES of that draw are the first of its training set.
    seed = int(card.training.get("seed", 0))
    train = cxr.synthesise(bases, CXR_TRAIN_SAMPLES, np.random.default_rng(seed))
    val = cxr.synthesise(bases, cxr.N_VAL, np.random.default_rng(cxr.VAL_SEED))
    test = cxr.test_samples()
    return DomainSets(
        train=[x[0].numpy() for x in train.x],
        val=[x[0].numpy() for x in val.x],
        test=[x[0].numpy() for x in test.x],
        train_classes=train.y.numpy(),
        fitted_on=f"the first {CXR_TRAIN_SAMPLES} synthetic training samples of radiograph 00000001_000.png (class "
        f"means per label); threshold on its val samples ({cxr.N_VAL}); false rejection on the test samples of "
        f"the held-out 00027426_000.png ({cxr.N_TEST})",
        domain=DomainSpec(
            body_part="chest", body_parts=["CHEST"], view="frontal (PA/AP)",
            photometric="grayscale radiograph, MONOCHROME2 after inversion",
        ),
    )


def _cxr_nih(card: ModelCard) -> DomainSets:
    from models.recipes import cxr_nih  # reads ../shared/data/nih-cxr14-621 (its train split is not in data/)

    sets: DomainSets = cxr_nih.domain_sets(card)
    return sets


SETS: dict[str, Callable[[ModelCard], DomainSets]] = {
    "dr-grading-retinamnist": _retinamnist,
    "fundus-lesions-idrid": _idrid,
    "cxr-demo": _cxr,
    "cxr-nih14": _cxr_nih,
}


def domain_sets(card: ModelCard) -> DomainSets:
    """The in-domain sets of the recipe that trained `card`'s model. Raises ValueError for another recipe."""
    recipe = str(card.training.get("recipe", ""))
    if recipe not in SETS:
        raise ValueError(
            f"model {card.name!r}: no in-domain sets known for recipe {recipe!r} (known: {sorted(SETS)}); "
            "call models.ood.fit_gate with the model's own training and validation images"
        )
    return SETS[recipe](card)


def fit_folder(
    folder: Path,
    *,
    foreign: Mapping[str, Iterable[ood.ImageLike] | ood.Embedded] | None = None,
    target_false_rejection: float = ood.DEFAULT_TARGET_FALSE_REJECTION,
) -> str:
    """Fit, measure and save the gate of a reference model folder: writes ood.npz and the card's `domain` and
    `ood` blocks (the weights are untouched); returns a text report."""
    card = load_card(folder)
    model = load_model(card)
    sets = domain_sets(card)
    with common.deterministic_cpu(0):
        fitted = ood.fit_gate(
            model,
            card,
            sets.train,
            sets.val,
            train_classes=sets.train_classes,
            test_images=sets.test,
            foreign=foreign,
            target_false_rejection=target_false_rejection,
        )
    card = write_gate(card, fitted, fitted_on=sets.fitted_on, domain=sets.domain)
    return report_lines(card)


def write_gate(card: ModelCard, fitted: ood.FittedGate, *, fitted_on: str, domain: DomainSpec | None) -> ModelCard:
    """Save the gate next to the weights and write the card's `ood` (and `domain`) block; the new card."""
    sha256 = ood.save_gate(fitted.gate, card.folder / ood.GATE_FILE)
    report = fitted.report
    spec = OodSpec(
        method=fitted.gate.method,
        citation=report["citation"],
        file=ood.GATE_FILE,
        sha256=sha256,
        threshold=report["threshold"],
        target_false_rejection=report["target_false_rejection"],
        false_rejection=report["false_rejection"],
        foreign=report["foreign"],
        comparison={**report["comparison"], "kept_because": _why(report)},
        fitted_on=fitted_on,
    )
    card = dataclasses.replace(card, ood=spec, domain=domain or card.domain)
    write_card(card)
    ood.load_gate(load_card(card.folder))  # the folder loads, and the file matches the card
    return card


def _why(report: dict[str, Any]) -> str:
    others = report["comparison"]
    if not others or not report["foreign"]:
        return "the only method measured" if not others else "no foreign sets: the first method"
    rivals = ", ".join(f"{m} {v['selection_auroc']:.3f}" for m, v in others.items())
    return (
        f"higher mean AUROC of the foreign sets against the in-domain val images: {report['method']} "
        f"{report['selection_auroc']:.3f} vs {rivals}"
    )


def report_lines(card: ModelCard) -> str:
    """The card's gate in a few lines."""
    spec = card.ood
    if spec is None:
        return f"{card.name}: no input-domain gate"
    lines = [
        f"{card.name} {card.version}: {spec.method} gate, threshold {spec.threshold:.6g} "
        f"(target false rejection {spec.target_false_rejection:.0%} on val)",
        "false rejection: "
        + ", ".join(f"{split} {r['rate']:.1%} of {r['n']}" for split, r in spec.false_rejection.items()),
    ]
    for name, result in spec.foreign.items():
        lines.append(f"  {name}: AUROC {result['auroc']:.3f}, rejected {result['rejected']:.1%} of {result['n']}")
    lines.append(f"kept: {spec.comparison.get('kept_because', '')}")
    return "\n".join(lines)


def as_images(items: Iterable[tuple[np.ndarray, str, Any]]) -> Iterator[ood.Image]:
    """(pixels, photometric, VOI) triples as `models.ood.Image`s, one at a time (decoded lazily by the caller)."""
    return (ood.Image(pixels, photometric, voi) for pixels, photometric, voi in items)


__all__ = ["SETS", "DomainSets", "as_images", "domain_sets", "fit_folder", "report_lines", "write_gate"]
