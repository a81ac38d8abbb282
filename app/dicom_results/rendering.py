"""Pixels of the DICOM results: a heatmap resampled onto its source image, and the overlay a person looks at."""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.viewer import images as viewer_images


def resample(attribution: np.ndarray, *, rows: int, columns: int) -> np.ndarray:
    """A (h, w) map on the image's grid of (rows, columns) pixels, bilinear with pixel centres aligned (Pillow's
    BILINEAR, as a browser stretches the overlay); upscaling interpolates between the four nearest values and
    clamps at the edges; downscaling weighs the pixels each output pixel covers (a triangle filter).

    Returns:
        (rows, columns) float32.
    """
    values = np.ascontiguousarray(attribution, dtype=np.float32)
    if values.shape == (rows, columns):
        return values
    resized = Image.fromarray(values, mode="F").resize((columns, rows), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def overlay(display: np.ndarray, attribution: np.ndarray) -> np.ndarray:
    """The heatmap blended over the image as the viewer shows it: matplotlib's jet colour map on |attribution| /
    max |attribution|, with that fraction (at most 220/255) as its opacity, so weak attribution leaves the image
    visible (app.viewer.images.colorize).

    Args:
        display: (H, W) or (H, W, 3) uint8, the image windowed for display.
        attribution: (H, W) float, already on the image's grid (`resample`).
    Returns:
        (H, W, 3) uint8 RGB.
    """
    base = display if display.ndim == 3 else np.repeat(display[..., None], 3, axis=2)
    rgba = viewer_images.colorize(attribution)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    blended = base.astype(np.float32) * (1.0 - alpha) + rgba[..., :3].astype(np.float32) * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
