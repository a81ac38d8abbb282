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

`load_card` validates one folder and raises `CardError` naming the folder and the field at fault: the card's
fields are plain dataclasses whose annotations pydantic checks card.json against (strict JSON types, the rules
of each field in its `Annotated` validator), and pydantic's errors become one `CardError`.
`scan_cards` walks model directories and returns the valid cards and the invalid folders with their
reasons; `discover_cards` is its strict form, which raises when any folder is invalid.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    with_config,
)
from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from Python 3.12

logger = logging.getLogger(__name__)

CARD_FILE = "card.json"
Task = Literal["classification", "multilabel"]
Format = Literal["state_dict", "torchscript"]
UncertaintyMethod = Literal["mc_dropout", "ensemble", "tta", "none"]
Windowing = Literal["minmax", "percentile", "dicom"]
Colour = Literal["rgb", "grayscale"]
Crop = Literal["fundus"]
TASKS, FORMATS, UNCERTAINTY_METHODS = get_args(Task), get_args(Format), get_args(UncertaintyMethod)
WINDOWINGS, COLOURS, CROPS = get_args(Windowing), get_args(Colour), get_args(Crop)
DEFAULT_INTENDED_USE = "research demonstration, not for clinical use"


class CardError(ValueError):
    """A model folder or its card.json is invalid; the message names the folder and the field."""


class WeightsMismatchError(CardError):
    """The weights file's sha256 differs from the card's `weights_sha256`."""


def _inside_folder(name: str) -> bool:
    # No absolute paths or "..": a card must not point the loader anywhere on the machine.
    return bool(name) and not Path(name).is_absolute() and ".." not in Path(name).parts


def _size(size: tuple[int, ...]) -> tuple[int, ...]:
    if len(size) not in (2, 3) or any(s <= 0 for s in size):
        raise ValueError(f"must be [H, W] or [D, H, W] of positive ints, got {list(size)!r}")
    return size


def _channels(channels: int, info: ValidationInfo) -> int:
    colour = info.data.get("colour")
    expected = 3 if colour == "rgb" else 1
    if colour is not None and channels != expected:
        raise ValueError(f"is {channels}, but colour {colour!r} has {expected}")
    return channels


def _per_channel(values: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
    channels = info.data.get("channels")
    if channels is not None and len(values) != channels:
        raise ValueError(f"must be a list of {channels} numbers (one per channel), got {list(values)!r}")
    if info.field_name == "std" and any(v <= 0 for v in values):
        raise ValueError(f"must be > 0, got {values}")
    return values


@with_config(ConfigDict(extra="forbid"))
class FixedWindow(TypedDict):
    """A fixed window {"center": c, "width": w} in modality units."""

    center: float
    width: Annotated[float, Field(gt=0)]


def _windowing(value: Any, handler: Any) -> Windowing | FixedWindow:
    try:
        return handler(value)
    except ValidationError:
        raise ValueError(
            f"must be one of {list(WINDOWINGS)} or {{'center': c, 'width': w > 0}}, got {value!r}"
        ) from None


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """What the network takes: `size` is [H, W] (or [D, H, W] for 3D), per-channel `mean`/`std`
    applied after scaling pixels to [0, 1], `colour` "rgb" (3 channels) or "grayscale" (1 channel), and an
    optional `crop` applied to the decoded image first ("fundus": crop to the fundus's bounding box).

    Grayscale (DICOM) photometric handling, applied before the [0, 1] scaling: `windowing` is "minmax" (the
    default: the image's own range), "percentile" (clip to the 1st-99th percentile of the image, then scale),
    "dicom" (the file's own VOI: its VOI LUT, else its first Window Center/Width with its VOI LUT Function;
    "percentile" when the file has none), or a fixed window {"center": c, "width": w} in modality units (after
    the modality LUT); `invert_monochrome1` maps MONOCHROME1 (high = dark) to MONOCHROME2 after windowing, so
    bone is bright whatever the file's photometric interpretation. Both are implemented by
    `models.datasets.window_grayscale` (through `models.grayscale`, the viewer's pydicom path) and applied by
    `models.preprocessing.prepare`."""

    size: Annotated[tuple[int, ...], AfterValidator(_size)]
    colour: Colour
    channels: Annotated[int, AfterValidator(_channels)]
    mean: Annotated[tuple[float, ...], AfterValidator(_per_channel)]
    std: Annotated[tuple[float, ...], AfterValidator(_per_channel)]
    crop: Crop | None = None
    windowing: Annotated[Windowing | FixedWindow, WrapValidator(_windowing)] = "minmax"
    invert_monochrome1: bool = False


def _samples(samples: int, info: ValidationInfo) -> int:
    if samples < 1 or (info.data.get("method") == "mc_dropout" and samples < 2):
        raise ValueError(f"must be >= 2 for mc_dropout (>= 1 otherwise), got {samples}")
    return samples


def _members(members: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    if info.data.get("method") == "ensemble" and len(members) < 2:
        raise ValueError("must list at least 2 member folders for an ensemble")
    for member in members:
        if not _inside_folder(member):
            raise ValueError(f"must hold folder names inside the model folder, got {member!r}")
    return members


def _flips(flips: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    if not flips or any(axis >= 0 for axes in flips for axis in axes):
        raise ValueError(
            f"must be lists of negative spatial axes, e.g. [[], [-1]], got {[list(axes) for axes in flips]!r}"
        )
    return flips


@dataclass(frozen=True)
class UncertaintySpec:
    """How `models.uncertainty.estimate` samples predictions: `method` "mc_dropout" (T passes of the head
    with dropout on; Gal and Ghahramani, ICML 2016), "ensemble" (one pass per member folder, each a model
    folder inside this one; Lakshminarayanan et al., NeurIPS 2017), "tta" (flips of the input; Wang et al.,
    Neurocomputing 2019) or "none" (one pass). `samples` is T for mc_dropout; `members` the ensemble's
    folders; `flips` the spatial axes flipped for tta (one list per augmented pass, [] = the input as is)."""

    method: UncertaintyMethod = "none"
    samples: Annotated[int, AfterValidator(_samples), Field(validate_default=True)] = 1
    members: Annotated[tuple[str, ...], AfterValidator(_members), Field(validate_default=True)] = ()
    flips: Annotated[tuple[tuple[int, ...], ...], AfterValidator(_flips)] = ((),)


@dataclass(frozen=True)
class Architecture:
    """A network name from `models.networks` and the keyword arguments that build it."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


def _labels(labels: list[str]) -> list[str]:
    if len(labels) < 2:
        raise ValueError("must name at least 2 classes")
    return labels


def _names(values: list[str]) -> list[str]:
    if not values or not all(values):
        raise ValueError(f"must be a non-empty list of strings, got {values!r}")
    return values


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(metrics.get("split"), str):
        raise ValueError("must name the split it was measured on ('split': str)")
    return metrics


def _weights(name: str) -> str:
    if not _inside_folder(name):
        raise ValueError(f"must be a file name inside the model folder, got {name!r}")
    return name


_inside = _weights


def _sha256(digest: str) -> str:
    digest = digest.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("must be 64 hex digits")
    return digest


@dataclass(frozen=True, kw_only=True)
class DomainSpec:
    """The images the model is for, beyond `modalities`: `body_part` in words ("eye fundus", "chest"),
    `body_parts` as DICOM BodyPartExamined codes ("EYE", "CHEST": routing uses them with the modalities; empty:
    any), the `view` where it matters ("PA/AP frontal"), and the `photometric` look of its training images
    ("colour fundus photograph", "grayscale radiograph, bone bright")."""

    body_part: Annotated[str, Field(min_length=1)]
    body_parts: list[Annotated[str, Field(pattern=r"^[A-Z0-9_ ]{1,16}$")]] = Field(default_factory=list)
    view: str = ""
    photometric: str = ""


OodMethod = Literal["mahalanobis", "energy"]


@with_config(ConfigDict(extra="forbid"))
class Rate(TypedDict):
    """A measured rate on `n` images (a false-rejection rate on in-domain images, say)."""

    rate: Annotated[float, Field(ge=0, le=1)]
    n: Annotated[int, Field(ge=0)]


@with_config(ConfigDict(extra="forbid"))
class ForeignSet(TypedDict):
    """The gate against one foreign set of `n` images: AUROC of the score (foreign = positive, against the
    in-domain test split) and the fraction of the set the threshold rejects."""

    auroc: Annotated[float, Field(ge=0, le=1)]
    rejected: Annotated[float, Field(ge=0, le=1)]
    n: Annotated[int, Field(ge=1)]


@dataclass(frozen=True, kw_only=True)
class OodSpec:
    """The model's input-domain (out-of-distribution) gate (`models.ood`): `method` scores an image (higher =
    less like the training data), `file` holds what was fitted (`models.ood.Gate`, checked against `sha256`
    when loaded); an image scoring above `threshold` is refused. `threshold` is the (1 -
    `target_false_rejection`) quantile of the in-domain validation scores; `false_rejection` is measured per
    in-domain split ("val", "test"), `foreign` per foreign set; `comparison` keeps the other method's numbers
    and why this one was kept; `fitted_on` names the training images the gate was fitted on."""

    method: OodMethod
    citation: Annotated[str, Field(min_length=1)]
    file: Annotated[str, AfterValidator(_inside)]
    sha256: Annotated[str, AfterValidator(_sha256)]
    threshold: float
    target_false_rejection: Annotated[float, Field(gt=0, lt=1)]
    false_rejection: dict[str, Rate]
    foreign: dict[str, ForeignSet] = field(default_factory=dict)
    comparison: dict[str, Any] = field(default_factory=dict)
    fitted_on: str = ""


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """One model, as its card.json declares it. `folder` is where the card was read from (not stored)."""

    name: str
    version: str
    task: Task
    labels: Annotated[list[str], AfterValidator(_names), AfterValidator(_labels)]
    modalities: Annotated[list[str], AfterValidator(_names)]
    input: InputSpec
    format: Format = "state_dict"
    # A TorchScript file carries its own architecture (`load_card` fills in "torchscript"); a state dict needs one.
    architecture: Architecture
    target_layer: str
    weights: Annotated[str, AfterValidator(_weights)]
    weights_sha256: Annotated[str, AfterValidator(_sha256)]
    calibration_temperature: Annotated[float, Field(gt=0)] = 1.0
    uncertainty_threshold: float | None = None
    uncertainty: UncertaintySpec = field(default_factory=UncertaintySpec)
    metrics: Annotated[dict[str, Any], AfterValidator(_metrics)]
    evaluation: dict[str, Any] = field(default_factory=dict)
    # False: the model is installed and listed but never run on incoming studies (a research model, or one
    # whose test metrics do not justify showing its predictions to readers).
    serve_automatically: bool = True
    training_data: str
    licence: str
    intended_use: str = DEFAULT_INTENDED_USE
    # One plain sentence for clinicians, shown with the model: what it was trained on, how well it does on
    # its test split, where it is near chance. Written by the recipe from its measured numbers.
    summary: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    # What the model is for beyond its modalities, and its input-domain gate: absent on older cards, which
    # then run without a gate (every routed image gets a prediction).
    domain: DomainSpec | None = None
    ood: OodSpec | None = None
    folder: Path

    @property
    def weights_path(self) -> Path:
        return self.folder / self.weights

    @property
    def ood_path(self) -> Path | None:
        """The gate's file, or None when the card has no gate."""
        return self.folder / self.ood.file if self.ood is not None else None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def as_dict(self) -> dict[str, Any]:
        """The card as plain JSON data, in card.json's layout; `folder` is left out (it is machine-local)."""
        return _CARD.dump_python(self, mode="json", exclude={"folder"})

    def verify_weights(self) -> None:
        """Raise `WeightsMismatchError` unless the weights file's sha256 equals the card's."""
        actual = file_sha256(self.weights_path)
        if actual != self.weights_sha256:
            raise WeightsMismatchError(
                f"model {self.name!r} ({self.folder}): sha256 of {self.weights} is {actual}, "
                f"the card says {self.weights_sha256}; the weights file was changed or replaced"
            )


_CARD = TypeAdapter(ModelCard)


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
    gate = card.ood_path
    if gate is not None and not gate.is_file():
        raise CardError(f"{path}: input-domain gate file {gate.name!r} is missing from {folder}")
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


_KINDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "an object",
    "dataclass_type": "an object",
}

_BOUNDS = {"greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}


def _card_from_dict(data: dict[str, Any], folder: Path) -> ModelCard:
    # null in card.json means "not given": defaults apply and a required field is missing.
    data = {key: value for key, value in data.items() if value is not None}
    for key in ("input", "uncertainty", "architecture", "domain", "ood"):
        if isinstance(data.get(key), dict):
            data[key] = {inner: value for inner, value in data[key].items() if value is not None}
    if data.get("format") == "torchscript":
        data.setdefault("architecture", {"name": "torchscript"})
    # Strict JSON types (no "1" for 1, no true for 1); the folder is the card's place, not part of card.json.
    try:
        return _CARD.validate_json(json.dumps({**data, "folder": str(folder)}), strict=True)
    except ValidationError as exc:
        raise CardError("; ".join(_reason(error) for error in exc.errors())) from None


def _reason(error: Any) -> str:
    """One pydantic error in the card's words: the field's dotted name and what it must be."""
    name = ".".join(str(part) for part in error["loc"])
    kind, value, context = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        return f"missing field {name!r}"
    if kind in _KINDS:
        return f"field {name!r} must be {_KINDS[kind]}, got {type(value).__name__}"
    if kind == "value_error":
        return f"field {name!r} {context['error']}"
    if kind == "literal_error":
        return f"field {name!r} must be one of [{context['expected'].replace(' or ', ', ')}], got {value!r}"
    if kind == "greater_than":
        return f"field {name!r} must be > {context['gt']}, got {value!r}"
    if kind in _BOUNDS:
        symbol, key = _BOUNDS[kind]
        return f"field {name!r} must be {symbol} {context[key]}, got {value!r}"
    if kind == "string_too_short":
        return f"field {name!r} must not be empty"
    return f"field {name!r}: {error['msg']}"
