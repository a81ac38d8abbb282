"""Choose the radiographs of the demo reader study "Is there a pleural effusion?" and copy them into
data/nih_cxr14_demo (the product reads only that folder; this script alone reads ../shared).

From the test split of nih-cxr14-621 (labels.csv `split` == test, never trained, tuned or calibrated on), among
the radiographs that the input-domain gate of cxr-nih14 accepts as served (a refused image gets no prediction,
and a study whose case lacks the prediction its arms show cannot open): PER_CLASS labelled Effusion by NIH and
PER_CLASS not. Radiographs already shipped in the folder are kept first (at most PER_CLASS of a class, chosen
with SELECTION_SEED); the rest are drawn with the same generator from the other radiographs of the class. The
PNGs are copied unchanged, labels.csv gets their rows of nih-cxr14-621/labels.csv unchanged, and shipped PNGs
no longer chosen are removed. Running it again chooses the same radiographs.

    python -m models.recipes.cxr_nih_demo [../shared/data/nih-cxr14-621] [data/nih_cxr14_demo]
"""

from __future__ import annotations

import csv
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from models import ood
from models.card import load_card
from models.preprocessing import prepare
from models.recipes import cxr_nih
from models.registry import load_model

logger = logging.getLogger(__name__)

FINDING = "Effusion"  # the labels.csv column of the study's finding (cxr-nih14's label "effusion")
PER_CLASS = 12
SELECTION_SEED = 2017
TARGET = cxr_nih.ROOT / "data" / "nih_cxr14_demo"
MODEL = cxr_nih.ROOT / "models" / "zoo" / "cxr-nih14"


def accepted_by_gate(data: Path, rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows whose radiograph the cxr-nih14 gate accepts, each prepared as the worker prepares a PNG upload."""
    card = load_card(MODEL)
    gate = ood.load_gate(card)
    if gate is None:
        raise ValueError(f"{card.name} has no input-domain gate")
    model = load_model(card, "cpu").eval()
    device = torch.device("cpu")
    return [
        row for row in rows
        if gate.check(model, prepare(cxr_nih.read_radiograph(data / row["file"]), card, device=device))[0].in_domain
    ]


def choose(candidates: list[dict[str, str]], shipped: set[str], rng: np.random.Generator) -> list[dict[str, str]]:
    """PER_CLASS rows of one class: the shipped ones first, then others, each group drawn by `rng`."""
    kept = [row for row in candidates if Path(row["file"]).name in shipped]
    others = [row for row in candidates if Path(row["file"]).name not in shipped]
    if len(kept) + len(others) < PER_CLASS:
        raise ValueError(f"only {len(kept) + len(others)} radiographs of a class, {PER_CLASS} needed")
    picked = [kept[i] for i in rng.choice(len(kept), min(PER_CLASS, len(kept)), replace=False)]
    missing = PER_CLASS - len(picked)
    return picked + [others[i] for i in rng.choice(len(others), missing, replace=False)] if missing else picked


def select(data: Path, target: Path = TARGET) -> list[dict[str, str]]:
    """The chosen labels.csv rows, sorted by file name (reads the shipped file names from `target`)."""
    test = [row for row in cxr_nih.read_labels(data) if row["split"] == "test"]
    accepted = sorted(accepted_by_gate(data, test), key=lambda row: row["file"])
    logger.info("%d of %d test radiographs accepted by the gate", len(accepted), len(test))
    shipped = {path.name for path in target.glob("*.png")}
    rng = np.random.default_rng(SELECTION_SEED)
    chosen = [
        row
        for present in ("1", "0")
        for row in choose([row for row in accepted if row[FINDING] == present], shipped, rng)
    ]
    return sorted(chosen, key=lambda row: row["file"])


def write(data: Path, target: Path, rows: list[dict[str, str]]) -> None:
    """Copy the chosen PNGs, write their labels.csv rows, remove the shipped PNGs not chosen."""
    names = {Path(row["file"]).name for row in rows}
    for row in rows:
        name = Path(row["file"]).name
        if not (target / name).exists():
            shutil.copyfile(data / row["file"], target / name)
    for path in target.glob("*.png"):
        if path.name not in names:
            path.unlink()
    with open(target / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(data: Path = cxr_nih.DATA, target: Path = TARGET) -> None:
    rows = select(data, target)
    write(data, target, rows)
    logger.info("%d radiographs in %s: %s", len(rows), target, ", ".join(Path(row["file"]).name for row in rows))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*(Path(argument) for argument in sys.argv[1:3]))
