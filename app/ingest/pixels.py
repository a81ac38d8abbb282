"""Pixels of a stored file: decode one frame, count frames, render for display.

Pure numpy / pydicom / Pillow (no torch, no database): the viewer, the ingest checks and the workers share it.
Decoders are pydicom's native ones plus the BSD/MIT plugins pylibjpeg-openjpeg and python-gdcm.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array
from pydicom.pixels.utils import get_expected_length, get_nr_frames

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
IMAGE_FORMATS = ("png", "jpeg")
# Percentiles of the automatic window when the header has none: robust to a few hot or dead pixels.
AUTO_WINDOW_PERCENTILES = (1.0, 99.0)


class PixelDecodeError(ValueError):
    """The file's pixels cannot be decoded; the message says why, for a person."""


def read_dicom(data: bytes, *, stop_before_pixels: bool = False) -> Dataset:
    """Parse a DICOM Part 10 file (preamble + 'DICM' + file meta) from bytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise PixelDecodeError(f"unreadable DICOM: {reason_of(exc)}") from exc


def has_pixel_data(ds: Dataset) -> bool:
    """True if the dataset carries image pixels (integer, float or double float)."""
    return any(keyword in ds for keyword in PIXEL_KEYWORDS)


def dataset_frame_count(ds: Dataset) -> int:
    """Number of frames of a dataset (1 when the header does not say)."""
    try:
        return max(1, int(get_nr_frames(ds, warn=False)))
    except (TypeError, ValueError):
        return 1


def frame_count(data: bytes, source_format: str) -> int:
    """Number of frames in a stored file; PNG and JPEG have one."""
    if source_format in IMAGE_FORMATS:
        return 1
    return dataset_frame_count(read_dicom(data, stop_before_pixels=True))


def load_frame(data: bytes, source_format: str, frame: int = 0) -> np.ndarray:
    """One frame: grayscale (H, W) float32 in modality units, colour (H, W, 3) uint8 RGB.

    MONOCHROME1 is returned as stored (not inverted); `to_display` inverts it.
    """
    if source_format in IMAGE_FORMATS:
        if frame != 0:
            raise PixelDecodeError(f"frame {frame} out of range: a {source_format} image has one frame")
        return load_image(data)
    return decode_frame(read_dicom(data), frame=frame)


def load_image(data: bytes) -> np.ndarray:
    """Decode a PNG or JPEG: grayscale (H, W) float32, colour (H, W, 3) uint8 RGB."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                gray = image.convert("L") if image.mode in ("1", "LA") else image
                return np.asarray(gray).astype(np.float32)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise PixelDecodeError(f"undecodable image: {reason_of(exc)}") from exc


def decode_frame(ds: Dataset, *, frame: int = 0) -> np.ndarray:
    """Decode one frame of a parsed dataset, with the modality LUT or palette applied (see load_frame)."""
    if not has_pixel_data(ds):
        raise PixelDecodeError("no image pixel data")
    count = dataset_frame_count(ds)
    if not 0 <= frame < count:
        raise PixelDecodeError(f"frame {frame} out of range: the file has {count} frame(s)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # YBR_* become RGB here (pydicom's default processing).
            array = pixel_array(ds, index=frame)
        photometric = str(ds.get("PhotometricInterpretation", "")).strip()
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(array, ds)
            return _rgb_to_uint8(rgb, bits=8 * rgb.dtype.itemsize)
        if array.ndim == 3:
            return _rgb_to_uint8(array, bits=int(ds.get("BitsStored") or 8 * array.dtype.itemsize))
        return _apply_modality(array, ds, frame=frame)
    except PixelDecodeError:
        raise
    except NotImplementedError as exc:
        raise PixelDecodeError(f"no decoder for this encoding: {reason_of(exc)}") from exc
    except Exception as exc:  # decoder plugins raise RuntimeError, ValueError, AttributeError...
        raise PixelDecodeError(f"undecodable pixel data: {reason_of(exc)}") from exc


def check_decodable(ds: Dataset) -> np.ndarray:
    """Frame 0, decoded (see load_frame); PixelDecodeError unless frame 0 and the last frame decode and native
    data covers every frame."""
    if not has_pixel_data(ds):
        raise PixelDecodeError("no image pixel data")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if "PixelData" in ds and syntax is not None and not syntax.is_encapsulated:
        expected = get_expected_length(ds, "bytes")
        actual = len(ds.PixelData)
        if actual < expected:
            raise PixelDecodeError(f"pixel data is truncated: {actual} of {expected} bytes")
    first = decode_frame(ds, frame=0)
    count = dataset_frame_count(ds)
    if count > 1 and syntax is not None and syntax.is_encapsulated:
        # A cut-off multi-frame codestream still decodes frame 0: the last frame shows the truncation.
        decode_frame(ds, frame=count - 1)
    return first


def header_window(ds: Dataset, *, frame: int = 0) -> tuple[float | None, float | None]:
    """The first window (center, width) of the header, or of the enhanced frame's VOI LUT; None if absent."""
    for item in (_functional_item(ds, "FrameVOILUTSequence", frame=frame), ds):
        if item is None or "WindowCenter" not in item or "WindowWidth" not in item:
            continue
        center, width = _first_number(item.WindowCenter), _first_number(item.WindowWidth)
        if center is not None and width is not None and width > 0:
            return center, width
    return None, None


def to_display(
    array: np.ndarray, *, photometric: str, window_center: float | None, window_width: float | None
) -> np.ndarray:
    """8-bit rendering: grayscale windowed (header window, else 1st-99th percentile), MONOCHROME1 inverted.

    Args:
        array: (H, W) grayscale in modality units or (H, W, 3) RGB, as returned by load_frame.
    Returns:
        uint8 array of the same shape.
    """
    if array.ndim == 3:
        return array if array.dtype == np.uint8 else _rgb_to_uint8(array, bits=8 * array.dtype.itemsize)
    values = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if window_center is not None and window_width is not None and window_width > 0:
        scaled = _linear_window(values, center=window_center, width=window_width)
    else:
        low, high = _auto_range(values)
        scaled = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    display = np.rint(scaled * 255.0).astype(np.uint8)
    if photometric.strip().upper() == "MONOCHROME1":
        display = 255 - display
    return display


def _linear_window(values: np.ndarray, *, center: float, width: float) -> np.ndarray:
    # DICOM PS3.3 C.11.2.1.2.1 "LINEAR": width 1 is a threshold at center - 0.5.
    if width <= 1:
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _auto_range(values: np.ndarray) -> tuple[float, float]:
    # Percentiles of a strided sample: the same window for a fraction of the time on large radiographs.
    step = max(1, int(math.sqrt(values.size / 1_000_000)))
    sample = values[::step, ::step]
    low, high = (float(v) for v in np.percentile(sample, AUTO_WINDOW_PERCENTILES))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    return low, high


def _apply_modality(array: np.ndarray, ds: Dataset, *, frame: int) -> np.ndarray:
    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(array, ds).astype(np.float32)
    transform = _functional_item(ds, "PixelValueTransformationSequence", frame=frame) or ds
    slope = _first_number(transform.get("RescaleSlope"))
    intercept = _first_number(transform.get("RescaleIntercept"))
    values = array.astype(np.float32)
    if slope is not None and intercept is not None:
        values = values * np.float32(slope) + np.float32(intercept)
    return values


def _functional_item(ds: Dataset, sequence: str, *, frame: int) -> Dataset | None:
    """The first item of a functional group sequence for this frame (per-frame first, then shared)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if not items or index >= len(items):
            continue
        inner = items[index].get(sequence)
        if inner:
            return inner[0]
    return None


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str | bytes) and hasattr(value, "__getitem__"):
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _rgb_to_uint8(array: np.ndarray, *, bits: int) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    top = float(2 ** max(1, min(bits, 32)) - 1)
    return np.rint(np.clip(array.astype(np.float64), 0, top) * (255.0 / top)).astype(np.uint8)


def reason_of(exc: BaseException) -> str:
    """A one-line, bounded reason from an exception, for error messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
