"""Tiny model folders for the model-library tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from models.card import file_sha256
from models.networks import build_network

TINY_NETWORK = {"spatial_dims": 2, "in_channels": 3, "num_classes": 3, "growth_rate": 4,
                "block_layers": [2, 2], "init_features": 8, "dropout": 0.2}


def card_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "tiny", "version": "0.1.0", "task": "classification", "labels": ["a", "b", "c"],
        "modalities": ["OP"],
        "input": {"size": [16, 16], "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                  "colour": "rgb", "crop": None},
        "architecture": {"name": "densenet", "params": TINY_NETWORK},
        "target_layer": "features.relu_final", "weights": "weights.pt", "weights_sha256": "",
        "calibration_temperature": 1.5, "uncertainty_threshold": None,
        "metrics": {"split": "test", "accuracy": 0.5}, "training_data": "random", "licence": "CC0",
        "intended_use": "research demonstration, not for clinical use",
    }
    data.update(overrides)
    return data


@pytest.fixture
def make_model_folder(tmp_path: Path) -> Callable[..., Path]:
    """Write a folder with random tiny-DenseNet weights and a card.json (fields overridable; the
    sha256 is filled in unless given)."""

    def make(folder_name: str = "tiny", **overrides: Any) -> Path:
        folder = tmp_path / folder_name
        folder.mkdir()
        torch.manual_seed(0)
        torch.save(build_network("densenet", **TINY_NETWORK).state_dict(), folder / "weights.pt")
        data = card_data(**overrides)
        if not data.get("weights_sha256"):
            data["weights_sha256"] = file_sha256(folder / "weights.pt")
        (folder / "card.json").write_text(json.dumps({k: v for k, v in data.items() if v is not ...}))
        return folder

    return make
