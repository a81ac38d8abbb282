"""Reading training data files, with clear errors for broken ones.

RetinaMNIST (MedMNIST v2; Yang et al., Sci Data 2023; CC BY 4.0): an .npz with `{split}_images`
(N, 28, 28, 3) uint8 and `{split}_labels` (N, 1) uint8 DR grades 0-4, for splits train / val / test.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


class TrainingDataError(ValueError):
    """A training data file is missing, unreadable or not what the recipe expects; says which and why."""


@dataclass(frozen=True)
class ImageSplit:
    """images (N, H, W, C) uint8 and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.size)

    def head(self, n: int | None) -> ImageSplit:
        """The first n samples (all when n is None)."""
        return self if n is None else ImageSplit(self.images[:n], self.labels[:n])


def load_medmnist(path: Path, *, num_classes: int, size: int = 28, channels: int = 3) -> dict[str, ImageSplit]:
    """The train / val / test splits of a MedMNIST .npz file, checked.

    Raises:
        TrainingDataError: the file is missing, not a readable .npz (e.g. an interrupted download), lacks
            a split, or holds images or labels of the wrong shape, type or range.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {split: _split(archive, split, num_classes, (size, size, channels)) for split in SPLITS}
    except TrainingDataError as exc:
        raise TrainingDataError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        # np.load raises these for a truncated or corrupt archive, sometimes only when a member is read.
        raise TrainingDataError(
            f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}); is the download complete?"
        ) from None


def _split(archive: np.lib.npyio.NpzFile, split: str, num_classes: int, shape: tuple[int, ...]) -> ImageSplit:
    for key in (f"{split}_images", f"{split}_labels"):
        if key not in archive.files:
            raise TrainingDataError(f"array {key!r} is missing (found {sorted(archive.files)})")
    images = archive[f"{split}_images"]
    labels = archive[f"{split}_labels"]
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        raise TrainingDataError(f"{split}_images must be (N, {', '.join(map(str, shape))}) uint8, "
                                f"got {images.shape} {images.dtype}")
    labels = labels.reshape(-1)
    if labels.size != images.shape[0] or labels.size == 0:
        raise TrainingDataError(f"{split}: {images.shape[0]} images but {labels.size} labels")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes:
        raise TrainingDataError(f"{split}_labels must be integers in [0, {num_classes}), "
                                f"got {labels.dtype} in [{labels.min()}, {labels.max()}]")
    return ImageSplit(images=images, labels=labels.astype(np.int64))
