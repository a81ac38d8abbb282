"""The DICOM grayscale pipeline (PS3.4 N.2.1) through pydicom's own LUT functions: stored values -> modality LUT
(Rescale Slope/Intercept or a Modality LUT Sequence) -> VOI LUT (a window with its VOI LUT Function LINEAR,
LINEAR_EXACT or SIGMOID, or a VOI LUT Sequence) -> MONOCHROME1 inverted.

One path for what a reader sees and what a network gets: the viewer's renderings and the tables the browser windows
with (`app.ingest.pixels`, `app.viewer.raw`) and a model's grayscale input (`models.preprocessing`) all go through
these functions. numpy and pydicom only, no torch: the web app imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")  # PS3.3 C.11.2.1.3
_LUT_BITS = (8, *range(10, 17))  # bits per VOI LUT entry pydicom applies (PS3.3 C.8.11.3.1.5)


@dataclass(frozen=True)
class Window:
    """A VOI window: center and width in modality units and its VOI LUT Function (LINEAR when the header names
    none, as PS3.3 C.11.2.1.3 says). LINEAR_EXACT maps [center - width/2, center + width/2] onto [0, 1]."""

    center: float
    width: float
    function: str = "LINEAR"
    name: str = ""


@dataclass(frozen=True)
class Lut:
    """One VOI LUT Sequence item (LUT Descriptor, LUT Data, LUT Explanation); `little_endian` is its file's byte
    order, which LUT Data read as OW needs."""

    item: Dataset
    little_endian: bool = True

    @property
    def name(self) -> str:
        return str(self.item.get("LUTExplanation") or "").strip() or "VOI LUT"

    @property
    def descriptor(self) -> tuple[int, int, int]:
        """(entries, first value mapped, bits per entry); 0 entries means 65536 (PS3.3 C.11.1.1.1)."""
        count, first, bits = (int(v) for v in self.item.LUTDescriptor)
        return count or 2**16, first, bits

    @property
    def span(self) -> Window:
        """The input range the LUT spans, as a LINEAR_EXACT window: where a reader's own window starts from."""
        count, first, _ = self.descriptor
        return Window(center=first + (count - 1) / 2, width=float(max(count - 1, 1)), function="LINEAR_EXACT")


@dataclass(frozen=True)
class Voi:
    """The VOI LUT Module of one frame: its windows and its VOI LUT Sequence items."""

    windows: tuple[Window, ...] = ()
    luts: tuple[Lut, ...] = ()

    @property
    def default(self) -> Window | Lut | None:
        """The transform shown first: the first VOI LUT, else the first window (pydicom's `prefer_lut`)."""
        return self.luts[0] if self.luts else self.windows[0] if self.windows else None


def frame_item(ds: Dataset, sequence: str, *, frame: int) -> Dataset | None:
    """The first item of a functional group sequence for this frame (per-frame first, then shared)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if not items or index >= len(items):
            continue
        inner = items[index].get(sequence)
        if inner:
            return inner[0]
    return None


def modality_values(stored: np.ndarray, ds: Dataset, *, frame: int = 0) -> np.ndarray:
    """Stored values -> modality values (float32) by pydicom's `apply_modality_lut`: the header's Modality LUT
    Sequence or Rescale Slope/Intercept, or the enhanced frame's Pixel Value Transformation. A rescale that is
    absent or unreadable is the identity."""
    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(stored, ds).astype(np.float32)
    transform = frame_item(ds, "PixelValueTransformationSequence", frame=frame) or ds
    if _number(transform.get("RescaleSlope")) is None or _number(transform.get("RescaleIntercept")) is None:
        return stored.astype(np.float32)
    return apply_modality_lut(stored, transform).astype(np.float32)


def frame_voi(ds: Dataset, *, frame: int = 0) -> Voi | None:
    """The VOI LUT Module of one frame (the enhanced frame's Frame VOI LUT, else the header's); None when it
    states no usable window and no VOI LUT. Windows pydicom would refuse (LINEAR narrower than 1, an unknown
    function) are left out."""
    source = frame_item(ds, "FrameVOILUTSequence", frame=frame) or ds
    little_endian = getattr(ds, "original_encoding", (None, True))[1] is not False
    luts = tuple(Lut(item, little_endian) for item in source.get("VOILUTSequence") or () if _usable_lut(item))
    windows = _windows(source)
    return Voi(windows=windows, luts=luts) if luts or windows else None


def voi_unit(values: np.ndarray, transform: Window | Lut) -> np.ndarray:
    """Modality values -> [0, 1] float64 through one window or one VOI LUT, by pydicom's `apply_voi_lut`
    (PS3.3 C.11.2.1). Any shape in, the same shape out: float64 as pydicom computes it, so that the browser's
    own windowing (viewer.js `voiLevel`, float64 too) gives the same grey levels."""
    module = Dataset()
    module.PhotometricInterpretation = "MONOCHROME2"
    # An unsigned 1-bit output range: pydicom's windowing then spans [0, 1] (its y_min .. y_max).
    module.BitsStored, module.PixelRepresentation = 1, 0
    if isinstance(transform, Window):
        module.WindowCenter, module.WindowWidth = transform.center, transform.width
        module.VOILUTFunction = transform.function
        return np.asarray(apply_voi_lut(np.asarray(values), module), dtype=np.float64)
    module.VOILUTSequence = [transform.item]
    module.set_original_encoding(False, transform.little_endian)
    count, first, bits = transform.descriptor
    # Values outside the LUT's input range take its first or last entry (PS3.3 C.11.2.1.1); clipping first keeps
    # them inside the LUT's index type.
    indices = np.clip(np.rint(values), first, first + count - 1).astype(np.int64)
    return apply_voi_lut(indices, module) / float(2**bits - 1)


def is_monochrome1(photometric: str) -> bool:
    return photometric.strip().upper() == "MONOCHROME1"


def present(values: np.ndarray, *, photometric: str, top: float = 1.0) -> np.ndarray:
    """VOI output in [0, top] -> presentation: MONOCHROME1 (minimum white) inverted so that high is bright."""
    return top - values if is_monochrome1(photometric) else values


def _windows(source: Dataset) -> tuple[Window, ...]:
    centers, widths = _numbers(source.get("WindowCenter")), _numbers(source.get("WindowWidth"))
    function = str(source.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in VOI_FUNCTIONS:
        return ()
    explanation = source.get("WindowCenterWidthExplanation")
    names = [str(explanation)] if isinstance(explanation, str) else [str(item) for item in explanation or []]
    least = 1.0 if function == "LINEAR" else 0.0
    windows = []
    for index, (center, width) in enumerate(zip(centers, widths, strict=False)):
        if center is None or width is None or not (width >= least and width > 0):
            continue
        name = names[index].strip() if index < len(names) and names[index].strip() else "Header"
        windows.append(Window(center=center, width=width, function=function, name=name))
    return tuple(windows)


def _usable_lut(item: Dataset) -> bool:
    descriptor = item.get("LUTDescriptor")
    return item.get("LUTData") is not None and descriptor is not None and len(descriptor) == 3 and (
        int(descriptor[2]) in _LUT_BITS
    )


def _numbers(value: Any) -> list[float | None]:
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, str | bytes) or not hasattr(value, "__iter__") else list(value)
    return [_number(item) for item in items]


def _number(value: Any) -> float | None:
    if value is None or value == "" or (hasattr(value, "__len__") and not isinstance(value, str | bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
