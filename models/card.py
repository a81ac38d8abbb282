"""Model cards: what a model folder (card.json + weights) declares about itself.

Torch-free on purpose: the web app imports this module to list, validate and store models, and it never
imports torch. A model folder looks like::

    models/zoo/dr-grading-retinamnist/
        card.json     the fields of `ModelCard` (see `ModelCard.as_dict` for the layout)
        weights.pt    a state dict, checked against `weights_sha256` before it is loaded
        evaluation.json  optional: curves too long for the card (risk-coverage), named by `evaluation.file`

`"format": "torchscript"` makes `weights` a TorchScript file (torch.jit.save) instead of a state dict; its
`architecture` may then be left out. `task` "multilabel" means one sigmoid per label (lesion presence),
"classification" one softmax over the labels. `uncertainty` says how uncertainty is estimated
(`UncertaintySpec`), `input.windowing` and `input.invert_monochrome1` how grayscale DICOM pixels are
mapped to [0, 1] before the network (see `InputSpec`).

`load_card` validates one folder and raises `CardError` naming the folder and the field at fault.
`scan_cards` walks model directories and returns the valid cards and the invalid folders with their
reasons; `discover_cards` is its strict form, which raises when any folder is invalid.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CARD_FILE = "card.json"
TASKS = ("classification", "multilabel")
FORMATS = ("state_dict", "torchscript")
UNCERTAINTY_METHODS = ("mc_dropout", "ensemble", "tta", "none")
WINDOWINGS = ("minmax", "percentile", "dicom")
COLOURS = ("rgb", "grayscale")
CROPS = ("fundus",)
DEFAULT_INTENDED_USE = "research demonstration, not for clinical use"


class CardError(ValueError):
    """A model folder or its card.json is invalid; the message names the folder and the field."""


class WeightsMismatchError(CardError):
    """The weights file's sha256 differs from the card's `weights_sha256`."""


@dataclass(frozen=True)
class InputSpec:
    """What the network takes: `size` is [H, W] (or [D, H, W] for 3D), per-channel `mean`/`std`
    applied after scaling pixels to [0, 1], `colour` "rgb" (3 channels) or "grayscale" (1 channel), and an
    optional `crop` applied to the decoded image first ("fundus": crop to the fundus's bounding box).

    Grayscale (DICOM) photometric handling, applied before the [0, 1] scaling: `windowing` is "minmax" (the
    default: the image's own range), "percentile" (clip to the 1st-99th percentile of the image, then scale),
    "dicom" (the file's own VOI window, Window Center/Width; "percentile" when the file has none), or a fixed
    window {"center": c, "width": w} in modality units (after the rescale slope/intercept);
    `invert_monochrome1` maps MONOCHROME1 (high = dark) to MONOCHROME2 after windowing, so bone is bright
    whatever the file's photometric interpretation. Both are implemented by
    `models.datasets.window_grayscale` and applied by `models.preprocessing.prepare`."""

    size: tuple[int, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    colour: str
    crop: str | None = None
    windowing: str | dict[str, float] = "minmax"
    invert_monochrome1: bool = False


@dataclass(frozen=True)
class UncertaintySpec:
    """How `models.uncertainty.estimate` samples predictions: `method` "mc_dropout" (T passes of the head
    with dropout on; Gal and Ghahramani, ICML 2016), "ensemble" (one pass per member folder, each a model
    folder inside this one; Lakshminarayanan et al., NeurIPS 2017), "tta" (flips of the input; Wang et al.,
    Neurocomputing 2019) or "none" (one pass). `samples` is T for mc_dropout; `members` the ensemble's
    folders; `flips` the spatial axes flipped for tta (one list per augmented pass, [] = the input as is)."""

    method: str = "none"
    samples: int = 1
    members: tuple[str, ...] = ()
    flips: tuple[tuple[int, ...], ...] = ((),)


@dataclass(frozen=True)
class Architecture:
    """A network name from `models.networks` and the keyword arguments that build it."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCard:
    """One model, as its card.json declares it. `folder` is where the card was read from (not stored)."""

    name: str
    version: str
    task: str
    labels: list[str]
    modalities: list[str]
    input: InputSpec
    architecture: Architecture
    target_layer: str
    weights: str
    weights_sha256: str
    metrics: dict[str, Any]
    training_data: str
    licence: str
    folder: Path
    calibration_temperature: float = 1.0
    uncertainty_threshold: float | None = None
    intended_use: str = DEFAULT_INTENDED_USE
    training: dict[str, Any] = field(default_factory=dict)
    format: str = "state_dict"
    uncertainty: UncertaintySpec = field(default_factory=UncertaintySpec)
    evaluation: dict[str, Any] = field(default_factory=dict)
    # False: the model is installed and listed but never run on incoming studies (a research model, or one
    # whose test metrics do not justify showing its predictions to readers).
    serve_automatically: bool = True

    @property
    def weights_path(self) -> Path:
        return self.folder / self.weights

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def as_dict(self) -> dict[str, Any]:
        """The card as plain JSON data, in card.json's layout; `folder` is left out (it is machine-local)."""
        spec = self.input
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "labels": list(self.labels),
            "modalities": list(self.modalities),
            "input": {
                "size": list(spec.size),
                "channels": spec.channels,
                "mean": list(spec.mean),
                "std": list(spec.std),
                "colour": spec.colour,
                "crop": spec.crop,
                "windowing": spec.windowing if isinstance(spec.windowing, str) else dict(spec.windowing),
                "invert_monochrome1": spec.invert_monochrome1,
            },
            "format": self.format,
            "architecture": {"name": self.architecture.name, "params": dict(self.architecture.params)},
            "target_layer": self.target_layer,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "calibration_temperature": self.calibration_temperature,
            "uncertainty_threshold": self.uncertainty_threshold,
            "uncertainty": {
                "method": self.uncertainty.method,
                "samples": self.uncertainty.samples,
                "members": list(self.uncertainty.members),
                "flips": [list(axes) for axes in self.uncertainty.flips],
            },
            "metrics": dict(self.metrics),
            "evaluation": dict(self.evaluation),
            "serve_automatically": self.serve_automatically,
            "training_data": self.training_data,
            "licence": self.licence,
            "intended_use": self.intended_use,
            "training": dict(self.training),
        }

    def verify_weights(self) -> None:
        """Raise `WeightsMismatchError` unless the weights file's sha256 equals the card's."""
        actual = file_sha256(self.weights_path)
        if actual != self.weights_sha256:
            raise WeightsMismatchError(
                f"model {self.name!r} ({self.folder}): sha256 of {self.weights} is {actual}, "
                f"the card says {self.weights_sha256}; the weights file was changed or replaced"
            )


@dataclass(frozen=True)
class CardScan:
    """The outcome of `scan_cards`: valid cards, and invalid folders mapped to why they are invalid."""

    cards: list[ModelCard]
    invalid: dict[Path, str]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (weights may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_card(folder: Path) -> ModelCard:
    """Read and validate `folder/card.json`. Raises `CardError` with the folder and field at fault."""
    folder = Path(folder)
    path = folder / CARD_FILE
    if not path.is_file():
        raise CardError(f"{folder}: no {CARD_FILE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CardError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    try:
        card = _card_from_dict(data, folder)
    except CardError as exc:
        raise CardError(f"{path}: {exc}") from None
    if not card.weights_path.is_file():
        raise CardError(f"{path}: weights file {card.weights!r} is missing from {folder}")
    for member in card.uncertainty.members:
        if not (folder / member / CARD_FILE).is_file():
            raise CardError(f"{path}: ensemble member folder {member!r} has no {CARD_FILE}")
    return card


def scan_cards(dirs: list[Path]) -> CardScan:
    """Every subfolder of `dirs` holding a card.json, validated. Invalid folders (and model directories
    that do not exist, and a second card with an already seen name and version) are returned in
    `invalid` with the reason, never skipped silently. Folders without card.json are not model folders."""
    cards: list[ModelCard] = []
    invalid: dict[Path, str] = {}
    seen: dict[tuple[str, str], Path] = {}
    for directory in map(Path, dirs):
        if not directory.is_dir():
            invalid[directory] = "model directory does not exist"
            continue
        for folder in sorted(p for p in directory.iterdir() if (p / CARD_FILE).is_file()):
            try:
                card = load_card(folder)
            except CardError as exc:
                logger.warning("invalid model folder: %s", exc)
                invalid[folder] = str(exc)
                continue
            key = (card.name, card.version)
            if key in seen:
                invalid[folder] = f"{folder}: model {card.name} {card.version} is already defined in {seen[key]}"
                continue
            seen[key] = folder
            cards.append(card)
    return CardScan(cards=cards, invalid=invalid)


def discover_cards(dirs: list[Path]) -> list[ModelCard]:
    """The valid cards under `dirs`, in order. Strict: raises `CardError` listing every invalid folder,
    so a broken model folder is seen at start-up. Use `scan_cards` to carry on with the valid ones."""
    scan = scan_cards(dirs)
    if scan.invalid:
        lines = "\n".join(f"  {path}: {reason}" for path, reason in scan.invalid.items())
        raise CardError(f"{len(scan.invalid)} invalid model folder(s):\n{lines}")
    return scan.cards


def write_card(card: ModelCard) -> Path:
    """Write `card.as_dict()` to `card.folder/card.json` (used by training recipes)."""
    card.folder.mkdir(parents=True, exist_ok=True)
    path = card.folder / CARD_FILE
    path.write_text(json.dumps(card.as_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def _card_from_dict(data: dict[str, Any], folder: Path) -> ModelCard:
    task = _get(data, "task", str)
    if task not in TASKS:
        raise CardError(f"field 'task' must be one of {list(TASKS)}, got {task!r}")
    labels = _str_list(data, "labels")
    if len(labels) < 2:
        raise CardError("field 'labels' must name at least 2 classes")
    metrics = _get(data, "metrics", dict)
    if not isinstance(metrics.get("split"), str):
        raise CardError("field 'metrics' must name the split it was measured on ('split': str)")
    threshold = _get(data, "uncertainty_threshold", (int, float), required=False)
    sha = _get(data, "weights_sha256", str).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise CardError("field 'weights_sha256' must be 64 hex digits")
    temperature = float(_get(data, "calibration_temperature", (int, float), required=False, default=1.0))
    if temperature <= 0:
        raise CardError(f"field 'calibration_temperature' must be > 0, got {temperature}")
    fmt = _get(data, "format", str, required=False, default="state_dict")
    if fmt not in FORMATS:
        raise CardError(f"field 'format' must be one of {list(FORMATS)}, got {fmt!r}")
    # A TorchScript file carries its own architecture; a state dict needs one to be loaded into.
    arch = _get(data, "architecture", dict, required=fmt == "state_dict", default={"name": "torchscript"})
    return ModelCard(
        name=_get(data, "name", str),
        version=_get(data, "version", str),
        task=task,
        labels=labels,
        modalities=_str_list(data, "modalities"),
        input=_input_spec(_get(data, "input", dict)),
        architecture=_architecture(arch),
        target_layer=_get(data, "target_layer", str),
        weights=_weights_name(_get(data, "weights", str)),
        weights_sha256=sha,
        metrics=metrics,
        training_data=_get(data, "training_data", str),
        licence=_get(data, "licence", str),
        folder=folder,
        calibration_temperature=temperature,
        uncertainty_threshold=None if threshold is None else float(threshold),
        intended_use=_get(data, "intended_use", str, required=False, default=DEFAULT_INTENDED_USE),
        training=_get(data, "training", dict, required=False, default={}),
        format=fmt,
        uncertainty=_uncertainty(_get(data, "uncertainty", dict, required=False, default={})),
        evaluation=_get(data, "evaluation", dict, required=False, default={}),
        serve_automatically=_get(data, "serve_automatically", bool, required=False, default=True),
    )


def _uncertainty(data: dict[str, Any]) -> UncertaintySpec:
    method = _get(data, "method", str, where="uncertainty", required=False, default="none")
    if method not in UNCERTAINTY_METHODS:
        raise CardError(f"field 'uncertainty.method' must be one of {list(UNCERTAINTY_METHODS)}, got {method!r}")
    samples = _get(data, "samples", int, where="uncertainty", required=False, default=1)
    if samples < 1 or (method == "mc_dropout" and samples < 2):
        raise CardError(f"field 'uncertainty.samples' must be >= 2 for mc_dropout (>= 1 otherwise), got {samples}")
    members = tuple(_get(data, "members", list, where="uncertainty", required=False, default=[]))
    if method == "ensemble" and len(members) < 2:
        raise CardError("field 'uncertainty.members' must list at least 2 member folders for an ensemble")
    for member in members:
        if not isinstance(member, str) or not member or Path(member).is_absolute() or ".." in Path(member).parts:
            raise CardError(
                f"field 'uncertainty.members' must hold folder names inside the model folder, got {member!r}"
            )
    flips = _get(data, "flips", list, where="uncertainty", required=False, default=[[]])
    if not flips or not all(isinstance(f, list) and all(isinstance(a, int) and a < 0 for a in f) for f in flips):
        raise CardError(
            f"field 'uncertainty.flips' must be lists of negative spatial axes, e.g. [[], [-1]], got {flips!r}"
        )
    return UncertaintySpec(method=method, samples=samples, members=members, flips=tuple(tuple(f) for f in flips))


def _input_spec(data: dict[str, Any]) -> InputSpec:
    size = _get(data, "size", list, where="input")
    if len(size) not in (2, 3) or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise CardError(f"field 'input.size' must be [H, W] or [D, H, W] of positive ints, got {size!r}")
    channels = _get(data, "channels", int, where="input")
    colour = _get(data, "colour", str, where="input")
    if colour not in COLOURS:
        raise CardError(f"field 'input.colour' must be one of {list(COLOURS)}, got {colour!r}")
    expected = 3 if colour == "rgb" else 1
    if channels != expected:
        raise CardError(f"field 'input.channels' is {channels}, but colour {colour!r} has {expected}")
    mean = _floats(data, "mean", channels)
    std = _floats(data, "std", channels)
    if any(s <= 0 for s in std):
        raise CardError(f"field 'input.std' must be > 0, got {std}")
    crop = _get(data, "crop", str, where="input", required=False)
    if crop is not None and crop not in CROPS:
        raise CardError(f"field 'input.crop' must be null or one of {list(CROPS)}, got {crop!r}")
    windowing = _windowing(data.get("windowing", "minmax"))
    invert = _get(data, "invert_monochrome1", bool, where="input", required=False, default=False)
    return InputSpec(size=tuple(size), channels=channels, mean=mean, std=std, colour=colour, crop=crop,
                     windowing=windowing, invert_monochrome1=invert)


def _windowing(value: Any) -> str | dict[str, float]:
    if value is None or (isinstance(value, str) and value in WINDOWINGS):
        return value or "minmax"
    if isinstance(value, dict) and set(value) == {"center", "width"} and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
    ) and value["width"] > 0:
        return {"center": float(value["center"]), "width": float(value["width"])}
    raise CardError(
        f"field 'input.windowing' must be one of {list(WINDOWINGS)} or {{'center': c, 'width': w > 0}}, got {value!r}"
    )


def _architecture(data: dict[str, Any]) -> Architecture:
    return Architecture(
        name=_get(data, "name", str, where="architecture"),
        params=_get(data, "params", dict, where="architecture", required=False, default={}),
    )


def _weights_name(name: str) -> str:
    # The weights must sit inside the model folder: no absolute paths or "..", which would let a card
    # point the loader anywhere on the machine.
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise CardError(f"field 'weights' must be a file name inside the model folder, got {name!r}")
    return name


def _floats(data: dict[str, Any], key: str, n: int) -> tuple[float, ...]:
    values = _get(data, key, list, where="input")
    if len(values) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise CardError(f"field 'input.{key}' must be a list of {n} numbers (one per channel), got {values!r}")
    return tuple(float(v) for v in values)


def _str_list(data: dict[str, Any], key: str) -> list[str]:
    values = _get(data, key, list)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise CardError(f"field {key!r} must be a non-empty list of strings, got {values!r}")
    return list(values)


def _get(
    data: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    *,
    where: str = "",
    required: bool = True,
    default: Any = None,
) -> Any:
    name = f"{where}.{key}" if where else key
    if key not in data or data[key] is None:
        if required:
            raise CardError(f"missing field {name!r}")
        return default
    value = data[key]
    # bool is an int in Python; a card saying `"channels": true` is a mistake, not 1.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise CardError(f"field {name!r} must be {_type_name(kind)}, got bool")
    if not isinstance(value, kind):
        raise CardError(f"field {name!r} must be {_type_name(kind)}, got {type(value).__name__}")
    return value


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "int": "an integer", "float": "a number", "list": "a list", "dict": "an object"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)
