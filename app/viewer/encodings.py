"""Compressed forms of a raw frame for the wire, which the browser undoes with what it has built in.

`up-zigzag-shuffle-deflate` (chosen by measurement, docs/browser-timings.md): each uint16 value becomes its
difference from the value above it (PNG's "Up" filter; the first row from the value to its left, the first value
from 0), modulo 2**16; the differences, read as int16, are zigzag-mapped (0, -1, 1, -2... -> 0, 1, 2, 3...) so
that small ones of either sign have a zero high byte; they are split into a plane of low bytes then a plane of
high bytes; whatever follows the pixels in the raw body (the VOI LUT tables) is appended unchanged; and the whole
is compressed with zlib (RFC 1950), which the browser's `DecompressionStream("deflate")` inflates. Inflated,
the body has the raw body's length and layout after the pixels: the tables' byte offsets in the meta hold.
"""

from __future__ import annotations

import zlib
from enum import StrEnum

import numpy as np

# zlib level 1: within 3 points of level 6 in bytes on the radiographs, three to four times faster.
DEFLATE_LEVEL = 1


class PixelEncoding(StrEnum):
    """How /pixels sends a grayscale frame; raw stays the default for existing clients."""

    raw = "raw"
    up_zigzag_shuffle_deflate = "up-zigzag-shuffle-deflate"
    # The stored JPEG 2000 codestream where it maps exactly onto the raw values (app/viewer/jpeg2000.py), else
    # up-zigzag-shuffle-deflate: the response's meta says which was sent.
    jpeg2000 = "jpeg2000"


def residual_planes(values: np.ndarray) -> bytes:
    """(H, W) uint16 -> the low-byte plane then the high-byte plane of the zigzagged differences (2 H W bytes)."""
    image = np.ascontiguousarray(values, dtype=np.uint16)
    predicted = np.zeros_like(image)  # uint16 arithmetic wraps around, as the decoder's does
    predicted[1:] = image[:-1]
    predicted[0, 1:] = image[0, :-1]
    signed = (image - predicted).view(np.int16)
    zigzag = ((signed << 1) ^ (signed >> 15)).view(np.uint16).astype("<u2")
    return zigzag.ravel().view(np.uint8).reshape(-1, 2).T.tobytes()


def values_from_planes(planes: bytes | memoryview, *, rows: int, columns: int) -> np.ndarray:
    """`residual_planes` undone: its first 2 * rows * columns bytes -> (rows, columns) uint16."""
    count = rows * columns
    pair = np.frombuffer(planes, dtype=np.uint8, count=2 * count).reshape(2, count)
    zigzag = (pair[0].astype(np.uint16) | (pair[1].astype(np.uint16) << 8)).reshape(rows, columns)
    differences = (zigzag >> 1) ^ (-(zigzag & 1)).astype(np.uint16)
    differences[0] = np.cumsum(differences[0], dtype=np.uint16)
    return np.cumsum(differences, axis=0, dtype=np.uint16)


def encode(values: np.ndarray, *, tail: bytes = b"", level: int = DEFLATE_LEVEL) -> bytes:
    """The body of an `up-zigzag-shuffle-deflate` response: zlib(residual_planes(values) + tail)."""
    return zlib.compress(residual_planes(values) + tail, level)


def decode(body: bytes, *, rows: int, columns: int) -> tuple[np.ndarray, bytes]:
    """An `up-zigzag-shuffle-deflate` body -> ((rows, columns) uint16, the raw body's bytes after the pixels):
    the reference for viewer.js, which does the same with DecompressionStream and a typed-array loop."""
    inflated = zlib.decompress(body)
    return values_from_planes(inflated, rows=rows, columns=columns), inflated[2 * rows * columns :]
