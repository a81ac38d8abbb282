"""Recognising uploaded models (models/onboarding/formats.py): a MONAI bundle written with MONAI's own bundle
tools (folder and zip) and a TorchScript export of a shipped model load with the outputs of the originals; the
proposed target layer of each shipped network is its card's; ONNX, Keras, pickled models and empty files are
refused with their reasons; `ood.embed` reads a MONAI net's last Linear."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from monai.networks.nets import DenseNet, ResNet
from onnx import TensorProto, helper

from models import ood
from models.card import ModelCard, file_sha256, load_card
from models.datasets import load_medmnist
from models.networks import build_network
from models.onboarding.formats import Detected, UnsupportedModel, inspect_upload, propose_target_layer
from models.preprocessing import prepare
from models.registry import build_from_card, load_model
from tests.models.onboarding.bundles import LABELS, MONAI_NET, make_bundle

ROOT = Path(__file__).resolve().parents[3]
ZOO = ROOT / "models" / "zoo"
DR = ZOO / "dr-grading-retinamnist"
@pytest.fixture(scope="module")
def retina() -> np.ndarray:
    """Six RetinaMNIST test images, (6, 28, 28, 3) uint8."""
    return load_medmnist(ROOT / "data" / "retinamnist.npz", num_classes=5)["test"].images[:6]


@pytest.fixture
def monai_net() -> DenseNet:
    torch.manual_seed(0)
    net = DenseNet(spatial_dims=2, in_channels=3, out_channels=5, init_features=8, growth_rate=4, block_config=(2, 2))
    return net.eval()


def card_for(detected: Detected, **fields: Any) -> ModelCard:
    """Write the card a coordinator would confirm for `detected` (its proposed answers, the rest given here)
    into its folder, and load it."""
    proposed = detected.proposed
    data = {
        "name": proposed.get("name", "upload"), "version": proposed.get("version", "0.1.0"),
        "task": "classification", "labels": proposed.get("labels", LABELS), "modalities": ["OP"],
        "input": {"size": [28, 28], "colour": "rgb", "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3,
                  **proposed.get("input", {})},
        "format": detected.format,
        "target_layer": "", "weights": detected.weights,
        "weights_sha256": file_sha256(detected.folder / detected.weights),
        "metrics": {"split": "none"}, "training_data": "test", "licence": "CC0", **fields,
    }
    if detected.architecture is not None:
        data["architecture"] = {"name": detected.architecture.name, "params": detected.architecture.params}
    (detected.folder / "card.json").write_text(json.dumps(data))
    return load_card(detected.folder)


def batch(images: np.ndarray, card: ModelCard) -> torch.Tensor:
    return torch.cat([prepare(image, card) for image in images])


def test_monai_bundle_folder_is_recognised_and_loads_the_same_network(tmp_path, monai_net, retina):
    detected = inspect_upload(make_bundle(tmp_path / "retina_bundle", monai_net))
    assert detected.format == "state_dict" and detected.folder == tmp_path
    assert detected.architecture is not None and detected.architecture.name == "monai_bundle"
    assert detected.architecture.params == {"bundle": "retina_bundle", "config": "configs/inference.json",
                                            "network": "network_def"}
    assert detected.weights == "retina_bundle/models/model.pt"
    assert detected.proposed == {"name": "Retina grading (MONAI)", "version": "1.2.0",
                                 "description": "DR grade from a fundus photo.", "labels": LABELS,
                                 "input": {"channels": 3, "colour": "rgb", "size": [28, 28]}}
    card = card_for(detected)
    model = load_model(card)
    x = batch(retina, card)
    with torch.no_grad():
        assert torch.equal(model(x), monai_net(x))
    assert model is not monai_net and type(model) is DenseNet


@pytest.mark.parametrize("inside", ["bundle folder", "bundle contents"])
def test_zipped_monai_bundle_is_unpacked_beside_the_zip(tmp_path, monai_net, retina, inside):
    source = make_bundle(tmp_path / "src" / "retina_bundle", monai_net)
    root, base = (source.parent, source.name) if inside == "bundle folder" else (source, None)
    upload = Path(shutil.make_archive(str(tmp_path / "uploads" / "retina"), "zip", root_dir=root, base_dir=base))
    detected = inspect_upload(upload)
    bundle = "retina_bundle" if inside == "bundle folder" else "bundle"
    assert detected.folder.parent == upload.parent and detected.folder.name.startswith("retina-")
    assert detected.architecture is not None and detected.architecture.params["bundle"] == bundle
    assert (detected.folder / bundle / "configs" / "metadata.json").is_file()
    card = card_for(detected)
    x = batch(retina, card)
    with torch.no_grad():
        assert torch.equal(load_model(card)(x), monai_net(x))


def test_zip_entries_outside_the_folder_are_refused(tmp_path):
    upload = tmp_path / "uploads" / "evil.zip"
    upload.parent.mkdir()
    with zipfile.ZipFile(upload, "w") as archive:
        archive.writestr("configs/metadata.json", "{}")
        archive.writestr("../escaped.txt", "x")
    with pytest.raises(UnsupportedModel, match="outside the model folder"):
        inspect_upload(upload)
    assert not (tmp_path / "escaped.txt").exists()
    assert [p.name for p in upload.parent.iterdir()] == ["evil.zip"]


@pytest.mark.parametrize(
    ("network_def", "reason"),
    [
        ({**MONAI_NET, "out_channels": "$__import__('os').getpid() % 5"}, "Python expression"),
        ({"_target_": "subprocess.Popen", "args": ["true"]}, "not a network class"),
        ({**MONAI_NET, "_mode_": "debug"}, "'_mode_' is not allowed"),
        ({**MONAI_NET, "out_channels": "@classes"}, "no item 'classes'"),
    ],
)
def test_bundle_configs_that_would_run_code_or_miss_items_are_refused(tmp_path, monai_net, network_def, reason):
    with pytest.raises(UnsupportedModel, match=reason):
        inspect_upload(make_bundle(tmp_path / "bundle", monai_net, network_def))


def test_monai_bundle_without_monai_says_which_extra_to_install(tmp_path, monai_net, monkeypatch):
    bundle = make_bundle(tmp_path / "bundle", monai_net)
    monkeypatch.setitem(sys.modules, "monai.bundle", None)  # what `import` sees when MONAI is not installed
    with pytest.raises(UnsupportedModel, match=r"pip install 'lumen\[monai\]'"):
        inspect_upload(bundle)


def test_segmentation_bundle_is_refused(tmp_path, monai_net):
    bundle = make_bundle(tmp_path / "bundle", monai_net)
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    metadata["network_data_format"]["outputs"]["pred"]["format"] = "segmentation"
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(UnsupportedModel, match="segmentation model: Lumen serves classifiers"):
        inspect_upload(bundle)


def test_torchscript_export_of_a_shipped_model_loads_with_its_outputs(tmp_path, retina):
    shipped = load_model(load_card(DR))
    path = tmp_path / "dr_scripted.pt"
    torch.jit.save(torch.jit.script(shipped), str(path))
    detected = inspect_upload(path)
    assert (detected.format, detected.weights, detected.folder) == ("torchscript", "dr_scripted.pt", tmp_path)
    assert detected.architecture is not None and detected.architecture.name == "torchscript"
    card = card_for(detected, input=dataclasses.asdict(load_card(DR).input))
    model = load_model(card)
    x = batch(retina, card)
    with torch.no_grad():
        torch.testing.assert_close(model(x), shipped(x), rtol=0, atol=1e-6)
    proposal = propose_target_layer(model, (3, 28, 28))
    assert proposal.layer is None and proposal.candidates == []
    assert "TorchScript" in proposal.reason and "Grad-CAM" in proposal.reason
    with pytest.raises(ValueError, match="TorchScript"):
        ood.embed(model, x)


@pytest.mark.parametrize("folder", sorted(p.name for p in ZOO.iterdir() if (p / "card.json").is_file()))
def test_proposed_target_layer_of_each_shipped_network_is_its_cards(folder):
    card = load_card(ZOO / folder)
    proposal = propose_target_layer(build_from_card(card), (card.input.channels, *card.input.size))
    assert proposal.layer == card.target_layer
    names = [name for name, _ in proposal.candidates]
    # The proposal is the last spatial candidate or an outer module of it (a ResNet stage around its block).
    assert names[-1] == card.target_layer or names[-1].startswith(card.target_layer + ".")
    assert all(len(shape) == 4 and shape[2] * shape[3] > 1 for _, shape in proposal.candidates)


def test_proposed_target_layer_of_monai_networks(monai_net):
    proposal = propose_target_layer(monai_net, (3, 28, 28))
    # MONAI's own Grad-CAM examples use this layer: the last feature map, after the final ReLU, before pooling.
    assert proposal.layer == "class_layers.relu" == proposal.candidates[-1][0]
    assert dict(proposal.candidates)["class_layers.relu"] == (1, 16, 3, 3)
    resnet = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[8, 16, 32, 64], spatial_dims=2,
                    n_input_channels=1, num_classes=3).eval()
    proposal = propose_target_layer(resnet, (1, 64, 64))
    # Each MONAI ResNet block calls its one `act` ReLU twice: the block's stage is proposed, never `act`.
    assert proposal.layer == "layer4" and dict(proposal.candidates)["layer4"] == (1, 64, 4, 4)
    assert "layer4.0.act" in dict(proposal.candidates)


def test_plain_state_dict_needs_an_architecture(tmp_path):
    torch.save(build_network("densenet", **load_card(DR).architecture.params).state_dict(), tmp_path / "w.pth")
    detected = inspect_upload(tmp_path / "w.pth")
    assert (detected.format, detected.architecture, detected.weights) == ("state_dict", None, "w.pth")
    assert detected.folder == tmp_path and "name the architecture" in detected.notes[0]
    assert inspect_upload(tmp_path).weights == "w.pth"  # a folder holding the one file


def write_onnx(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 28, 28])],
    )
    model = helper.make_model(graph, producer_name="lumen-test")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: torch.save(DenseNet(2, 3, 5, init_features=8, growth_rate=4, block_config=(2,)), p / "net.pt"),
         ["pickled Python object", "run code", "state_dict()"]),
        (lambda p: write_onnx(p / "model.onnx"), ["ONNX", "gradients", "TorchScript"]),
        (lambda p: write_onnx(p / "model.bin"), ["ONNX", "gradients", "state dict"]),
        (lambda p: (p / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(504)), ["TensorFlow/Keras", "PyTorch"]),
        (lambda p: (p / "model.pt").write_bytes(b""), ["empty"]),
        (lambda p: torch.save({"epoch": 3, "model": {"w": torch.ones(2)}}, p / "ckpt.pt"),
         ["checkpoint", "epoch", "state_dict()"]),
        (lambda p: (p / "model.pt").write_bytes(bytes(range(256)) * 4), ["not a model file Lumen reads"]),
    ],
    ids=["pickled model", "onnx", "onnx content", "keras h5", "empty", "training checkpoint", "garbage"],
)
def test_unsupported_uploads_are_refused_with_their_reason(tmp_path, make, words):
    make(tmp_path)
    (upload,) = tmp_path.iterdir()
    with pytest.raises(UnsupportedModel) as refused:
        inspect_upload(upload)
    for word in words:
        assert word in str(refused.value)


def test_embed_of_a_monai_net_is_the_input_of_its_last_linear(monai_net, retina):
    x = torch.from_numpy(retina[:4]).permute(0, 3, 1, 2).float() / 255
    embeddings, logits = ood.embed(monai_net, x)
    with torch.no_grad():
        pooled = monai_net.class_layers[:-1](monai_net.features(x))  # relu, pool, flatten: what `out` reads
        assert torch.equal(embeddings, pooled) and embeddings.shape == (4, 16)
        assert torch.equal(logits, monai_net(x))
    with pytest.raises(ValueError, match="no nn.Linear"):
        ood.embed(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1)), x)
