"""Copy the IDRiD lesion data this project needs from /work/shared/data/idrid into data/idrid, downscaled.

Per image: the fundus-cropped photograph with the drawn optic-disc contour inpainted, about 1024 px wide
(JPEG), and its lesion masks aligned with it (one PNG, one bit per lesion, see
`models.datasets.IDRID_LESIONS`). IDRiD_55 comes from the pristine photograph, cropped to the fundus the
same way, with its hard-exudate mask only. Source: IDRiD (Porwal et al., IEEE DataPort 2018,
doi 10.21227/H25W98), CC BY 4.0.

Run once: `python -m models.recipes.idrid_data /work/shared/data/idrid data/idrid`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from models.datasets import IDRID_LESIONS

logger = logging.getLogger(__name__)

WIDTH = 1024
COLOURS = {"microaneurysms": (255, 255, 255), "haemorrhages": (255, 0, 0), "hard_exudates": (0, 0, 255),
           "soft_exudates": (0, 255, 0), "optic_disc": (255, 255, 0)}
# The drawn contour is pure green; fundus colours are red-dominant, so "G exceeds R and B by 60" is safe.
_GREEN_MARGIN = 60
_INPAINT_RADIUS = 4


def green_contour(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of the drawn pure-green contour (G high, R and B low)."""
    pixels = rgb.astype(np.int16)
    return (pixels[..., 1] - np.maximum(pixels[..., 0], pixels[..., 2]) > _GREEN_MARGIN) & (pixels[..., 1] > 100)


def inpaint_median(rgb: np.ndarray, mask: np.ndarray, radius: int = _INPAINT_RADIUS) -> np.ndarray:
    """Replace masked pixels of (H, W, 3) uint8 by the median of the unmasked ones within `radius`."""
    out = rgb.copy()
    padded = np.pad(rgb, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    valid = np.pad(~mask, radius, mode="constant", constant_values=False)
    for y, x in zip(*np.nonzero(mask), strict=True):
        window = padded[y : y + 2 * radius + 1, x : x + 2 * radius + 1]
        keep = valid[y : y + 2 * radius + 1, x : x + 2 * radius + 1]
        if keep.any():
            out[y, x] = np.median(window[keep], axis=0)
    return out


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


def _any_resize(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)) > 0


def _save(dest: Path, name: str, rgb: np.ndarray, lesions: dict[str, np.ndarray], contour: np.ndarray | None) -> None:
    height, width = rgb.shape[:2]
    size = (WIDTH, round(height * WIDTH / width))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
    if contour is not None:
        small = inpaint_median(small, _dilate(_any_resize(contour, size), 1))
    bits = np.zeros(small.shape[:2], np.uint8)
    for lesion, mask in lesions.items():
        bits |= _any_resize(mask, size).astype(np.uint8) * IDRID_LESIONS[lesion]
    Image.fromarray(small).save(dest / f"{name}.jpg", quality=92)
    Image.fromarray(bits).save(dest / f"{name}_masks.png", optimize=True)


def prepare_data(source: Path, dest: Path) -> None:
    """Write data/idrid from the shared IDRiD folder (cropped/, masks/, pristine/)."""
    dest.mkdir(parents=True, exist_ok=True)
    offsets = json.loads((source / "cropped" / "crop_offsets.json").read_text())
    for i in range(1, 25):
        key = f"{i:02d}"
        rgb = np.asarray(Image.open(source / "cropped" / f"IDRiD_{key}.jpg").convert("RGB"))
        colours = np.asarray(Image.open(source / "masks" / f"IDRiD_{key}.png").convert("RGB"))
        x, width = offsets[key]["x_offset"], offsets[key]["width"]
        colours = colours[:, x : x + width]
        if colours.shape[:2] != rgb.shape[:2]:
            raise ValueError(f"IDRiD_{key}: mask {colours.shape} does not fit image {rgb.shape} after cropping")
        lesions = {name: np.all(colours == colour, axis=2) for name, colour in COLOURS.items()}
        _save(dest, f"IDRiD_{key}", rgb, lesions, green_contour(rgb))
        logger.info("IDRiD_%s done", key)
    rgb = np.asarray(Image.open(source / "pristine" / "IDRiD_55.jpg").convert("RGB"))
    exudates = np.asarray(Image.open(source / "pristine" / "IDRiD_55_EX.tif")) > 0
    # Crop the black side margins as the shared cropped set does (columns where the fundus is).
    columns = np.flatnonzero((rgb.max(axis=2) > 20).mean(axis=0) > 0.01)
    left, right = int(columns[0]), int(columns[-1]) + 1
    _save(dest, "IDRiD_55", rgb[:, left:right], {"hard_exudates": exudates[:, left:right]}, None)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    prepare_data(Path(sys.argv[1]), Path(sys.argv[2]))
