"""Superpixels (2D) and supervoxels (3D) for the perturbation methods, in torch.

SLIC-like: Achanta et al., "SLIC Superpixels Compared to State-of-the-Art Superpixel Methods", IEEE TPAMI
2012. Centres start on a regular grid and k-means runs in the joint space of intensities and positions,
positions weighted by `compactness / grid step` so that segments stay compact. Simplifications against
the paper (scikit-image is not a dependency): every pixel is compared with every centre (not only the
centres within 2 steps; the inputs here are small), and connectivity is not enforced (a segment may be in
pieces; the perturbation methods do not need connected features).

Shapes: an image (C, *spatial) gives labels (*spatial) long in [0, K); a batch (B, C, *spatial) gives
(B, 1, *spatial), each row labelled on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

METHODS = ("slic", "grid")


def _grid_steps(spatial: Sequence[int], n_segments: int) -> list[int]:
    """Step per axis so that the grid has about n_segments cells."""
    side = (math.prod(spatial) / max(n_segments, 1)) ** (1.0 / len(spatial))
    return [max(1, min(s, round(side))) for s in spatial]


def grid_segments(spatial: Sequence[int], n_segments: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(*spatial) long labels of a regular grid of about `n_segments` cells (squares / cubes)."""
    steps = _grid_steps(spatial, n_segments)
    cells = [math.ceil(s / st) for s, st in zip(spatial, steps, strict=True)]
    index = torch.zeros(tuple(spatial), dtype=torch.long, device=device)
    for axis, (size, step) in enumerate(zip(spatial, steps, strict=True)):
        coords = torch.arange(size, device=device) // step
        shape = [1] * len(spatial)
        shape[axis] = size
        index = index * cells[axis] + coords.view(shape)
    return index


def _relabel(labels: torch.Tensor) -> torch.Tensor:
    """Consecutive labels 0..K-1 (k-means may leave clusters empty)."""
    return torch.unique(labels, return_inverse=True)[1].view(labels.shape)


def slic(image: torch.Tensor, n_segments: int = 50, *, compactness: float = 1.0, n_iter: int = 10) -> torch.Tensor:
    """SLIC-like superpixels of one image.

    Args:
        image: (C, *spatial) float, e.g. a normalised network input (channels of about unit spread).
        n_segments: about how many segments (the grid's cell count).
        compactness: weight of one grid step in position against one unit of intensity.
        n_iter: k-means iterations.

    Returns:
        (*spatial) long labels in [0, K), K <= the grid's cell count.
    """
    c, *spatial = image.shape
    steps = _grid_steps(spatial, n_segments)
    grids = torch.meshgrid(*[torch.arange(s, device=image.device, dtype=image.dtype) for s in spatial], indexing="ij")
    scale = compactness / (math.prod(steps) ** (1.0 / len(steps)))
    features = torch.cat([image.reshape(c, -1), torch.stack([g.reshape(-1) for g in grids]) * scale]).T
    labels = grid_segments(spatial, n_segments, image.device).reshape(-1)
    for _ in range(n_iter):
        labels = _relabel(labels)
        centres = _means(features, labels)
        labels = torch.cdist(features, centres).argmin(dim=1)
    return _relabel(labels).view(*spatial)


def _means(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(K, F) mean feature of each label 0..K-1 (all present: labels are relabelled first)."""
    k = int(labels.max()) + 1
    sums = torch.zeros((k, features.shape[1]), dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=k).to(features.dtype).unsqueeze(1)
    return sums / counts


def feature_masks(x: torch.Tensor, n_segments: int = 50, method: str = "slic", **kwargs: float) -> torch.Tensor:
    """(B, 1, *spatial) long feature masks of a batch (B, C, *spatial), each row's labels in [0, K_b)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _, _, *spatial = x.shape
    if method == "grid":
        return grid_segments(spatial, n_segments, x.device).expand(x.shape[0], 1, *spatial).clone()
    return torch.stack([slic(row, n_segments, **kwargs) for row in x.detach()]).unsqueeze(1)  # type: ignore[arg-type]
