"""Decoded frames kept in memory for a little while: the preview, the full PNG and the raw pixels of one
frame are asked for together when a viewer opens, and decoding a radiograph costs more than serving it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from app.ingest import pixels as ingest_pixels
from app.storage import get_blob_store
from app.tables import Instance
from models import grayscale

_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class DecodedFrame:
    """One frame as load_frame returns it, with its VOI LUT Module (None: the header states none)."""

    array: np.ndarray
    voi: grayscale.Voi | None = None


class _FrameCache:
    """A small LRU bounded by bytes; one decode per key even when requests for it arrive together."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], DecodedFrame] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, int], threading.Lock] = {}

    def get(self, instance: Instance, frame: int) -> DecodedFrame:
        key = (instance.sha256, frame)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
            decoded = _decode(instance, frame)
            with self._lock:
                self._store(key, decoded)
                self._key_locks.pop(key, None)
            return decoded

    def _store(self, key: tuple[str, int], decoded: DecodedFrame) -> None:
        size = decoded.array.nbytes
        if size > self._max_bytes:
            return
        self._items[key] = decoded
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.array.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _decode(instance: Instance, frame: int) -> DecodedFrame:
    data = get_blob_store().get(instance.storage_key)
    array, voi = ingest_pixels.load_frame_and_voi(data, instance.source_format, frame)
    center, width = instance.window_center, instance.window_width
    if voi is None and array.ndim == 2 and center is not None and width is not None and width >= 1:
        voi = grayscale.Voi(windows=(grayscale.Window(center, width, name="Header"),))
    return DecodedFrame(array=array, voi=voi)


_cache = _FrameCache(_MAX_BYTES)


def decoded_frame(instance: Instance, *, frame: int) -> DecodedFrame:
    """The decoded frame (cached by file sha256 and frame number)."""
    return _cache.get(instance, frame)


def clear_cache() -> None:
    _cache.clear()
