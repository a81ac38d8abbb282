"""Pixels -> network input, as a model card's `input` spec says.

`prepare(image, card)` takes an image as decoded from its file, either (H, W) grayscale (float32 from DICOM,
in modality units: the rescale slope/intercept already applied by the decoder, MONOCHROME1 not inverted) or
(H, W, 3) uint8 RGB (JPEG/PNG, DICOM OP/SC), and returns the (1, C, h, w) float32 tensor the network
expects. Steps, in order:

1. scale to [0, 1]: uint8 RGB by /255 (the range photographs are taken in), other RGB by min-max; grayscale
   as the card's `input.windowing` says (min-max by default, the 1st-99th percentile, a fixed window, or the
   file's own VOI LUT or window with its VOI LUT Function), then MONOCHROME1 inverted to MONOCHROME2 when
   `input.invert_monochrome1` is set (`models.datasets.window_grayscale`, through `models.grayscale`: the
   viewer's pydicom path); the caller passes the file's photometric interpretation and VOI LUT Module;
2. optional crop (`input.crop`): "fundus" crops a fundus photograph to the bounding box of the fundus
   (thresholding the dark background) and pads it to a square with black, keeping its aspect ratio;
   RetinaMNIST images (MedMNIST v2) are fundus-centred squares with little border, while a full
   photograph such as IDRiD's 4288x2848 has wide black margins that would shrink the fundus to a few pixels;
3. colour: RGB -> grayscale by ITU-R BT.601 luma, grayscale -> RGB by repeating the channel;
4. resize to `input.size` with antialiased bilinear interpolation (area-like when downscaling, so a
   3000-px photograph does not alias down to 28 px);
5. normalise each channel: (x - mean) / std.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.card import InputSpec, ModelCard
from models.datasets import window_grayscale
from models.grayscale import Voi

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# A fundus pixel is brighter than this fraction of the image's bright level (99th percentile); the
# background of fundus cameras is near black, with JPEG noise of a few grey levels.
_FUNDUS_THRESHOLD = 0.1
_FUNDUS_MIN_LEVEL = 0.03
# A row or column belongs to the fundus when this fraction of its pixels does: stray bright pixels
# (noise, burnt-in text) do not widen the box.
_FUNDUS_MIN_FRACTION = 0.01


@dataclass(frozen=True)
class InputRegion:
    """Where the network's input grid lies on the original image, in image pixels.

    The input covers rows [top, top + height) and columns [left, left + width); with the fundus crop's
    black padding the region may reach outside the image (negative top, or past the last row).
    """

    image_shape: tuple[int, int]
    top: int
    left: int
    height: int
    width: int

    def on_image_of_shape(self, shape: tuple[int, int]) -> InputRegion:
        """The same region on the image at another scale (`shape` its rows, columns): where a reduced decode's
        region lies on the full image."""
        rows, columns = shape
        if (rows, columns) == self.image_shape:
            return self
        along_rows, along_columns = rows / self.image_shape[0], columns / self.image_shape[1]
        return InputRegion(
            (rows, columns),
            round(self.top * along_rows),
            round(self.left * along_columns),
            max(1, round(self.height * along_rows)),
            max(1, round(self.width * along_columns)),
        )


# Image pixels per input pixel a model's input is drawn from, at least, along the image's shorter side: a JPEG
# decode may reduce the image to this (app/ingest/pixels.load_model_frame). bench/bounded_decode.py on 51 real
# IDRiD photographs, DR grader (28 px): at 8, probabilities within 0.0097 of the full decode's and every label
# the same, decode + prepare 0.03 s instead of 0.32 s; at 2, 0.037 and one label of 51 changed.
DECODE_OVERSAMPLING = 8


def decode_min_side(card: ModelCard) -> int:
    """The fewest pixels along an image's shorter side that the model's input may be prepared from: the fundus
    crop's square and a radiograph's whole frame span about that side."""
    return DECODE_OVERSAMPLING * max(card.input.size)


def prepare(
    image: np.ndarray,
    card: ModelCard,
    *,
    device: str | torch.device = "cpu",
    photometric: str = "",
    voi: Voi | None = None,
) -> torch.Tensor:
    """The network input for one 2D image.

    Args:
        image: (H, W) grayscale in modality units (any numeric dtype) or (H, W, 3) RGB (uint8, or any
            dtype: min-max scaled).
        card: the model's card; its `input` gives windowing, colour, size, crop, mean and std.
        device: where the returned tensor lives.
        photometric: the file's PhotometricInterpretation ("MONOCHROME1" is inverted if the card says so).
        voi: the file's VOI LUT Module for this frame (`models.grayscale.frame_voi`), for `input.windowing`
            "dicom".

    Returns:
        (1, C, h, w) float32, C = `card.input.channels`, (h, w) = `card.input.size`.

    Raises:
        ValueError: the image is not (H, W) or (H, W, 3), is empty, or the card asks for a 3D input.
    """
    return prepare_with_region(image, card, device=device, photometric=photometric, voi=voi)[0]


def prepare_with_region(
    image: np.ndarray,
    card: ModelCard,
    *,
    device: str | torch.device = "cpu",
    photometric: str = "",
    voi: Voi | None = None,
) -> tuple[torch.Tensor, InputRegion]:
    """`prepare`, and the region of the image the input covers (to map attributions back onto the image)."""
    spec = card.input
    if len(spec.size) != 2:
        raise ValueError(f"prepare() makes 2D inputs; model {card.name!r} takes size {list(spec.size)}")
    if spec.crop == "fundus" and spec.colour == "rgb" and _is_rgb8(image):
        x, region = _fundus_photograph(np.asarray(image), spec)
        return _resize_and_normalise(x, spec).to(device), region
    pixels = to_unit_range(image, spec, photometric=photometric, voi=voi)
    image_shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    region = InputRegion(image_shape, 0, 0, *image_shape)
    if spec.crop == "fundus":
        pixels, region = crop_fundus_with_region(pixels)
    pixels = convert_colour(pixels, spec.colour)
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    return _resize_and_normalise(x, spec).to(device), region


def _resize_and_normalise(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    x = F.interpolate(x, size=tuple(spec.size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def _is_rgb8(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and image.size > 0


# uint8 -> [0, 1] as `to_unit_range` scales a photograph (float32 division by 255), one entry per level.
_UNIT_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)


def _fundus_photograph(image: np.ndarray, spec: InputSpec) -> tuple[torch.Tensor, InputRegion]:
    """Steps 1-3 for an 8-bit RGB photograph and the fundus crop, the same values as `to_unit_range` +
    `crop_fundus_with_region` + `convert_colour` with less memory traffic: the box is found on the 8-bit
    levels and only the box is scaled, straight into the padded (1, 3, side, side) input. A 4288 x 2848
    photograph took 0.4-0.7 s the long way (four passes over 146 MB of float32), about a quarter this way."""
    image_shape = (int(image.shape[0]), int(image.shape[1]))
    level = np.maximum(np.maximum(image[:, :, 0], image[:, :, 1]), image[:, :, 2])
    box = _fundus_box(_UNIT_LEVELS[level])
    if box is None:
        x = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)[None]
        x = x.to(torch.float32).div_(255)
        return x, InputRegion(image_shape, 0, 0, *image_shape)
    (row0, row1), (col0, col1) = box
    height, width = row1 - row0, col1 - col0
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    x = torch.zeros((1, 3, side, side), dtype=torch.float32)
    inside = torch.from_numpy(np.require(image[row0:row1, col0:col1], requirements=["C", "W"])).permute(2, 0, 1)
    x[0, :, top : top + height, left : left + width] = inside.to(torch.float32).div_(255)
    return x, InputRegion(image_shape, row0 - top, col0 - left, side, side)


def to_image_space(attribution: torch.Tensor, region: InputRegion, *, max_side: int = 512) -> torch.Tensor:
    """Resample a map over the network input onto the original image's frame.

    Args:
        attribution: (B, 1, h, w) over the network input.
        region: where that input lies on the image (from `prepare_with_region`).
        max_side: the longer side of the result; the image's aspect ratio is kept.

    Returns:
        (B, 1, H', W') aligned with the whole image (zero where the input did not cover it), raw values
        resampled bilinearly: a display can stretch it over the image as it is.
    """
    rows, cols = region.image_shape
    scale = min(1.0, max_side / max(rows, cols))
    out_rows, out_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    top, left = round(region.top * scale), round(region.left * scale)
    height, width = max(1, round(region.height * scale)), max(1, round(region.width * scale))
    resized = F.interpolate(attribution.float(), size=(height, width), mode="bilinear", align_corners=False)
    canvas = attribution.new_zeros((attribution.shape[0], 1, out_rows, out_cols), dtype=torch.float32)
    # Paste the part of the region that falls inside the image.
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, out_rows), min(left + width, out_cols)
    if y1 > y0 and x1 > x0:
        canvas[:, :, y0:y1, x0:x1] = resized[:, :, y0 - top : y1 - top, x0 - left : x1 - left]
    return canvas


def to_unit_range(
    image: np.ndarray,
    spec: InputSpec | None = None,
    *,
    photometric: str = "",
    voi: Voi | None = None,
) -> np.ndarray:
    """(H, W) or (H, W, 3) pixels -> (H, W, 1) or (H, W, 3) float32 in [0, 1] (see the module's step 1).

    Grayscale is windowed as `spec` says (min-max, no inversion without a spec); RGB ignores the windowing.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an (H, W) grayscale or (H, W, 3) RGB image, got shape {image.shape}")
    if image.size == 0:
        raise ValueError("the image is empty")
    if image.ndim == 2:
        windowing, invert = (spec.windowing, spec.invert_monochrome1) if spec else ("minmax", False)
        gray = window_grayscale(image, windowing, photometric=photometric, invert_monochrome1=invert, voi=voi)
        return gray[:, :, None]
    if image.dtype == np.uint8:
        pixels = image.astype(np.float32) / 255.0
    else:
        pixels = image.astype(np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        # A constant image carries no contrast: map it to zeros rather than divide by zero.
        pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    return pixels


def crop_fundus(pixels: np.ndarray) -> np.ndarray:
    """Crop (H, W, C) [0, 1] pixels to the fundus's bounding box and pad it to a centred square with black.

    Returns the pixels unchanged when no fundus is found (an all-dark image).
    """
    return crop_fundus_with_region(pixels)[0]


def crop_fundus_with_region(pixels: np.ndarray) -> tuple[np.ndarray, InputRegion]:
    """`crop_fundus`, and where the padded square lies on the image."""
    image_shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    # The brightest channel of each pixel, channel by channel: numpy's max over a last axis of 3 took 0.36 s
    # on a 4288 x 2848 photograph, these maxima 0.03 s (the same values).
    level = pixels[:, :, 0]
    for channel in range(1, pixels.shape[2]):
        level = np.maximum(level, pixels[:, :, channel])
    found = _fundus_box(level)
    if found is None:
        return pixels, InputRegion(image_shape, 0, 0, *image_shape)
    (row0, row1), (col0, col1) = found
    box = pixels[row0:row1, col0:col1]
    height, width, channels = box.shape
    side = max(height, width)
    square = np.zeros((side, side, channels), dtype=pixels.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = box
    region = InputRegion(image_shape, row0 - top, col0 - left, side, side)
    return square, region


def _fundus_box(level: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The fundus's rows [row0, row1) and columns [col0, col1) from each pixel's brightest channel in [0, 1];
    None for an all-dark image."""
    threshold = max(_FUNDUS_MIN_LEVEL, _FUNDUS_THRESHOLD * float(np.quantile(level, 0.99)))
    mask = level > threshold
    rows = np.flatnonzero(mask.mean(axis=1) > _FUNDUS_MIN_FRACTION)
    cols = np.flatnonzero(mask.mean(axis=0) > _FUNDUS_MIN_FRACTION)
    if rows.size == 0 or cols.size == 0:
        return None
    return (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)


def convert_colour(pixels: np.ndarray, colour: str) -> np.ndarray:
    """(H, W, 1|3) -> (H, W, 3) for "rgb" or (H, W, 1) for "grayscale"."""
    channels = pixels.shape[2]
    if colour == "rgb":
        return pixels if channels == 3 else np.repeat(pixels, 3, axis=2)
    if colour == "grayscale":
        return pixels if channels == 1 else (pixels @ _LUMA)[:, :, None]
    raise ValueError(f"unknown colour {colour!r}")
