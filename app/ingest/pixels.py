"""Pixels of a stored file: decode one frame, count frames, render for display.

Pure numpy / pydicom / Pillow (no torch, no database): the viewer, the ingest checks and the workers share it.
Decoders are pydicom's native ones plus the BSD/MIT plugins pylibjpeg-openjpeg and python-gdcm. The modality LUT,
the VOI LUT and the MONOCHROME1 inversion are `models.grayscale`'s (pydicom's LUT functions), the same path as a
model's input.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_color_lut, convert_color_space, pixel_array
from pydicom.pixels.utils import get_expected_length, get_nr_frames
from pydicom.uid import HTJ2K, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, JPEG2000Lossless, JPEGBaseline8Bit

from models import grayscale

logger = logging.getLogger(__name__)

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
IMAGE_FORMATS = ("png", "jpeg")
# Percentiles of the automatic window when the header has none: robust to a few hot or dead pixels.
AUTO_WINDOW_PERCENTILES = (1.0, 99.0)
_OPENJPEG_FIRST = {JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K}
# JPEG Baseline DICOM decoded at a reduced DCT scale for a model (load_model_frame): samples, photometric.
_REDUCIBLE_JPEG = {(1, "MONOCHROME2"), (3, "YBR_FULL_422"), (3, "YBR_FULL"), (3, "RGB")}


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
    return load_frame_and_voi(data, source_format, frame)[0]


def load_frame_and_voi(data: bytes, source_format: str, frame: int = 0) -> tuple[np.ndarray, grayscale.Voi | None]:
    """`load_frame`, and the frame's VOI LUT Module (windows, VOI LUT Function, VOI LUT Sequence) from the same
    parse of the file; None for PNG/JPEG, colour, or a header without one."""
    if source_format in IMAGE_FORMATS:
        if frame != 0:
            raise PixelDecodeError(f"frame {frame} out of range: a {source_format} image has one frame")
        return load_image(data), None
    ds = read_dicom(data)
    array = decode_frame(ds, frame=frame)
    return array, frame_voi(ds, frame=frame) if array.ndim == 2 else None


def frame_voi(ds: Dataset, *, frame: int = 0) -> grayscale.Voi | None:
    """The VOI LUT Module of one frame of a parsed dataset (`models.grayscale.frame_voi`); None if unreadable."""
    try:
        return grayscale.frame_voi(ds, frame=frame)
    except Exception as exc:  # a corrupt VOI element raises on first access, whatever its type
        logger.info("VOI LUT Module unreadable, the automatic window is shown: %s", reason_of(exc))
        return None


@dataclass(frozen=True)
class ModelFrame:
    """Frame 0 as a model takes it (`load_model_frame`): the pixels, maybe at a reduced scale, their VOI LUT
    Module, and the shape (rows, columns) of the image itself, the frame the model's maps are stored in."""

    array: np.ndarray
    voi: grayscale.Voi | None
    full_shape: tuple[int, int]


def load_model_frame(data: bytes, source_format: str, *, min_side: int) -> ModelFrame:
    """Frame 0 for a model whose input needs `min_side` pixels along the image's shorter side: a JPEG is decoded
    at the coarsest DCT scale (1/2, 1/4 or 1/8: libjpeg's scaled inverse DCT, a fraction of the work of a full
    decode) that keeps at least that many; other files in full (see load_frame_and_voi)."""
    if source_format in IMAGE_FORMATS:
        array, full_shape = _decode_image(data, min_side=min_side)  # a PNG decodes in full
        return ModelFrame(array, None, full_shape)
    ds = read_dicom(data)
    reduced = _reduced_jpeg_baseline(ds, min_side=min_side)
    array = reduced if reduced is not None else decode_frame(ds, frame=0)
    voi = frame_voi(ds, frame=0) if array.ndim == 2 else None
    return ModelFrame(array, voi, (int(ds.Rows), int(ds.Columns)))


def _reduced_jpeg_baseline(ds: Dataset, *, min_side: int) -> np.ndarray | None:
    """Frame 0 of a single-frame 8-bit JPEG Baseline dataset (fundus cameras' DICOM) at the coarsest DCT scale
    keeping `min_side`, decoded as pydicom's Pillow decoder does (the YCbCr samples as stored, then pydicom's
    colour conversion); None where that does not apply or fails (the caller decodes in full)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if (
        ds.file_meta.get("TransferSyntaxUID") != JPEGBaseline8Bit
        or "PixelData" not in ds
        or dataset_frame_count(ds) != 1
        or int(ds.get("BitsAllocated") or 0) != 8
        or (samples, photometric) not in _REDUCIBLE_JPEG
        or min(int(ds.Rows), int(ds.Columns)) <= min_side
    ):
        return None
    try:
        stream = next(generate_frames(ds.PixelData, number_of_frames=1))
        with Image.open(io.BytesIO(stream), formats=("JPEG",)) as image:
            # pydicom keeps a colour stream's samples as stored unless an Adobe marker says how they are held.
            _draft(image, "YCbCr" if samples == 3 and "adobe_transform" not in image.info else image.mode, min_side)
            image.load()
            array = np.asarray(image)
        if samples == 1:
            return grayscale.modality_values(array, ds, frame=0)
        if photometric != "RGB":
            array = convert_color_space(array, "YBR_FULL", "RGB")
        return _rgb_to_uint8(array, bits=8)
    except Exception as exc:  # a stream Pillow cannot scale: the full decode says what is wrong, if anything
        logger.info("JPEG Baseline frame not decoded at a reduced scale: %s", reason_of(exc))
        return None


def _draft(image: Image.Image, mode: str, min_side: int) -> None:
    """Have Pillow decode the JPEG `image` in `mode` at the coarsest DCT scale whose shorter side keeps `min_side`
    pixels (draft() picks the smallest scale whose size is at least the one asked for)."""
    ratio = min_side / min(image.size)
    image.draft(mode, (math.ceil(image.size[0] * ratio), math.ceil(image.size[1] * ratio)))


def load_image(data: bytes) -> np.ndarray:
    """Decode a PNG or JPEG: grayscale (H, W) float32, colour (H, W, 3) uint8 RGB."""
    return _decode_image(data, min_side=None)[0]


def _decode_image(data: bytes, *, min_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """`load_image`, a JPEG at the coarsest DCT scale keeping `min_side` pixels on its shorter side unless None;
    and the image's own (rows, columns)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            columns, rows = image.size
            if min_side is not None and image.format == "JPEG" and min(rows, columns) > min_side:
                _draft(image, image.mode, min_side)
            image.load()
            if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                gray = image.convert("L") if image.mode in ("1", "LA") else image
                return np.asarray(gray).astype(np.float32), (rows, columns)
            return np.asarray(image.convert("RGB"), dtype=np.uint8), (rows, columns)
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
            array = frame_samples(ds, frame)
        photometric = str(ds.get("PhotometricInterpretation", "")).strip()
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(array, ds)
            return _rgb_to_uint8(rgb, bits=8 * rgb.dtype.itemsize)
        if array.ndim == 3:
            return _rgb_to_uint8(array, bits=int(ds.get("BitsStored") or 8 * array.dtype.itemsize))
        return grayscale.modality_values(array, ds, frame=frame)
    except PixelDecodeError:
        raise
    except NotImplementedError as exc:
        raise PixelDecodeError(f"no decoder for this encoding: {reason_of(exc)}") from exc
    except Exception as exc:  # decoder plugins raise RuntimeError, ValueError, AttributeError...
        raise PixelDecodeError(f"undecodable pixel data: {reason_of(exc)}") from exc


def frame_samples(ds: Dataset, frame: int) -> np.ndarray:
    """One frame's samples as pydicom decodes them (no modality LUT), JPEG 2000 by pylibjpeg's OpenJPEG first:
    pydicom tries GDCM first, which gave the same values on every JPEG 2000 file of the tests' corpora in twice
    the time (RG1: 0.29 s against 0.15 s)."""
    if ds.file_meta.get("TransferSyntaxUID") in _OPENJPEG_FIRST:
        try:
            return pixel_array(ds, index=frame, decoding_plugin="pylibjpeg")
        except Exception as exc:  # not installed, or a stream it refuses: pydicom's own order says why, if it fails
            logger.debug("pylibjpeg did not decode a JPEG 2000 frame (%s); trying pydicom's other decoders", exc)
    return pixel_array(ds, index=frame)


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
    voi = frame_voi(ds, frame=frame)
    if voi is None or not voi.windows:
        return None, None
    return voi.windows[0].center, voi.windows[0].width


def to_display(
    array: np.ndarray,
    *,
    photometric: str,
    window_center: float | None,
    window_width: float | None,
    voi: grayscale.Voi | None = None,
) -> np.ndarray:
    """8-bit rendering: grayscale through its VOI (the file's VOI LUT or first window with its VOI LUT Function,
    else the window given, else the 1st-99th percentile), then MONOCHROME1 inverted.

    Args:
        array: (H, W) grayscale in modality units or (H, W, 3) RGB, as returned by load_frame.
        window_center, window_width: a LINEAR window for a file whose VOI is not given (the instance's row).
        voi: the frame's VOI LUT Module (`load_frame_and_voi`).
    Returns:
        uint8 array of the same shape.
    """
    if array.ndim == 3:
        return array if array.dtype == np.uint8 else _rgb_to_uint8(array, bits=8 * array.dtype.itemsize)
    values = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    transform = voi.default if voi is not None else None
    if transform is None and window_center is not None and window_width is not None and window_width >= 1:
        transform = grayscale.Window(center=window_center, width=window_width)
    transform = transform or auto_window(values)
    scaled = grayscale.voi_unit(values, transform) if transform else np.zeros_like(values)
    return grayscale.present(to_bytes(scaled), photometric=photometric, top=255)


def to_bytes(unit: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 grey levels, halves rounded up (as viewer.js `voiLevel`)."""
    return np.floor(np.asarray(unit, dtype=np.float64) * 255.0 + 0.5).astype(np.uint8)


def auto_window(values: np.ndarray) -> grayscale.Window | None:
    """The 1st-99th percentile of the image as a LINEAR_EXACT window (its full range if that is flat); None for a
    flat image. Percentiles of a strided sample: the same window for a fraction of the time on large radiographs."""
    step = max(1, int(math.sqrt(values.size / 1_000_000)))
    low, high = (float(v) for v in np.percentile(values[::step, ::step], AUTO_WINDOW_PERCENTILES))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return None
    return grayscale.Window(center=(low + high) / 2, width=high - low, function="LINEAR_EXACT", name="Auto (1-99%)")


def _rgb_to_uint8(array: np.ndarray, *, bits: int) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    top = float(2 ** max(1, min(bits, 32)) - 1)
    return np.rint(np.clip(array.astype(np.float64), 0, top) * (255.0 / top)).astype(np.uint8)


def reason_of(exc: BaseException) -> str:
    """A one-line, bounded reason from an exception, for error messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
