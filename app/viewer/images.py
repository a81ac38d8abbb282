"""PNG renderings for the browser: an instance frame for display, and a heatmap coloured for overlay.

Small renderings of frame 0 (max_size up to the preview size: the viewer's first paint, thumbnails) come from
the preview stored at ingest, without decoding the file again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from PIL import Image

from app.ingest import previews as ingest_previews
from app.storage import BlobNotFound, get_blob_store
from app.tables import Heatmap, Instance
from app.viewer import colormaps
from app.viewer import frames as viewer_frames

# matplotlib's jet: the colour scale readers of GradCAM figures are used to.
OVERLAY_COLORMAP = "jet"
_MAX_ALPHA = 220  # a little of the image always shows through the strongest attribution


class FrameOutOfRange(ValueError):
    """The instance or heatmap has no such frame or slice."""


def from_preview(*, frame: int, max_size: int | None) -> bool:
    """True when the rendering asked for is made from the stored preview (frame 0, small enough)."""
    return frame == 0 and max_size is not None and max_size <= ingest_previews.PREVIEW_SIZE


def instance_etag(instance: Instance, *, frame: int, max_size: int | None) -> str:
    source = "-p" if from_preview(frame=frame, max_size=max_size) else ""
    return f'"{instance.sha256[:32]}-{frame}-{max_size or 0}{source}"'


def heatmap_etag(heatmap: Heatmap, *, frame: int) -> str:
    return f'"heatmap-{heatmap.id}-{frame}"'


def instance_png(*, instance: Instance, frame: int, max_size: int | None) -> bytes:
    """One frame of the instance as display PNG (windowed, 8 bit), downscaled to fit max_size if given."""
    if not 0 <= frame < max(instance.frames, 1):
        raise FrameOutOfRange(f"instance {instance.id} has {instance.frames} frame(s), not frame {frame}")
    if max_size is not None and from_preview(frame=frame, max_size=max_size):
        return ingest_previews.downscale_png(preview_png(instance), max_size=max_size)
    return _kept_rendering(instance, frame=frame, max_size=max_size)


def _kept_rendering(instance: Instance, *, frame: int, max_size: int | None) -> bytes:
    """A full rendering, kept beside the file as a derived blob (as the preview is): the first view of a 4288 px
    photograph costs a decode and an encode of a second or more, which fifty readers opening it would each pay
    again and take from everyone else's requests; later views read it back."""
    name = f"{instance.sha256}-render-{frame}-{max_size or 0}"
    return kept(name, lambda: _render(instance, frame=frame, max_size=max_size))


def kept(name: str, make: Callable[[], bytes]) -> bytes:
    """The derived blob `name` (named after the stored file's sha256, so never stale), made by `make` and stored
    the first time it is asked for."""
    store = get_blob_store()
    # Readers opening a study together ask for its image together: one of them renders, the others wait for it.
    with _rendering_locks.setdefault(name, threading.Lock()):
        try:
            return store.get(store.key_for(name))
        except BlobNotFound:
            made = make()
            store.put(name, made)
            return made
        finally:
            _rendering_locks.pop(name, None)


_rendering_locks: dict[str, threading.Lock] = {}


def preview_png(instance: Instance) -> bytes:
    """The preview stored at ingest; made and stored now for an instance ingested before previews were."""
    stored = ingest_previews.stored_preview(sha256=instance.sha256)
    if stored is not None:
        return stored
    png = _render(instance, frame=0, max_size=ingest_previews.PREVIEW_SIZE)
    ingest_previews.store_preview(sha256=instance.sha256, png=png)
    return png


def _render(instance: Instance, *, frame: int, max_size: int | None) -> bytes:
    decoded = viewer_frames.decoded_frame(instance, frame=frame)
    return ingest_previews.display_png(
        decoded.array,
        photometric=instance.photometric,
        window_center=instance.window_center,
        window_width=instance.window_width,
        max_size=max_size,
        voi=decoded.voi,
    )


def heatmap_array(heatmap: Heatmap, *, frame: int = 0) -> np.ndarray:
    """The raw attribution as a (H, W) float32 array; a 3D map gives its slice `frame`."""
    array = np.frombuffer(heatmap.data, dtype=heatmap.dtype).reshape(heatmap.shape).astype(np.float32)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3:
        if not 0 <= frame < array.shape[0]:
            raise FrameOutOfRange(f"heatmap {heatmap.id} has {array.shape[0]} slices, not slice {frame}")
        array = array[frame]
    if array.ndim != 2:
        raise FrameOutOfRange(f"heatmap {heatmap.id} of shape {heatmap.shape} is not an image")
    return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)


def colorize(attribution: np.ndarray) -> np.ndarray:
    """(H, W) signed attribution -> (H, W, 4) uint8 RGBA: colour (an entry of the jet table, as heatmap.js picks
    it: round(t * 255)) and alpha from t = |a| / max |a|.

    Normalising is for display only; the stored attribution stays raw.
    """
    magnitude = np.abs(attribution)
    peak = float(magnitude.max()) if magnitude.size else 0.0
    scaled = magnitude / peak if peak > 0 else np.zeros_like(magnitude)
    rgba = np.empty((*scaled.shape, 4), dtype=np.uint8)
    index = np.floor(scaled.astype(np.float64) * (colormaps.SIZE - 1) + 0.5).astype(np.intp)
    rgba[..., :3] = colormaps.table(OVERLAY_COLORMAP)[index]
    rgba[..., 3] = (scaled * _MAX_ALPHA).astype(np.uint8)
    return rgba


def heatmap_png(heatmap: Heatmap, *, frame: int = 0) -> bytes:
    """The heatmap as an RGBA PNG at its own resolution; the browser stretches it over the image."""
    return ingest_previews.encode_png(Image.fromarray(colorize(heatmap_array(heatmap, frame=frame))))
