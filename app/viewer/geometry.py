"""What the viewer needs of a frame's header to measure and orient it: the pixel spacing, the patient
directions of the image's edges and the unit of its values. It travels in the raw pixels' meta (raw.py).

Spacing is PixelSpacing, in the patient. A projection radiograph with only ImagerPixelSpacing is measured at the
detector, where the body is magnified by the beam's divergence (5-20% on a chest film; PS3.3 C.8.11.4.1.1):
lengths made with it say so. A zero or missing spacing gives none: the viewer measures in pixels then.
The edges come from ImageOrientationPatient (cross-sections) or PatientOrientation (projections, PS3.3
C.7.6.1.1.1), with DICOM's letters (L/R, A/P, H/F); none when the header states neither.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom.dataset import Dataset

from app.ingest import pixels as ingest_pixels
from app.storage import get_blob_store
from app.tables import Instance

logger = logging.getLogger(__name__)

# The letter of each patient axis (x, y, z of DICOM's LPS frame) for a positive and a negative component.
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
# A direction's smaller components below this are rounding, not obliquity ("-0.000000" in MR2's header).
_NEGLIGIBLE = 1e-3
DETECTOR_NOTE = "ImagerPixelSpacing: measured at the detector, not corrected for the magnification of the body"


@dataclass(frozen=True)
class Geometry:
    """One frame's measuring and orientation facts; None where the header gives none."""

    spacing: tuple[float, float] | None = None  # mm between rows, then between columns
    spacing_source: str | None = None  # PixelSpacing | ImagerPixelSpacing
    edges: dict[str, str] | None = None  # top, bottom, left, right -> direction letters
    units: str = ""  # of the values after the modality LUT: HU, or the header's Rescale Type; "" unknown

    def meta(self) -> dict[str, Any]:
        return {
            "spacing": list(self.spacing) if self.spacing else None,
            "spacing_source": self.spacing_source,
            "spacing_note": DETECTOR_NOTE if self.spacing_source == "ImagerPixelSpacing" else None,
            "orientation": self.edges,
            "units": self.units,
        }


def direction_letters(vector: Sequence[float]) -> str:
    """The letters of a direction in the patient, its largest component first ((0.57, 0.82, 0) -> "PL")."""
    ranked = sorted(range(3), key=lambda axis: -abs(vector[axis]))
    return "".join(
        _AXIS_LETTERS[axis][0 if vector[axis] > 0 else 1] for axis in ranked if abs(vector[axis]) > _NEGLIGIBLE
    )


def opposite(letters: str) -> str:
    return "".join(_OPPOSITE[letter] for letter in letters)


def edges_of(row: str, column: str) -> dict[str, str]:
    """The letters at each edge, from those of the row direction (towards the right edge) and the column
    direction (towards the bottom edge)."""
    return {"top": opposite(column), "bottom": column, "left": opposite(row), "right": row}


def _numbers(value: Any, count: int) -> list[float] | None:
    try:
        numbers = [float(item) for item in value]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(math.isfinite(item) for item in numbers) else None


def _functional(ds: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """`keyword` of an enhanced multi-frame file's functional groups: the frame's own, else the shared one."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and index < len(items) and items[index].get(sequence):
            value = items[index].get(sequence)[0].get(keyword)
            if value is not None:
                return value
    return None


def _spacing(ds: Dataset, frame: int) -> tuple[tuple[float, float] | None, str | None]:
    candidates = (
        ("PixelSpacing", _functional(ds, frame, "PixelMeasuresSequence", "PixelSpacing")),
        ("PixelSpacing", ds.get("PixelSpacing")),
        ("ImagerPixelSpacing", ds.get("ImagerPixelSpacing")),
    )
    for source, value in candidates:
        numbers = _numbers(value, 2) if value is not None else None
        if numbers and min(numbers) > 0:
            return (numbers[0], numbers[1]), source
    return None, None


def _edges(ds: Dataset, frame: int) -> dict[str, str] | None:
    for value in (
        _functional(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"),
        ds.get("ImageOrientationPatient"),
    ):
        numbers = _numbers(value, 6) if value is not None else None
        if numbers and math.hypot(*numbers[:3]) > 0.5 and math.hypot(*numbers[3:]) > 0.5:
            return edges_of(direction_letters(numbers[:3]), direction_letters(numbers[3:]))
    stated = ds.get("PatientOrientation")
    letters = [str(item).upper() for item in stated] if stated and not isinstance(stated, str) else []
    if len(letters) == 2 and all(item and set(item) <= set(_OPPOSITE) for item in letters):
        return edges_of(letters[0], letters[1])
    return None


def _units(ds: Dataset, frame: int, modality: str) -> str:
    stated = _functional(ds, frame, "PixelValueTransformationSequence", "RescaleType") or ds.get("RescaleType")
    if stated and str(stated).upper() != "US":  # US: "unspecified" in PS3.3 C.11.1.1.2
        return str(stated)
    if modality.upper() == "CT":
        return "HU"  # the CT Image IOD's rescale is to Hounsfield units (PS3.3 C.8.2.1.1.1)
    if modality.upper() == "PT" and ds.get("Units"):
        return str(ds.get("Units"))
    return ""


def frame_geometry(ds: Dataset, *, frame: int = 0, modality: str = "") -> Geometry:
    """The spacing, edge letters and value unit of one frame of a parsed header."""
    spacing, source = _spacing(ds, frame)
    return Geometry(spacing=spacing, spacing_source=source, edges=_edges(ds, frame), units=_units(ds, frame, modality))


def instance_geometry(instance: Instance, *, frame: int) -> Geometry:
    """`frame_geometry` of a stored instance (none for PNG and JPEG), kept per file and frame."""
    if instance.source_format != "dicom":
        return Geometry()
    try:
        return _stored_geometry(instance.sha256, instance.storage_key, frame, instance.modality)
    except Exception as exc:  # a header that decoded pixels but trips here: the viewer measures in pixels
        logger.info("instance %s: header unreadable for geometry: %s", instance.id, exc)
        return Geometry()


@lru_cache(maxsize=1024)
def _stored_geometry(sha256: str, storage_key: str, frame: int, modality: str) -> Geometry:
    # Kept by sha256: a stored file never changes, so neither does what its header says. Errors are not kept.
    ds = ingest_pixels.read_dicom(get_blob_store().get(storage_key), stop_before_pixels=True)
    return frame_geometry(ds, frame=frame, modality=modality)
