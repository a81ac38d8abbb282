"""Real models and labelled sets for the onboarding tests: Lumen's own DR DenseNet exported as TorchScript, and
RetinaMNIST validation and test photographs written out as a coordinator would upload them (labels.csv + PNGs)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.card import load_card
from models.datasets import load_medmnist
from models.registry import load_model

ROOT = Path(__file__).resolve().parents[2]
DR_ZOO = ROOT / "models" / "zoo" / "dr-grading-retinamnist"
RETINAMNIST = ROOT / "data" / "retinamnist.npz"
DR_LABELS = ["none", "mild", "moderate", "severe NPDR", "PDR"]


def dr_densenet_torchscript(path: Path) -> Path:
    """The shipped DR DenseNet (trained on RetinaMNIST) scripted and saved as one TorchScript file."""
    model = load_model(load_card(DR_ZOO))
    torch.jit.script(model).save(str(path))
    return path


def retinamnist_set(folder: Path, split: str, n: int, labels: list[str] = DR_LABELS) -> Path:
    """The first `n` photographs of a RetinaMNIST split as PNG files with labels.csv (image,label by name)."""
    data = load_medmnist(RETINAMNIST, num_classes=5)[split].head(n)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        for index, (image, label) in enumerate(zip(data.images, data.labels, strict=True)):
            name = f"{split}-{index:03d}.png"
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(folder / name)
            writer.writerow([name, labels[int(label)]])
    return folder


def dr_answers(name: str, version: str = "1.0.0", **changes: object) -> dict[str, object]:
    """The answers a coordinator gives for the DR DenseNet: its card's input, on XC (external-camera) photographs
    so that routing sends the tests' uploads to it and not to the shipped OP model."""
    card = load_card(DR_ZOO)
    answers: dict[str, object] = {
        "name": name, "version": version, "labels": DR_LABELS, "modalities": ["XC"], "body_part": "eye fundus",
        "colour": "rgb", "size": list(card.input.size), "mean": list(card.input.mean), "std": list(card.input.std),
        "crop": "fundus", "training_data": "RetinaMNIST train split (1,080 photographs)", "licence": "CC BY 4.0",
    }
    answers.update(changes)
    return answers
