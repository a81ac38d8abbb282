"""What a coordinator uploaded: recognise a model's format and what the file itself says, or refuse it with a
reason they can act on; and propose the layer that Grad-CAM and the other layer methods explain.

Lumen serves PyTorch models it can take gradients of (every attribution method needs them):
- TorchScript (`torch.jit.save`): a zip whose entries include `<archive>/code/` or `<archive>/constants.pkl`;
- a torch state dict (`torch.save(model.state_dict())`): a zip with `<archive>/data.pkl` and no code, loaded
  with `weights_only=True`; it must map names to tensors, and the coordinator names the architecture;
- a MONAI bundle (MONAI Model Zoo layout: `configs/metadata.json`, `configs/inference.json` or .yaml,
  `models/model.pt`), as a folder or a zip, built by `models.networks.external` ("monai_bundle").

Refused (`UnsupportedModel`): ONNX (an ONNX runtime gives no gradients), TensorFlow/Keras, a pickled Python
object such as a whole model (unpickling it would run its code), and empty or unreadable files.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import stat
import tempfile
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import torch
from torch import nn

from models.card import Architecture, CardError, Format
from models.networks import NETWORKS
from models.networks.external import monai_bundle_network

BUNDLE_METADATA = "configs/metadata.json"
BUNDLE_CONFIGS = ("configs/inference.json", "configs/inference.yaml", "configs/inference.yml")
BUNDLE_WEIGHTS = "models/model.pt"
BUNDLE_NETWORK = "network_def"
# A zipped bundle is unpacked next to the upload: a zip bomb must not fill the disk.
MAX_UNPACKED_BYTES = 8 << 30
_TENSORFLOW_SUFFIXES = {".h5", ".hdf5", ".keras", ".pb", ".tflite"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAX_ONNX_FIELDS = 10_000  # a ModelProto has a handful of top-level fields (plus metadata and opset entries)
_PICKLE_PROTOCOL = 0x80  # the PROTO opcode that starts every pickle of protocol 2 or later
_TORCHSCRIPT_LAYERS = (
    "a TorchScript model takes no Python hooks once loaded, so layer methods (Grad-CAM, CAM, LayerCAM ...) are "
    "not available for it; input-gradient methods are"
)


class UnsupportedModel(CardError):
    """An upload Lumen cannot serve; the message says why in a coordinator's words and what to upload instead."""


@dataclass(frozen=True)
class Detected:
    """A recognised upload. `folder` is where its files now are (the model folder Lumen keeps, card.json to be
    written there), `weights` the card's `weights` inside it, `architecture` None when a plain state dict needs
    the coordinator to name one; `proposed` holds card answers the files state themselves (name, version,
    description, labels, input channels/size/colour), `notes` what the coordinator should know."""

    format: Format
    architecture: Architecture | None
    weights: str
    folder: Path
    proposed: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LayerProposal:
    """The proposed `target_layer` (None: no layer method can run), every module giving a spatial map as
    (dotted name, output shape) in the order they are called, and why."""

    layer: str | None
    candidates: list[tuple[str, tuple[int, ...]]]
    reason: str


def inspect_upload(path: Path) -> Detected:
    """Recognise an uploaded file, folder or .zip. The model folder (`Detected.folder`) is the file's folder, the
    folder uploaded (holding one model file or one bundle), the parent of an uploaded bundle folder, or for a
    zipped bundle a new folder beside the zip that it is unpacked into.

    Raises:
        UnsupportedModel: the upload is not a model Lumen can serve; the message says why.
    """
    path = Path(path)
    if path.is_dir():
        return _inspect_folder(path)
    if not path.is_file():
        raise UnsupportedModel(f"{path.name}: no such file or folder")
    return _inspect_file(path)


def _inspect_folder(path: Path) -> Detected:
    if (path / BUNDLE_METADATA).is_file():
        return _bundle(path.parent, path.name)
    bundles = [child for child in sorted(path.iterdir()) if (child / BUNDLE_METADATA).is_file()]
    if len(bundles) == 1:
        return _bundle(path, bundles[0].name)
    if (path / "saved_model.pb").is_file():
        raise UnsupportedModel(_tensorflow(path.name))
    files = [child for child in path.iterdir() if child.is_file() and not child.name.startswith(".")]
    if len(files) != 1 or bundles:
        raise UnsupportedModel(
            f"{path.name} holds {len(files)} files and {len(bundles)} MONAI bundles: upload one model file "
            "(TorchScript or a torch state dict) or one MONAI bundle"
        )
    return _inspect_file(files[0])


def _inspect_file(path: Path) -> Detected:
    if path.stat().st_size == 0:
        raise UnsupportedModel(f"{path.name} is empty: the upload did not finish, or another file was chosen")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raise UnsupportedModel(_onnx(path.name))
    if suffix in _TENSORFLOW_SUFFIXES or _head(path, len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
        raise UnsupportedModel(_tensorflow(path.name))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(_is_bundle_metadata(name) for name in names):
            return _unpacked_bundle(path)
        if any("/code/" in name or name.endswith("/constants.pkl") for name in names):
            return _torchscript(path)
    elif _is_onnx(path):
        raise UnsupportedModel(_onnx(path.name))
    state = read_state_dict(path)
    return Detected(
        "state_dict", None, path.name, path.parent,
        notes=[f"a state dict of {len(state)} tensors: name the architecture it was saved from (Lumen's "
               f"{', '.join(sorted(NETWORKS))}, or timm); the weights are checked against it when the model loads"],
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in `path`, loaded as data only (`weights_only=True`).

    Raises:
        UnsupportedModel: the file is a pickle of other objects (refused as code), holds something other than a
            mapping of names to tensors (a training checkpoint, say), or is not a torch file.
    """
    is_zip = zipfile.is_zipfile(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        if is_zip or _head(path, 1) == bytes([_PICKLE_PROTOCOL]):
            raise UnsupportedModel(
                f"{path.name} is a pickled Python object (a whole model, say), not a state dict: loading it would "
                "run code from the file, which Lumen refuses. Upload torch.save(model.state_dict()) or a "
                "TorchScript export (torch.jit.save) instead"
            ) from exc
        raise UnsupportedModel(_unreadable(path.name, exc)) from exc
    except Exception as exc:  # noqa: BLE001  torch's unpickler raises anything on bytes that are not its own
        raise UnsupportedModel(_unreadable(path.name, exc)) from exc
    if not isinstance(state, Mapping) or not state:
        raise UnsupportedModel(f"{path.name} holds a {type(state).__name__}, not a state dict (names -> tensors)")
    others = sorted(str(key) for key, value in state.items() if not isinstance(value, torch.Tensor))
    if others:
        raise UnsupportedModel(
            f"{path.name} is a checkpoint with entries other than tensors ({', '.join(others[:5])}), not a state "
            "dict: upload torch.save(model.state_dict())"
        )
    return {str(key): value for key, value in state.items()}


def _torchscript(path: Path) -> Detected:
    try:
        torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise UnsupportedModel(f"{path.name} is a TorchScript archive that does not load: {exc}") from exc
    return Detected("torchscript", Architecture("torchscript"), path.name, path.parent, notes=[_TORCHSCRIPT_LAYERS])


def _is_bundle_metadata(name: str) -> bool:
    return (name == BUNDLE_METADATA or name.endswith("/" + BUNDLE_METADATA)) and not name.startswith("__MACOSX/")


def _unpacked_bundle(path: Path) -> Detected:
    """Unpack a zipped bundle into a new folder beside the zip; the bundle becomes its subfolder."""
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if not m.filename.startswith("__MACOSX/")]
        _check_members(path.name, members)
        roots = {m.filename[: -len(BUNDLE_METADATA)] for m in members if _is_bundle_metadata(m.filename)}
        if len(roots) != 1:
            raise UnsupportedModel(f"{path.name} holds {len(roots)} MONAI bundles: upload one")
        root = roots.pop().rstrip("/")
        folder = Path(tempfile.mkdtemp(prefix=f"{path.stem}-", dir=path.parent))
        # A bundle zipped from inside its folder is unpacked into "bundle/", so it is a subfolder either way.
        archive.extractall(folder if root else folder / "bundle", members)
    return _bundle(folder, root or "bundle")


def _check_members(name: str, members: Sequence[zipfile.ZipInfo]) -> None:
    for member in members:
        parts = PurePosixPath(member.filename).parts
        if member.filename.startswith("/") or "\\" in member.filename or ".." in parts or ":" in member.filename:
            raise UnsupportedModel(f"{name}: entry {member.filename!r} would be written outside the model folder")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise UnsupportedModel(f"{name}: entry {member.filename!r} is a symbolic link")
    if sum(member.file_size for member in members) > MAX_UNPACKED_BYTES:
        raise UnsupportedModel(f"{name} unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB")


def _bundle(folder: Path, bundle: str) -> Detected:
    root = folder / bundle
    config = next((name for name in BUNDLE_CONFIGS if (root / name).is_file()), None)
    if config is None:
        raise UnsupportedModel(f"the MONAI bundle {bundle!r} has no configs/inference.json (or .yaml) to build its "
                               "network from")
    if not (root / BUNDLE_WEIGHTS).is_file():
        raise UnsupportedModel(f"the MONAI bundle {bundle!r} has no {BUNDLE_WEIGHTS} (its state dict)")
    try:
        metadata = json.loads((root / BUNDLE_METADATA).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsupportedModel(f"the MONAI bundle {bundle!r}: {BUNDLE_METADATA} is not readable JSON ({exc})") from exc
    proposed, notes = _bundle_answers(metadata if isinstance(metadata, dict) else {})
    params = {"bundle": bundle, "config": config, "network": BUNDLE_NETWORK}
    try:
        network = monai_bundle_network(folder, **params)
    except CardError as exc:
        raise UnsupportedModel(f"the MONAI bundle {bundle!r}: {exc}") from exc
    try:
        network.load_state_dict(read_state_dict(root / BUNDLE_WEIGHTS))
    except RuntimeError as exc:
        raise UnsupportedModel(
            f"the MONAI bundle {bundle!r}: {BUNDLE_WEIGHTS} does not fit its network: {exc}"
        ) from exc
    notes.append("the bundle's preprocessing is not read: set the card's input mean and std to what it applies")
    return Detected("state_dict", Architecture("monai_bundle", params), f"{bundle}/{BUNDLE_WEIGHTS}", folder,
                    proposed, notes)


def _bundle_answers(metadata: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Card answers from the bundle's metadata.json (its `network_data_format`), and notes on what is missing."""
    data_format = metadata.get("network_data_format") or {}
    image = _first(data_format.get("inputs"), "image")
    output = _first(data_format.get("outputs"), "pred")
    if output.get("format") == "segmentation":
        raise UnsupportedModel("the MONAI bundle is a segmentation model: Lumen serves classifiers (a score per label)")
    proposed: dict[str, Any] = {
        key: metadata[key] for key in ("name", "version", "description") if isinstance(metadata.get(key), str)
    }
    notes = []
    channel_def = output.get("channel_def")
    if isinstance(channel_def, dict) and all(str(key).isdigit() for key in channel_def):
        proposed["labels"] = [str(channel_def[key]) for key in sorted(channel_def, key=int)]
    else:
        notes.append("the bundle's metadata names no output classes (channel_def): name the labels")
    spec: dict[str, Any] = {}
    channels, size = image.get("num_channels"), image.get("spatial_shape")
    if isinstance(channels, int) and channels > 0:
        spec["channels"] = channels
        if channels in (1, 3):
            spec["colour"] = "rgb" if channels == 3 else "grayscale"
    if isinstance(size, list) and len(size) in (2, 3) and all(isinstance(s, int) and s > 0 for s in size):
        spec["size"] = size
    else:
        notes.append(f"the bundle's input size is {size!r}, not fixed: choose the size the model is served at")
    if spec:
        proposed["input"] = spec
    return proposed, notes


def _first(entries: Any, key: str) -> dict[str, Any]:
    """entries[key], else the only entry, of an inputs/outputs block of `network_data_format`."""
    if not isinstance(entries, dict) or not entries:
        return {}
    found = entries.get(key, next(iter(entries.values())) if len(entries) == 1 else {})
    return found if isinstance(found, dict) else {}


def _head(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def _is_onnx(path: Path) -> bool:
    """Whether the file parses as one protobuf message with ONNX ModelProto's `ir_version` (field 1, a varint)
    and `graph` (field 7, a message) at its top level: ONNX has no magic number of its own."""
    size, fields = path.stat().st_size, set()
    with open(path, "rb") as handle:
        try:
            for _ in range(_MAX_ONNX_FIELDS):
                if handle.tell() >= size:
                    break
                key = _varint(handle)
                number, wire = key >> 3, key & 7
                if number == 0 or wire not in (0, 1, 2, 5):
                    return False
                if wire == 0:
                    _varint(handle)
                else:
                    handle.seek(_varint(handle) if wire == 2 else {1: 8, 5: 4}[wire], os.SEEK_CUR)
                fields.add((number, wire))
        except EOFError:
            return False
        return handle.tell() == size and {(1, 0), (7, 2)} <= fields


def _varint(handle: BinaryIO) -> int:
    value = 0
    for shift in range(0, 70, 7):
        byte = handle.read(1)
        if not byte:
            raise EOFError
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    raise EOFError  # more than 10 bytes: not a varint


def _onnx(name: str) -> str:
    return (f"{name} is an ONNX model. Lumen explains each prediction with gradients (saliency, Grad-CAM, "
            "integrated gradients ...), and an ONNX runtime gives none: export the PyTorch model as TorchScript "
            "(torch.jit.script or torch.jit.trace, then torch.jit.save) or save its state dict instead")


def _tensorflow(name: str) -> str:
    return (f"{name} is a TensorFlow/Keras model: Lumen runs PyTorch models (TorchScript, a state dict, or a MONAI "
            "bundle); upload the PyTorch original or a PyTorch conversion of it")


def _unreadable(name: str, exc: BaseException) -> str:
    return (f"{name} is not a model file Lumen reads (TorchScript, a torch state dict, a MONAI bundle): "
            f"{type(exc).__name__}: {str(exc)[:200]}")


def propose_target_layer(model: nn.Module, input_shape: Sequence[int]) -> LayerProposal:
    """The layer Grad-CAM and the other layer methods should explain: the last spatial feature map the network
    computes before its head, found by one forward pass of a (1, *input_shape) zero tensor, input_shape =
    (C, H, W) or (C, D, H, W).

    Where modules nest and return the same tensor (a stage and its last block), the outermost is proposed,
    short of a container of the whole backbone (one holding the first spatial layer too): ResNet's `layer4`,
    Lumen's `features.stage4` or `features.relu_final`. A module called more than once (a shared ReLU) is never
    proposed: its hook would see several outputs. A TorchScript model takes no hooks: no layer, and why.
    """
    if isinstance(model, torch.jit.ScriptModule):
        return LayerProposal(None, [], _TORCHSCRIPT_LAYERS)
    outputs, calls = _spatial_outputs(model, tuple(input_shape))
    candidates: dict[str, tuple[int, ...]] = {}
    for _, name, tensor in sorted(outputs, key=lambda record: record[0]):
        candidates.setdefault(name, tuple(tensor.shape))
    listed = list(candidates.items())
    if not outputs:
        return LayerProposal(None, listed, "no module gives a spatial map (B, C, H, W) or (B, C, D, H, W) larger "
                                           "than 1 pixel, so layer methods (Grad-CAM, CAM ...) are not available")
    first = outputs[0][1]  # the first spatial call to return: a layer, never a container of others
    seen: set[int] = set()
    for _, _, tensor in reversed(outputs):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        same = [name for _, name, other in outputs if other is tensor]
        eligible = [name for name in same if calls[name] == 1 and not first.startswith(name + ".")]
        if eligible:
            layer = eligible[-1]
            return LayerProposal(layer, listed, f"{layer} gives the last spatial feature map {candidates[layer]} the "
                                                "network computes before its head: Grad-CAM's usual layer")
    return LayerProposal(None, listed, "every spatial map comes from a module called more than once (a shared "
                                       "ReLU, say), whose hooks would mix its calls: no layer is proposed")


def _spatial_outputs(
    model: nn.Module, input_shape: tuple[int, ...]
) -> tuple[list[tuple[int, str, torch.Tensor]], Counter[str]]:
    """(call order, name, output) of every module call giving a spatial map, in the order the calls return,
    and how often each module was called; one forward pass in eval mode, hooks released in `finally`."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    outputs: list[tuple[int, str, torch.Tensor]] = []
    calls: Counter[str] = Counter()
    started: list[int] = []  # calls nest, so the innermost open call is the last started
    order = itertools.count()

    def hooks(name: str) -> tuple[Any, Any]:
        def before(_module: nn.Module, _args: Any) -> None:
            started.append(next(order))

        def after(_module: nn.Module, _args: Any, output: Any) -> None:
            start = started.pop()
            calls[name] += 1
            if isinstance(output, torch.Tensor) and output.dim() in (4, 5) and output[0, 0].numel() > 1:
                outputs.append((start, name, output))

        return before, after

    handles = []
    training = model.training
    try:
        for name, module in model.named_modules():
            if name:
                before, after = hooks(name)
                handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    except RuntimeError as exc:
        raise ValueError(f"the model does not take an input of shape {(1, *input_shape)}: {exc}") from exc
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    return outputs, calls
