"""MONAI bundles as a MONAI user writes them, for the onboarding tests: `monai.bundle.init_bundle` writes the
skeleton and the net's state dict, then the metadata and inference config are edited to describe a classifier."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import init_bundle
from monai.networks.nets import DenseNet

from models.datasets import load_medmnist

LABELS = ["none", "mild", "moderate", "severe", "proliferative"]
RETINAMNIST = Path(__file__).resolve().parents[3] / "data" / "retinamnist.npz"
# A MONAI DenseNet small enough for a test (two blocks of two layers), 3 x 28 x 28 RetinaMNIST images in.
MONAI_NET = {"_target_": "DenseNet", "spatial_dims": 2, "in_channels": 3, "out_channels": "@num_classes",
             "init_features": 8, "growth_rate": 4, "block_config": [2, 2]}


def make_bundle(path: Path, net: torch.nn.Module, network_def: dict[str, Any] | None = None) -> Path:
    """A bundle at `path` by `monai.bundle.init_bundle` (skeleton + the net's state dict), its metadata and
    inference config then edited to describe this classifier."""
    path.parent.mkdir(parents=True, exist_ok=True)
    init_bundle(path, network=net)
    inference = json.loads((path / "configs" / "inference.json").read_text())
    inference.update(num_classes=5, network_def=network_def or MONAI_NET)
    (path / "configs" / "inference.json").write_text(json.dumps(inference))
    metadata = json.loads((path / "configs" / "metadata.json").read_text())
    metadata.update(name="Retina grading (MONAI)", version="1.2.0", description="DR grade from a fundus photo.")
    metadata["network_data_format"] = {
        "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "RGB", "num_channels": 3,
                             "spatial_shape": [28, 28], "dtype": "float32", "value_range": [0, 1]}},
        "outputs": {"pred": {"type": "probabilities", "format": "classes", "num_channels": 5,
                             "spatial_shape": [1, 5], "channel_def": dict(enumerate(LABELS))}},
    }
    (path / "configs" / "metadata.json").write_text(json.dumps(metadata))
    return path


def trained_retina_net(epochs: int = 6, seed: int = 0) -> DenseNet:
    """The bundle's small MONAI DenseNet trained briefly on the RetinaMNIST train split (1,080 photographs, pixels
    scaled to [0, 1], no other preprocessing): a real classifier, better than chance on the held-out splits.
    A fresh copy of one training per session (the tests that bundle it may change it)."""
    return copy.deepcopy(_trained(epochs, seed))


@functools.lru_cache(maxsize=2)
def _trained(epochs: int, seed: int) -> DenseNet:
    torch.manual_seed(seed)
    train = load_medmnist(RETINAMNIST, num_classes=5)["train"]
    x = torch.from_numpy(np.asarray(train.images, dtype=np.float32) / 255).permute(0, 3, 1, 2)
    y = torch.from_numpy(train.labels)
    net = DenseNet(spatial_dims=2, in_channels=3, out_channels=5, init_features=8, growth_rate=4, block_config=(2, 2))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _epoch in range(epochs):
        net.train()
        for batch in torch.randperm(len(y), generator=generator).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimiser.step()
    return net.eval()
