"""What pydicom itself makes of a file's grayscale pixels: the reference the display, the browser's tables and a
model's input are compared with (tests/models/test_grayscale.py, tests/app/ingest, tests/app/viewer)."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut


def pydicom_unit(ds: pydicom.Dataset) -> np.ndarray:
    """pydicom's modality LUT then VOI LUT on the file, scaled from its output range to [0, 1] (float64)."""
    shown = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    if "VOILUTSequence" in ds:
        low, high = 0, 2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
    elif ds.PixelRepresentation == 0:
        low, high = 0, 2**ds.BitsStored - 1
    else:
        low, high = -(2 ** (ds.BitsStored - 1)), 2 ** (ds.BitsStored - 1) - 1
    return (shown - low) / (high - low)


def pydicom_display(ds: pydicom.Dataset) -> np.ndarray:
    """`pydicom_unit` as 8-bit grey levels, halves rounded up (MONOCHROME2: not inverted)."""
    return np.floor(pydicom_unit(ds) * 255 + 0.5).astype(np.uint8)


def with_bent_lut(ds: pydicom.Dataset) -> pydicom.Dataset:
    """vlut_04's VOI LUT is a straight ramp; a squared one shows that the LUT, not a linear stretch, is followed."""
    ds.VOILUTSequence[0].LUTData = [round(65535 * (i / 255) ** 2) for i in range(256)]
    return ds
