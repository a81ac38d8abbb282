"""Reading training data files, with clear errors for broken ones.

RetinaMNIST (MedMNIST v2; Yang et al., Sci Data 2023; CC BY 4.0): an .npz with `{split}_images`
(N, 28, 28, 3) uint8 and `{split}_labels` (N, 1) uint8 DR grades 0-4, for splits train / val / test.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models import grayscale

if TYPE_CHECKING:
    from models.card import FixedWindow, Windowing

SPLITS = ("train", "val", "test")


class TrainingDataError(ValueError):
    """A training data file is missing, unreadable or not what the recipe expects; says which and why."""


@dataclass(frozen=True)
class ImageSplit:
    """images (N, H, W, C) uint8 and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.size)

    def head(self, n: int | None) -> ImageSplit:
        """The first n samples (all when n is None)."""
        return self if n is None else ImageSplit(self.images[:n], self.labels[:n])


def load_medmnist(path: Path, *, num_classes: int, size: int = 28, channels: int = 3) -> dict[str, ImageSplit]:
    """The train / val / test splits of a MedMNIST .npz file, checked.

    Raises:
        TrainingDataError: the file is missing, not a readable .npz (e.g. an interrupted download), lacks
            a split, or holds images or labels of the wrong shape, type or range.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {split: _split(archive, split, num_classes, (size, size, channels)) for split in SPLITS}
    except TrainingDataError as exc:
        raise TrainingDataError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        # np.load raises these for a truncated or corrupt archive, sometimes only when a member is read.
        raise TrainingDataError(
            f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}); is the download complete?"
        ) from None


def _split(archive: np.lib.npyio.NpzFile, split: str, num_classes: int, shape: tuple[int, ...]) -> ImageSplit:
    for key in (f"{split}_images", f"{split}_labels"):
        if key not in archive.files:
            raise TrainingDataError(f"array {key!r} is missing (found {sorted(archive.files)})")
    images = archive[f"{split}_images"]
    labels = archive[f"{split}_labels"]
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        raise TrainingDataError(f"{split}_images must be (N, {', '.join(map(str, shape))}) uint8, "
                                f"got {images.shape} {images.dtype}")
    labels = labels.reshape(-1)
    if labels.size != images.shape[0] or labels.size == 0:
        raise TrainingDataError(f"{split}: {images.shape[0]} images but {labels.size} labels")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes:
        raise TrainingDataError(f"{split}_labels must be integers in [0, {num_classes}), "
                                f"got {labels.dtype} in [{labels.min()}, {labels.max()}]")
    return ImageSplit(images=images, labels=labels.astype(np.int64))


# IDRiD lesion segmentation set (Porwal et al., IEEE DataPort 2018, doi 10.21227/H25W98; CC BY 4.0), as
# copied into data/idrid by `models.recipes.idrid_data.prepare_data`: IDRiD_XX.jpg (RGB, fundus-cropped, about
# 1024 px wide, the green optic-disc contour inpainted) and IDRiD_XX_masks.png (uint8, one bit per lesion).
IDRID_LESIONS = {"microaneurysms": 1, "haemorrhages": 2, "hard_exudates": 4, "soft_exudates": 8, "optic_disc": 16}
IDRID_TRAIN = tuple(f"IDRiD_{i:02d}" for i in range(1, 17))
IDRID_HELDOUT = tuple(f"IDRiD_{i:02d}" for i in range(17, 25)) + ("IDRiD_55",)
IDRID_DIR = Path(__file__).resolve().parent.parent / "data" / "idrid"


@dataclass(frozen=True)
class LesionImage:
    """image (H, W, 3) uint8 RGB; masks: lesion name -> (H, W) bool; `annotated`: the lesion types whose
    masks were drawn for this image (IDRiD_55 has hard exudates only: other masks are empty, not absent)."""

    image: np.ndarray
    masks: dict[str, np.ndarray]
    name: str
    annotated: tuple[str, ...]


def load_idrid(
    names: tuple[str, ...] | list[str], *, folder: Path = IDRID_DIR, size: int | None = None
) -> list[LesionImage]:
    """IDRiD images with their lesion masks, from `folder` (see `IDRID_DIR`).

    Args:
        names: e.g. `IDRID_TRAIN` (01-16: train and tune) or `IDRID_HELDOUT` (17-24 and 55: report only).
        size: resize so that the longer side is `size` px (image bilinear, masks by "any lesion pixel"),
            or None for the stored ~1024 px.

    Raises:
        TrainingDataError: a file is missing or unreadable.
    """
    from PIL import Image  # Pillow only here: the rest of the module needs numpy alone

    items = []
    for name in names:
        try:
            image = Image.open(folder / f"{name}.jpg").convert("RGB")
            bits = Image.open(folder / f"{name}_masks.png")
            bits.load()
        except OSError as exc:
            raise TrainingDataError(
                f"{folder}: cannot read {name} ({exc}); run models.recipes.idrid_data.prepare_data"
            ) from None
        annotated = ("hard_exudates",) if name == "IDRiD_55" else tuple(IDRID_LESIONS)
        if size is not None:
            scale = size / max(image.size)
            shape = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
            image = image.resize(shape, Image.Resampling.BILINEAR, reducing_gap=None)
        array = np.asarray(bits)
        masks = {}
        for lesion, bit in IDRID_LESIONS.items():
            mask = (array & bit) > 0
            if size is not None:
                # "Any lesion pixel" downscaling: a 2-px microaneurysm must not vanish.
                box = Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size, Image.Resampling.BOX)
                mask = np.asarray(box) > 0
            masks[lesion] = mask
        items.append(LesionImage(np.asarray(image), masks, name, annotated))
    return items


def idrid_heldout(size: int | None = None) -> list[tuple[np.ndarray, dict[str, np.ndarray], str]]:
    """The held-out IDRiD images (17-24 and 55) as (image (H, W, 3) uint8, {lesion: (H, W) bool}, name),
    for the localisation of explanations. Never train or tune on them. IDRiD_55 carries only its
    hard-exudate mask (its other lesions were not annotated; their masks are left out).
    `size`: the longer side in px (None: the stored ~1024 px)."""
    return [
        (item.image, {k: v for k, v in item.masks.items() if k in item.annotated}, item.name)
        for item in load_idrid(IDRID_HELDOUT, size=size)
    ]


def window_grayscale(
    pixels: np.ndarray,
    windowing: Windowing | FixedWindow,
    *,
    photometric: str = "MONOCHROME2",
    invert_monochrome1: bool = False,
    voi: grayscale.Voi | None = None,
) -> np.ndarray:
    """(H, W) grayscale pixels in modality units -> (H, W) float32 in [0, 1], as a card's `input.windowing`
    and `input.invert_monochrome1` say (see `models.card.InputSpec`), through `models.grayscale`: the same
    pydicom VOI functions and MONOCHROME1 inversion as the viewer's display.

    The order is DICOM's (PS3.4 N.2.1): VOI first, in modality units, then the MONOCHROME1 inversion
    (presentation), so that a window's center and width mean the same whatever the photometric.

    Args:
        pixels: (H, W) any numeric dtype (after the DICOM modality LUT or rescale slope/intercept).
        windowing: "minmax", "percentile" (1st-99th), "dicom" (the file's own VOI `voi`: its VOI LUT, else its
            first window with its VOI LUT Function; as "percentile" when the file has none) or
            {"center": c, "width": w}. "minmax", "percentile" and a fixed window map [c - w/2, c + w/2]
            linearly onto [0, 1] (LINEAR_EXACT) and clip outside it.
        photometric: the file's PhotometricInterpretation; MONOCHROME1 is inverted when `invert_monochrome1`.
        voi: the file's VOI LUT Module for this frame (`models.grayscale.frame_voi`), used by "dicom".
    """
    values = np.asarray(pixels, dtype=np.float32)
    transform = _voi_transform(values, windowing, voi)
    # A constant image carries no contrast: zeros rather than a division by zero.
    scaled = np.zeros_like(values) if transform is None else grayscale.voi_unit(values, transform)
    if invert_monochrome1:
        scaled = grayscale.present(scaled, photometric=photometric)
    return scaled.astype(np.float32)


def _voi_transform(
    values: np.ndarray, windowing: Windowing | FixedWindow, voi: grayscale.Voi | None
) -> grayscale.Window | grayscale.Lut | None:
    if windowing == "dicom":
        if voi is not None and voi.default is not None:
            return voi.default
        windowing = "percentile"
    if isinstance(windowing, dict):
        return grayscale.Window(center=windowing["center"], width=windowing["width"], function="LINEAR_EXACT")
    if windowing == "percentile":
        low, high = (float(v) for v in np.percentile(values, [1.0, 99.0]))
    elif windowing == "minmax":
        low, high = float(values.min()), float(values.max())
    else:
        raise ValueError(f"unknown windowing {windowing!r}")
    if not high > low:
        return None
    return grayscale.Window(center=(low + high) / 2, width=high - low, function="LINEAR_EXACT")
