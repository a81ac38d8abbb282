"""A model's reference library on disk: its confirmed reference cases (embeddings, labels, ids, thumbnails), the
file format and its checks. Torch-free, so the web app reads thumbnails from it without importing torch; the
search itself is models/similar.py.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_FILE = "reference.npz"
FORMAT_VERSION = 1
# HNSW graph degree and search breadths. On 30k unstructured (Gaussian) unit vectors in 64-d, the hardest case,
# recall@5 against exact search was 0.88 / 0.97 / 0.996 with a search breadth of 64 / 128 / 256, at 0.03 / 0.05 /
# 0.11 ms a query on 2 CPU cores; the graph took 1.3 s to build.
HNSW_NEIGHBOURS = 32
HNSW_BUILD_BREADTH = 80
HNSW_SEARCH_BREADTH = 256
FORBIDDEN_SPLIT = "test"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UNIT_TOLERANCE = 1e-3
_KEYS = (
    "format_version",
    "embeddings",
    "labels",
    "case_ids",
    "splits",
    "thumbnail_bytes",
    "thumbnail_offsets",
    "multilabel",
    "source",
)


@dataclass(frozen=True, eq=False)
class ReferenceLibrary:
    """The reference cases of one model; validated on construction (ValueError says what is wrong).

    Attributes:
        embeddings: (N, D) float32, unit rows.
        labels: (N,) int64 class index (classification) or (N, L) uint8 0/1 per label (multilabel), in the
            order of the card's labels.
        case_ids: N unique stable ids, e.g. "retinamnist/train/0042", "nih/00001234_000.png".
        splits: the split each case came from (never "test").
        thumbnails: N PNG files, small (tens of pixels a side).
        multilabel: whether `labels` is (N, L).
        source: one line: the dataset and its licence.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    case_ids: list[str]
    splits: list[str]
    thumbnails: list[bytes]
    multilabel: bool
    source: str

    def __post_init__(self) -> None:
        _check(self)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def save(self, path: Path) -> str:
        """Write the library as one compressed .npz without pickles; returns the file's sha256."""
        offsets = np.cumsum([0, *(len(t) for t in self.thumbnails)], dtype=np.int64)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            format_version=np.array(FORMAT_VERSION, dtype=np.int64),
            embeddings=self.embeddings,
            labels=self.labels,
            case_ids=np.array(self.case_ids, dtype=np.str_),
            splits=np.array(self.splits, dtype=np.str_),
            thumbnail_bytes=np.frombuffer(b"".join(self.thumbnails), dtype=np.uint8),
            thumbnail_offsets=offsets,
            multilabel=np.array(self.multilabel),
            source=np.array(self.source, dtype=np.str_),
        )
        data = buffer.getvalue()
        Path(path).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: Path) -> ReferenceLibrary:
        """Read a library written by `save` (no pickles).

        Raises:
            ValueError: the file is missing, not a readable .npz, lacks an array, or its arrays disagree
                (shapes, types, counts, offsets, a test-split case); the message names the file.
        """
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [key for key in _KEYS if key not in archive.files]
                if missing:
                    raise ValueError(f"arrays {missing} are missing")
                arrays = {key: archive[key] for key in _KEYS}
            return cls._from_arrays(arrays)
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
            raise ValueError(f"{path}: not a valid reference library ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray]) -> ReferenceLibrary:
        version = int(arrays["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version}, this code reads {FORMAT_VERSION}")
        offsets, blob = arrays["thumbnail_offsets"], arrays["thumbnail_bytes"]
        # The offsets give the number of thumbnails; `_check` then compares it with the other arrays.
        if (
            offsets.ndim != 1
            or offsets.size < 1
            or offsets[0] != 0
            or offsets[-1] != blob.size
            or np.any(np.diff(offsets) < 0)
        ):
            raise ValueError(f"thumbnail offsets {offsets.shape} do not cut {blob.size} bytes from 0 to the end")
        data = blob.tobytes()
        return cls(
            embeddings=arrays["embeddings"],
            labels=arrays["labels"],
            case_ids=[str(s) for s in arrays["case_ids"]],
            splits=[str(s) for s in arrays["splits"]],
            thumbnails=[data[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)],
            multilabel=bool(arrays["multilabel"]),
            source=str(arrays["source"]),
        )

    @cached_property
    def _approximate_index(self) -> Any:
        # Built once per library (a frozen dataclass still has a __dict__ for cached_property to fill).
        return _hnsw_index(self.embeddings)


def _check(library: ReferenceLibrary) -> None:
    """Raise ValueError unless the library's fields agree with each other (see `ReferenceLibrary`)."""
    z = library.embeddings
    if not isinstance(z, np.ndarray) or z.dtype != np.float32 or z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (N, D) float32 array, got {_describe(z)}")
    n = z.shape[0]
    for name in ("labels", "case_ids", "splits", "thumbnails"):
        if len(getattr(library, name)) != n:
            raise ValueError(f"{len(getattr(library, name))} {name} for {n} embeddings")
    norms = np.linalg.norm(z, axis=1)
    if not np.all(np.abs(norms - 1.0) < _UNIT_TOLERANCE):
        raise ValueError(
            f"embedding rows must have unit length, found lengths in [{norms.min():.4g}, {norms.max():.4g}]"
        )
    _check_labels(library.labels, library.multilabel)
    if len(set(library.case_ids)) != n:
        raise ValueError("case ids must be unique")
    if FORBIDDEN_SPLIT in library.splits:
        # Test-split cases are what the library is measured on; in the library they would be their own neighbours.
        raise ValueError(f"{library.splits.count(FORBIDDEN_SPLIT)} cases of the test split in a reference library")
    if not all(t.startswith(_PNG_SIGNATURE) for t in library.thumbnails):
        raise ValueError("every thumbnail must be a PNG file")


def _check_labels(labels: np.ndarray, multilabel: bool) -> None:
    if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got {_describe(labels)}")
    if multilabel and (labels.ndim != 2 or not np.isin(labels, (0, 1)).all()):
        raise ValueError(f"multilabel labels must be (N, L) 0/1, got {_describe(labels)}")
    if not multilabel and (labels.ndim != 1 or labels.min() < 0):
        raise ValueError(f"class labels must be (N,) non-negative class indices, got {_describe(labels)}")


def _describe(value: object) -> str:
    return f"{value.shape} {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__


def _hnsw_index(embeddings: np.ndarray) -> Any:
    import faiss  # only for large libraries: the shipped ones search exactly

    index = faiss.IndexHNSWFlat(embeddings.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_BUILD_BREADTH
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    index.hnsw.efSearch = HNSW_SEARCH_BREADTH
    return index
