"""Raw values for the browser, which windows and colours them itself.

A grayscale frame travels as little-endian uint16 with `value = stored * scale + offset` in modality units (the
modality LUT already applied), and a heatmap as its stored float16 bytes.

The windows come from here (`models.grayscale`, pydicom's VOI functions): each preset names its VOI LUT Function
("function", LINEAR when absent, as in a DICOM header), which the browser applies by the same definition
(PS3.3 C.11.2.1.2-3) when the reader drags the window. A VOI LUT Sequence, which no formula describes, travels as
a table after the pixels: its preset's "table" is the byte offset in the body of `stored_max + 1` uint8 grey
levels, one per stored value, computed here.

The meta also says how to measure and orient the frame (app/viewer/geometry.py: pixel spacing, edge letters,
value unit); META_VERSION names its shape, in the kept blob's name and the ETag, so a meta kept before a field was
added is made again rather than served without it.

A client may ask for the body compressed (app/viewer/encodings.py); the compressed form is made once and kept
beside the file as a derived blob, so later views read it without decoding the file again.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.ingest import pixels as ingest_pixels
from app.tables import Heatmap, Instance
from app.viewer import encodings, geometry, images, jpeg2000
from app.viewer import frames as viewer_frames
from app.viewer.images import FrameOutOfRange
from models import grayscale

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
META_VERSION = "m2"  # m2: spacing, orientation and units added


class NotGrayscale(ValueError):
    """Colour images are served as display PNG, not raw values."""


@dataclass(frozen=True)
class RawFrame:
    body: bytes
    meta: dict[str, Any] = field(default_factory=dict)


def window_presets(
    values: np.ndarray, *, modality: str, voi: grayscale.Voi | None
) -> list[grayscale.Window | grayscale.Lut]:
    """The VOIs a reader can pick with keys 1-9: the file's VOI LUTs and windows (the first is what the display
    PNG shows), automatic, per modality, full range."""
    presets: list[grayscale.Window | grayscale.Lut] = [*voi.luts, *voi.windows] if voi is not None else []
    auto = ingest_pixels.auto_window(values)
    if auto is not None:
        presets.append(auto)
    if modality.upper() == "CT":
        presets += [grayscale.Window(center, width, name=name) for name, center, width in CT_PRESETS]
    low, high = float(values.min()), float(values.max())
    presets.append(grayscale.Window((low + high) / 2, max(high - low, 1.0), "LINEAR_EXACT", "Full range"))
    return presets[:MAX_PRESETS]


def _preset_json(preset: grayscale.Window | grayscale.Lut, key: int) -> dict[str, Any]:
    window = preset.span if isinstance(preset, grayscale.Lut) else preset
    entry: dict[str, Any] = {"key": key, "name": preset.name, "center": window.center, "width": window.width}
    if window.function != "LINEAR":
        entry["function"] = window.function
    return entry


def _to_uint16(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    low, high = float(values.min()), float(values.max())
    integral = bool(np.all(np.equal(np.mod(values, 1), 0)))
    if integral and high - low <= _UINT16_TOP:
        offset, scale = float(math.floor(low)), 1.0
    else:
        offset, scale = low, (high - low) / _UINT16_TOP if high > low else 1.0
    stored = np.rint((values - np.float32(offset)) / np.float32(scale))
    return np.clip(stored, 0, _UINT16_TOP).astype("<u2"), float(offset), float(scale)


def raw_frame(instance: Instance, *, frame: int) -> RawFrame:
    """One grayscale frame as uint16 bytes (C order, rows x columns) with what the browser needs to show it, and
    after them the grey levels of each VOI LUT preset (see the module's docstring)."""
    if not 0 <= frame < max(instance.frames, 1):
        raise FrameOutOfRange(f"instance {instance.id} has {instance.frames} frame(s), not frame {frame}")
    decoded = viewer_frames.decoded_frame(instance, frame=frame)
    if decoded.array.ndim != 2:
        raise NotGrayscale(f"instance {instance.id} is a colour image: use image.png")
    values = np.nan_to_num(decoded.array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    stored, offset, scale = _to_uint16(values)
    top = int(stored.max()) if stored.size else 0
    body = [stored.tobytes()]
    presets = []
    for key, preset in enumerate(window_presets(values, modality=instance.modality, voi=decoded.voi), start=1):
        entry = _preset_json(preset, key)
        if isinstance(preset, grayscale.Lut):
            entry["table"] = sum(len(part) for part in body)
            levels = grayscale.voi_unit(np.arange(top + 1) * scale + offset, preset)
            body.append(ingest_pixels.to_bytes(levels).tobytes())
        presets.append(entry)
    meta = {
        "rows": int(values.shape[0]),
        "columns": int(values.shape[1]),
        "frame": frame,
        "frames": instance.frames,
        "dtype": "uint16",
        "offset": offset,
        "scale": scale,
        "stored_max": top,
        "photometric": instance.photometric or "MONOCHROME2",
        "modality": instance.modality,
        "presets": presets,
        **geometry.instance_geometry(instance, frame=frame).meta(),
    }
    return RawFrame(body=b"".join(body), meta=meta)


def encoded_frame(instance: Instance, *, frame: int, encoding: encodings.PixelEncoding) -> RawFrame:
    """`raw_frame` with its body compressed as `encoding` (its meta says which), kept as a derived blob."""
    if encoding is encodings.PixelEncoding.raw:
        return raw_frame(instance, frame=frame)
    if not 0 <= frame < max(instance.frames, 1):
        raise FrameOutOfRange(f"instance {instance.id} has {instance.frames} frame(s), not frame {frame}")
    kept = images.kept(
        f"{instance.sha256}-pixels-{META_VERSION}-{frame}-{encoding}",
        lambda: _packed(_encoded(instance, frame, raw_frame(instance, frame=frame), encoding)),
    )
    return _unpacked(kept)


# The codestream is sent only when it is at most this fraction of the deflated body: the browser's WebAssembly
# decode takes several times as long as its inflate (RG1: about 300 ms against 80), so a codestream about the
# deflated size (a lossless JPEG 2000 of smooth content) would cost more time than its bytes save.
CODESTREAM_MAX_FRACTION = 0.5


def _encoded(instance: Instance, index: int, frame: RawFrame, encoding: encodings.PixelEncoding) -> RawFrame:
    if encoding is encodings.PixelEncoding.jpeg2000:
        deflated = _encoded(instance, index, frame, encodings.PixelEncoding.up_zigzag_shuffle_deflate)
        passed = jpeg2000.codestream_frame(instance, frame=index, raw_meta=frame.meta, raw_body=frame.body)
        if passed is not None and len(passed[1]) <= CODESTREAM_MAX_FRACTION * len(deflated.body):
            return RawFrame(body=passed[1], meta=passed[0])
        return deflated
    rows, columns = frame.meta["rows"], frame.meta["columns"]
    values = np.frombuffer(frame.body, dtype="<u2", count=rows * columns).reshape(rows, columns)
    body = encodings.encode(values, tail=frame.body[values.nbytes :])
    return RawFrame(body=body, meta={**frame.meta, "encoding": str(encoding)})


# A kept frame: the length of its meta (uint32, little-endian), the meta as JSON, then the body.
_META_LENGTH = struct.Struct("<I")


def _packed(frame: RawFrame) -> bytes:
    meta = json.dumps(frame.meta, separators=(",", ":")).encode()
    return _META_LENGTH.pack(len(meta)) + meta + frame.body


def _unpacked(kept: bytes) -> RawFrame:
    (length,) = _META_LENGTH.unpack_from(kept)
    start = _META_LENGTH.size
    return RawFrame(body=kept[start + length :], meta=json.loads(kept[start : start + length]))


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
