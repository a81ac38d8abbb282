"""Raw values for the browser, which windows and colours them itself.

A grayscale frame travels as little-endian uint16 with `value = stored * scale + offset` in modality units
(rescale slope/intercept already applied), and a heatmap as its stored float16 bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.ingest import pixels as ingest_pixels
from app.tables import Heatmap, Instance
from app.viewer import frames as viewer_frames
from app.viewer.images import FrameOutOfRange

_UINT16_TOP = 65535
# Per-modality windows (center, width) in Hounsfield units: the presets CT readers expect on their keys.
CT_PRESETS = (
    ("Lung", -600.0, 1500.0),
    ("Mediastinum", 40.0, 400.0),
    ("Bone", 480.0, 2500.0),
    ("Brain", 40.0, 80.0),
    ("Abdomen", 60.0, 400.0),
)
MAX_PRESETS = 9  # keys 1-9


class NotGrayscale(ValueError):
    """Colour images are served as display PNG, not raw values."""


@dataclass(frozen=True)
class RawFrame:
    body: bytes
    meta: dict[str, Any] = field(default_factory=dict)


def window_presets(
    values: np.ndarray, *, modality: str, header_windows: tuple[tuple[str, float, float], ...]
) -> list[dict[str, Any]]:
    """The windows a reader can pick with keys 1-9: header, automatic, per modality, full range."""
    presets = [{"name": name, "center": center, "width": width} for name, center, width in header_windows]
    step = max(1, int(math.sqrt(values.size / 1_000_000)))
    low, high = (float(v) for v in np.percentile(values[::step, ::step], ingest_pixels.AUTO_WINDOW_PERCENTILES))
    if high > low:
        presets.append({"name": "Auto (1-99%)", "center": (low + high) / 2, "width": high - low})
    if modality.upper() == "CT":
        presets += [{"name": name, "center": center, "width": width} for name, center, width in CT_PRESETS]
    low, high = float(values.min()), float(values.max())
    presets.append({"name": "Full range", "center": (low + high) / 2, "width": max(high - low, 1.0)})
    return [{"key": index + 1, **preset} for index, preset in enumerate(presets[:MAX_PRESETS])]


def _to_uint16(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    low, high = float(values.min()), float(values.max())
    integral = bool(np.all(np.equal(np.mod(values, 1), 0)))
    if integral and high - low <= _UINT16_TOP:
        offset, scale = math.floor(low), 1.0
    else:
        offset, scale = low, (high - low) / _UINT16_TOP if high > low else 1.0
    stored = np.rint((values - np.float32(offset)) / np.float32(scale))
    return np.clip(stored, 0, _UINT16_TOP).astype("<u2"), float(offset), float(scale)


def raw_frame(instance: Instance, *, frame: int) -> RawFrame:
    """One grayscale frame as uint16 bytes (C order, rows x columns) with what the browser needs to show it."""
    if not 0 <= frame < max(instance.frames, 1):
        raise FrameOutOfRange(f"instance {instance.id} has {instance.frames} frame(s), not frame {frame}")
    decoded = viewer_frames.decoded_frame(instance, frame=frame)
    if decoded.array.ndim != 2:
        raise NotGrayscale(f"instance {instance.id} is a colour image: use image.png")
    values = np.nan_to_num(decoded.array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    stored, offset, scale = _to_uint16(values)
    meta = {
        "rows": int(values.shape[0]),
        "columns": int(values.shape[1]),
        "frame": frame,
        "frames": instance.frames,
        "dtype": "uint16",
        "offset": offset,
        "scale": scale,
        "stored_max": int(stored.max()) if stored.size else 0,
        "photometric": instance.photometric or "MONOCHROME2",
        "modality": instance.modality,
        "presets": window_presets(values, modality=instance.modality, header_windows=decoded.header_windows),
    }
    return RawFrame(body=stored.tobytes(), meta=meta)


def heatmap_data(heatmap: Heatmap, *, frame: int = 0) -> RawFrame:
    """The heatmap's 2D map (a 3D map's slice `frame`) as its stored dtype, little-endian, C order."""
    array = np.frombuffer(heatmap.data, dtype=heatmap.dtype).reshape(heatmap.shape)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3:
        if not 0 <= frame < array.shape[0]:
            raise FrameOutOfRange(f"heatmap {heatmap.id} has {array.shape[0]} slices, not slice {frame}")
        array = array[frame]
    elif frame != 0:
        raise FrameOutOfRange(f"heatmap {heatmap.id} is 2D: it has no slice {frame}")
    if array.ndim != 2:
        raise FrameOutOfRange(f"heatmap {heatmap.id} of shape {heatmap.shape} is not an image")
    dtype = np.dtype(heatmap.dtype).newbyteorder("<")
    meta = {
        "id": heatmap.id,
        "method": heatmap.method,
        "target_class": heatmap.target_class,
        "dtype": dtype.name,
        "shape": [int(n) for n in array.shape],
        "value_min": heatmap.value_min,
        "value_max": heatmap.value_max,
        "signed": heatmap.value_min < 0 < heatmap.value_max,
    }
    return RawFrame(body=np.ascontiguousarray(array, dtype=dtype).tobytes(), meta=meta)
