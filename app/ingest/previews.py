"""The small rendering of frame 0 that the viewer paints first, made once at ingest and kept in the blob store.

A preview is what `image.png?max_size=512` returns: 8 bit, windowed like the viewer's default (the file's VOI
LUT or first window with its VOI LUT Function, else the 1st-99th percentile; MONOCHROME1 inverted; see
`pixels.to_display`), at most PREVIEW_SIZE px on its longest side with
the image's aspect ratio, PNG. Serving it is a file read; making it again would mean decoding the whole file
(a 2048-px JPEG 2000 radiograph takes most of a second on a small server).

It is stored under the file's sha256 + "-preview": a file has one preview, and the same bytes give the same one.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from app.ingest import pixels
from app.storage import get_blob_store
from models import grayscale

PREVIEW_SIZE = 512
_SUFFIX = "-preview"


def display_png(
    array: np.ndarray,
    *,
    photometric: str,
    window_center: float | None,
    window_width: float | None,
    max_size: int | None,
    voi: grayscale.Voi | None = None,
) -> bytes:
    """A decoded frame as an 8-bit display PNG, downscaled (Lanczos) to fit `max_size` if given.

    Args:
        array: (H, W) grayscale in modality units or (H, W, 3) RGB, as `pixels.load_frame` returns it.
        voi: the frame's VOI LUT Module, as `pixels.load_frame_and_voi` returns it (see `pixels.to_display`).
    Returns:
        PNG bytes, mode L or RGB.
    """
    display = np.asarray(
        pixels.to_display(
            array, photometric=photometric, window_center=window_center, window_width=window_width, voi=voi
        )
    )
    if display.dtype != np.uint8:
        display = np.clip(display, 0, 255).astype(np.uint8)
    image = Image.fromarray(display)
    if max_size and max(image.size) > max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return encode_png(image)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Level 3 is several times faster than the default 6 for a few percent more bytes.
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def render_preview(
    array: np.ndarray,
    *,
    photometric: str,
    window_center: float | None,
    window_width: float | None,
    voi: grayscale.Voi | None = None,
) -> bytes:
    """Frame 0 (load_frame's shapes) as the preview PNG, at most PREVIEW_SIZE px on its longest side."""
    return display_png(
        array,
        photometric=photometric,
        window_center=window_center,
        window_width=window_width,
        max_size=PREVIEW_SIZE,
        voi=voi,
    )


def downscale_png(png: bytes, *, max_size: int) -> bytes:
    """The PNG itself if it fits `max_size`, else a copy downscaled (Lanczos) to fit it."""
    with Image.open(io.BytesIO(png)) as image:
        if max(image.size) <= max_size:
            return png
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
        return encode_png(image)


def preview_key(*, sha256: str) -> str:
    """The blob-store key of the preview of the file with this sha256."""
    return get_blob_store().key_for(sha256 + _SUFFIX)


def store_preview(*, sha256: str, png: bytes) -> str:
    """Keep the preview of the file with this sha256 (a preview already there is kept); its key."""
    return get_blob_store().put(sha256 + _SUFFIX, png)


def stored_preview(*, sha256: str) -> bytes | None:
    """The stored preview, or None for a file ingested before previews were made at ingest."""
    store = get_blob_store()
    key = store.key_for(sha256 + _SUFFIX)
    return store.get(key) if store.exists(key) else None
