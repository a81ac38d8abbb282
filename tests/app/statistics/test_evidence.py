"""Readers' evidence against heatmaps: each statistic equals its hand computation on a small grid written out here,
and marks rasterise as the centre rule says (app/statistics/evidence.py)."""

from __future__ import annotations

import numpy as np
import pytest

from app.statistics import evidence

# A 4 x 4 signed map. Positive relevance: 1 + 2 + 1 + 4 + 3 + 2 + 1 + 2 = 16.
HEATMAP = np.array(
    [
        [0, 1, 2, 0],
        [1, 4, 3, 0],
        [-2, 2, 1, 0],
        [0, 0, 0, 2],
    ],
    dtype=np.float32,
)
# Cell centres of a 4-cell axis: 0.125, 0.375, 0.625, 0.875. This box holds rows 0-1 and columns 1-2.
BOX = {"kind": "box", "box": [0.3, 0.1, 0.7, 0.4]}
BOX_MASK = np.array(
    [
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ],
    dtype=bool,
)


def test_a_box_marks_the_cells_whose_centre_it_holds() -> None:
    assert (evidence.rasterise([BOX], (4, 4)) == BOX_MASK).all()
    # Centres on the box's edge count: on a 5-cell axis they are 0.1, 0.3, 0.5, 0.7, 0.9.
    edge = evidence.rasterise([{"kind": "box", "box": [0.1, 0.1, 0.3, 0.3]}], (5, 5))
    assert edge.sum() == 4 and edge[:2, :2].all()
    # Corners may come in any order; a box between two centres marks nothing.
    assert (evidence.rasterise([{"kind": "box", "box": [0.7, 0.4, 0.3, 0.1]}], (4, 4)) == BOX_MASK).all()
    assert not evidence.rasterise([{"kind": "box", "box": [0.15, 0.15, 0.25, 0.25]}], (4, 4)).any()


def test_a_brush_stroke_marks_its_swept_ellipse_and_erase_takes_it_away() -> None:
    # 5 x 5 centres at 0.1 ... 0.9. A stroke along y = 0.5 from x = 0.1 to 0.7, half-widths 0.15 (x) and 0.25 (y):
    # rows at y = 0.3, 0.5, 0.7 lie within 0.25 of it (0.2 / 0.25 = 0.8 <= 1), y = 0.1 and 0.9 do not (1.6);
    # columns x = 0.1 ... 0.7 lie along it, x = 0.9 is 0.2 past its end (0.2 / 0.15 = 1.33 > 1).
    stroke = {"kind": "brush", "points": [[0.1, 0.5], [0.4, 0.5], [0.7, 0.5]], "radius": [0.15, 0.25]}
    expected = np.zeros((5, 5), dtype=bool)
    expected[1:4, 0:4] = True
    assert (evidence.rasterise([stroke], (5, 5)) == expected).all()
    # A round brush of 0.15 keeps to its own row.
    thin = evidence.rasterise([{**stroke, "radius": [0.15, 0.15]}], (5, 5))
    assert thin.sum() == 4 and thin[2, :4].all()
    # An erase dab of one point at the centre unmarks that cell only; marks apply in order.
    dab = {"kind": "erase", "points": [[0.5, 0.5]], "radius": [0.05, 0.05]}
    erased = evidence.rasterise([stroke, dab], (5, 5))
    expected[2, 2] = False
    assert (erased == expected).all()
    assert evidence.rasterise([dab, stroke], (5, 5))[2, 2]  # erased before it was drawn: drawn again
    # A diagonal stroke: the cells on the diagonal, none beside it (0.2 off is more than 0.1).
    diagonal = evidence.rasterise([{"kind": "brush", "points": [[0.1, 0.1], [0.9, 0.9]], "radius": [0.1, 0.1]}], (5, 5))
    assert (diagonal == np.eye(5, dtype=bool)).all()
    with pytest.raises(ValueError, match="unknown mark kind"):
        evidence.rasterise([{"kind": "lasso"}], (5, 5))


def test_relevance_mass_by_hand() -> None:
    # Inside the box: 1 + 2 + 4 + 3 = 10 of 16; the negative -2 outside counts for nothing.
    assert evidence.relevance_mass(HEATMAP, BOX_MASK) == pytest.approx(10 / 16)
    everything = np.ones((4, 4), dtype=bool)
    assert evidence.relevance_mass(HEATMAP, everything) == 1.0
    only_negative = np.zeros((4, 4), dtype=bool)
    only_negative[2, 0] = True
    assert evidence.relevance_mass(HEATMAP, only_negative) == 0.0


def test_pointing_game_by_hand_with_ties() -> None:
    assert evidence.pointing_game(HEATMAP, BOX_MASK) == 1.0  # the 4 at (1, 1) is inside
    assert evidence.pointing_game(HEATMAP, ~BOX_MASK) == 0.0
    # Two cells hold the maximum 3, one inside the mask: half a hit.
    tied = np.array([[3, 0, 0], [0, 1, 0], [0, 0, 3]], dtype=np.float32)
    corner = np.zeros((3, 3), dtype=bool)
    corner[0, 0] = True
    assert evidence.pointing_game(tied, corner) == 0.5


def test_iou_at_equal_area_by_hand() -> None:
    # |M| = 4. The top 4 cells: 4 at (1, 1), 3 at (1, 2), then two of the three 2s, in row-major order (0, 2) and
    # (2, 1); (3, 3) is left out. M & T = {(0, 2), (1, 1), (1, 2)}: 3; M | T adds (0, 1) and (2, 1): 5.
    top = evidence.top_cells(HEATMAP, 4)
    assert sorted(zip(*np.nonzero(top), strict=True)) == [(0, 2), (1, 1), (1, 2), (2, 1)]
    assert evidence.iou_at_equal_area(HEATMAP, BOX_MASK) == pytest.approx(3 / 5)


def test_dice_by_hand() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    a[0, 0:3] = True  # 3 cells
    b[0, 1:4] = True  # 3 cells, 2 shared
    assert evidence.dice(a, b) == pytest.approx(2 * 2 / (3 + 3))
    assert evidence.dice(a, a) == 1.0
    assert evidence.dice(a, np.zeros((4, 4), dtype=bool)) == 0.0
    assert evidence.dice(np.zeros((4, 4), dtype=bool), np.zeros((4, 4), dtype=bool)) is None
    with pytest.raises(ValueError, match="one grid"):
        evidence.dice(a, np.zeros((2, 2), dtype=bool))


def test_undefined_cases_are_none_not_nan() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    zero = np.zeros((4, 4), dtype=np.float32)
    negative = -np.abs(HEATMAP) - 1
    for statistic in (evidence.relevance_mass, evidence.pointing_game, evidence.iou_at_equal_area):
        assert statistic(HEATMAP, empty) is None
        assert statistic(zero, BOX_MASK) is None
        assert statistic(negative, BOX_MASK) is None
    with pytest.raises(ValueError, match="NaN"):
        evidence.relevance_mass(np.full((4, 4), np.nan), BOX_MASK)


def test_a_mask_of_another_grid_is_resampled_to_the_heatmaps_by_its_centres() -> None:
    # 4 x 4 -> 2 x 2: the centres 0.25 and 0.75 fall in source cells 1 and 3 of each axis.
    source = np.zeros((4, 4), dtype=bool)
    source[1, 3] = source[3, 1] = True
    assert (evidence.resample(source, (2, 2)) == np.array([[0, 1], [1, 0]], dtype=bool)).all()
    # 2 x 2 -> 4 x 4: each source cell becomes a 2 x 2 block.
    assert (evidence.resample(np.eye(2, dtype=bool), (4, 4)) == np.kron(np.eye(2), np.ones((2, 2))).astype(bool)).all()
    # A box on cell edges rasterised at 8 x 8 and compared with the 4 x 4 map gives the 4 x 4 numbers: the mask is
    # resampled to the map's grid, the map is not touched.
    fine = evidence.rasterise([{"kind": "box", "box": [0.25, 0.0, 0.75, 0.5]}], (8, 8))
    assert fine.sum() == 16
    assert (evidence.resample(fine, (4, 4)) == BOX_MASK).all()
    assert evidence.relevance_mass(HEATMAP, fine) == pytest.approx(10 / 16)
    assert evidence.iou_at_equal_area(HEATMAP, fine) == pytest.approx(3 / 5)
    assert evidence.pointing_game(HEATMAP, fine) == 1.0


def test_the_comparison_grid_keeps_the_aspect_within_its_limit() -> None:
    assert evidence.comparison_grid(680, 1024) == (340, 512)
    assert evidence.comparison_grid(64, 96) == (64, 96)


def test_means_are_over_cases_each_case_weighing_the_same() -> None:
    # Case a: reads 1.0 and 0.0 (mean 0.5); case b: one read 1.0; case c: undefined only. (0.5 + 1.0) / 2.
    values = [("a", 1.0), ("a", 0.0), ("b", 1.0), ("c", None)]
    assert evidence.mean_over_cases(values) == (0.75, 2, 3)
    assert evidence.mean_over_cases([("c", None)]) == (None, 0, 0)
