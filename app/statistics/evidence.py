"""Readers' own evidence against a heatmap, and between readers: pure functions on numpy arrays.

A reader marks the regions that drove their grade as boxes and brush strokes (an erase stroke takes marked area
away), all in normalised image coordinates: x = column / image width and y = row / image height, both 0..1 from
the image's top left corner, so a mark means the same place whatever the size it was drawn at. A mark is a
mapping (as stored on the read, app/reading/schemas.py EvidenceMark):

    {"kind": "box", "box": [x0, y0, x1, y1]}
    {"kind": "brush" | "erase", "points": [[x, y], ...], "radius": [rx, ry]}

`radius` is the brush's half width along x and along y, each in its own axis's normalised units: a round brush of
r image pixels on a W x H image has rx = r / W and ry = r / H.

Grids and resampling. A grid of shape (h, w) cuts the image into h x w cells; cell (i, j) has its centre at
((j + 0.5) / w, (i + 0.5) / h). `rasterise` marks the cells whose centre lies in a box (edges included) or within
a brush's ellipse of one of its stroke's segments, applying the marks in order. The statistics compare a heatmap
with a mask on the heatmap's own grid: the heatmap is never resampled, so its values (its relevance, its
maximum) stay those stored. A mask of another shape is first resampled to the heatmap's grid by the same centre
rule (`resample`): each heatmap cell takes the value of the mask cell that contains its centre (nearest
neighbour). Marks are best rasterised straight onto the heatmap's grid, which needs no resampling at all.

Undefined values are None, never NaN: every heatmap statistic is None when the mask is empty (the reader marked
nothing there) or when the heatmap carries no positive relevance (all zero or negative: it points nowhere); Dice
is None when both masks are empty.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Mask = NDArray[np.bool_]
MARK_KINDS = ("box", "brush", "erase")


def _grid(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) != 2 or min(int(n) for n in shape) < 1:
        raise ValueError(f"a grid is (rows, columns) of at least one cell each, not {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _centres(count: int) -> NDArray[np.float64]:
    """The normalised centres of `count` cells along one axis."""
    return (np.arange(count, dtype=np.float64) + 0.5) / count


def _paint_box(mask: Mask, box: Sequence[float], value: bool) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    rows, columns = mask.shape
    ys, xs = _centres(rows), _centres(columns)
    inside_rows = (ys >= min(y0, y1)) & (ys <= max(y0, y1))
    inside_columns = (xs >= min(x0, x1)) & (xs <= max(x0, x1))
    mask[np.ix_(inside_rows, inside_columns)] = value


def _cell_range(centres: NDArray[np.float64], low: float, high: float) -> slice:
    return slice(int(np.searchsorted(centres, low, side="left")), int(np.searchsorted(centres, high, side="right")))


def _paint_segment(
    mask: Mask, a: NDArray[np.float64], b: NDArray[np.float64], radius: NDArray[np.float64], value: bool
) -> None:
    """The cells whose centre lies within the ellipse `radius` of the segment a-b: in coordinates scaled by
    1 / radius the ellipse is the unit disc and the swept region a capsule, distance to the segment <= 1."""
    rows, columns = mask.shape
    ys, xs = _centres(rows), _centres(columns)
    row_span = _cell_range(ys, min(a[1], b[1]) - radius[1], max(a[1], b[1]) + radius[1])
    column_span = _cell_range(xs, min(a[0], b[0]) - radius[0], max(a[0], b[0]) + radius[0])
    if row_span.start >= row_span.stop or column_span.start >= column_span.stop:
        return
    u = (xs[column_span][None, :] - a[0]) / radius[0]
    v = (ys[row_span][:, None] - a[1]) / radius[1]
    du, dv = (b[0] - a[0]) / radius[0], (b[1] - a[1]) / radius[1]
    length2 = du * du + dv * dv
    t = np.clip((u * du + v * dv) / length2, 0.0, 1.0) if length2 > 0 else np.zeros((1, 1))
    inside = (u - t * du) ** 2 + (v - t * dv) ** 2 <= 1.0
    mask[row_span, column_span][inside] = value


def _paint_stroke(mask: Mask, points: Sequence[Sequence[float]], radius: Sequence[float], value: bool) -> None:
    path = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    size = np.asarray(radius, dtype=np.float64).reshape(2)
    if not len(path) or (size <= 0).any():
        return
    if len(path) == 1:
        _paint_segment(mask, path[0], path[0], size, value)
    for a, b in zip(path[:-1], path[1:], strict=True):
        _paint_segment(mask, a, b, size, value)


def rasterise(marks: Iterable[Mapping[str, Any]], shape: Sequence[int]) -> Mask:
    """The marks as a boolean mask of `shape` (rows, columns): boxes and brush strokes mark, erase strokes unmark,
    in the order given; a cell counts when its centre is inside (see the module's docstring)."""
    mask = np.zeros(_grid(shape), dtype=bool)
    for mark in marks:
        kind = mark.get("kind")
        if kind == "box":
            _paint_box(mask, mark["box"], True)
        elif kind in ("brush", "erase"):
            _paint_stroke(mask, mark["points"], mark["radius"], kind == "brush")
        else:
            raise ValueError(f"unknown mark kind {kind!r}; the kinds are {', '.join(MARK_KINDS)}")
    return mask


def resample(mask: ArrayLike, shape: Sequence[int]) -> Mask:
    """The mask on a grid of `shape`: each cell takes the mask cell that contains its centre (nearest neighbour)."""
    source = np.asarray(mask, dtype=bool)
    if source.ndim != 2:
        raise ValueError(f"a mask is 2D, not of shape {source.shape}")
    rows, columns = _grid(shape)
    if source.shape == (rows, columns):
        return source.copy()
    row_index = np.minimum((_centres(rows) * source.shape[0]).astype(np.intp), source.shape[0] - 1)
    column_index = np.minimum((_centres(columns) * source.shape[1]).astype(np.intp), source.shape[1] - 1)
    return source[np.ix_(row_index, column_index)]


def _pair(heatmap: ArrayLike, mask: ArrayLike) -> tuple[NDArray[np.float64], Mask]:
    """The heatmap as float and the mask on its grid; ValueError for a map that is not 2D or not finite."""
    values = np.asarray(heatmap, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"a heatmap is a non-empty 2D array, not of shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("the heatmap holds NaN or infinite values")
    return values, resample(mask, values.shape)


def _defined(values: NDArray[np.float64], mask: Mask) -> bool:
    return bool(mask.any()) and bool((values > 0).any())


def relevance_mass(heatmap: ArrayLike, mask: ArrayLike) -> float | None:
    """The share of the heatmap's positive relevance that lies inside the mask: sum of max(h, 0) over the mask /
    sum of max(h, 0) over the map, in [0, 1] (relevance mass accuracy, Arras, Osman & Samek 2022, Information
    Fusion 81:14). None when the mask is empty or the map has no positive relevance."""
    values, inside = _pair(heatmap, mask)
    if not _defined(values, inside):
        return None
    positive = np.maximum(values, 0.0)
    return float(positive[inside].sum() / positive.sum())


def pointing_game(heatmap: ArrayLike, mask: ArrayLike) -> float | None:
    """Whether the heatmap's maximum falls inside the mask (the pointing game, Zhang et al. 2018, IJCV 126:1084):
    1.0 or 0.0 when one cell holds the maximum. Where several cells tie for it, the share of them inside the mask:
    the chance of a hit when the tie is broken at random, so that a plateau is neither all hit nor all miss.
    None when the mask is empty or the map has no positive relevance (its maximum is then no evidence)."""
    values, inside = _pair(heatmap, mask)
    if not _defined(values, inside):
        return None
    peaks = values == values.max()
    return float(inside[peaks].sum() / peaks.sum())


def top_cells(heatmap: ArrayLike, count: int) -> Mask:
    """The `count` cells of highest value; ties at the cut go to the cell first in row-major (C) order."""
    values = np.asarray(heatmap, dtype=np.float64)
    chosen = np.zeros(values.size, dtype=bool)
    chosen[np.argsort(-values.ravel(), kind="stable")[: max(0, int(count))]] = True
    return chosen.reshape(values.shape)


def iou_at_equal_area(heatmap: ArrayLike, mask: ArrayLike) -> float | None:
    """IoU of the mask with the heatmap's top cells of the mask's own area: |M & T| / |M | T|, T the |M| cells of
    highest value (top_cells: ties at the cut broken in row-major order). The heatmap thresholded at the reader's
    area, so that neither a threshold nor the map's scale decides. None when the mask is empty or the map has no
    positive relevance."""
    values, inside = _pair(heatmap, mask)
    if not _defined(values, inside):
        return None
    top = top_cells(values, int(inside.sum()))
    return float((top & inside).sum() / (top | inside).sum())


def dice(mask_a: ArrayLike, mask_b: ArrayLike) -> float | None:
    """Dice coefficient 2|A & B| / (|A| + |B|) of two masks of one grid (Dice 1945, Ecology 26:297); 0.0 when only
    one is empty, None when both are."""
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks of shapes {a.shape} and {b.shape} are not on one grid")
    total = int(a.sum()) + int(b.sum())
    return float(2 * (a & b).sum() / total) if total else None


def comparison_grid(rows: int, columns: int, *, limit: int = 512) -> tuple[int, int]:
    """The grid two readers' masks of an image are compared on: the image's own, scaled down (aspect kept) so that
    its longer side is at most `limit` cells; Dice, a ratio of areas, hardly changes beyond that."""
    scale = min(1.0, limit / max(rows, columns))
    return max(1, round(rows * scale)), max(1, round(columns * scale))


def mean_over_cases(values: Iterable[tuple[Hashable, float | None]]) -> tuple[float | None, int, int]:
    """(mean, cases, values) of (case, value) pairs: each case's defined values are averaged first, then the cases,
    so that every case weighs the same however many reads (or reader pairs) it has. None values are left out; the
    mean is None when no value is defined."""
    by_case: dict[Hashable, list[float]] = {}
    for case, value in values:
        if value is not None:
            by_case.setdefault(case, []).append(float(value))
    if not by_case:
        return None, 0, 0
    means = [float(np.mean(items)) for items in by_case.values()]
    return float(np.mean(means)), len(by_case), sum(len(items) for items in by_case.values())
