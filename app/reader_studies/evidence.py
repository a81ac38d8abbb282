"""Readers' own evidence in a reader study: where each reader marked the grade came from, against the heatmaps of
the case's prediction and against the other readers (the statistics of app/statistics/evidence.py).

Which maps: the newest prediction of the case's image (the one the reading room serves), one map per method, the
one the reading room shows first (its lowest target class). Unassisted reads are compared with the same maps:
their readers never saw them, which makes them the independent expert judgement; readers of an arm that shows a
map may have marked what it showed.

Which grid: a read's marks on the case's image (frame 0) are rasterised straight onto each heatmap's own grid (the
map stretched over the whole image, as the viewer draws it), so no heatmap value is resampled; two readers' marks
are compared on the image's grid, at most 512 cells on its longer side (statistics.evidence.comparison_grid).

Means are over cases (each case's reads averaged first, statistics.evidence.mean_over_cases), per method and per
condition; inter-reader Dice takes every pair of reads of a case by two different readers who both marked it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.audit import service as audit_service
from app.predictions import service as predictions_service
from app.reading import vocabulary
from app.statistics import evidence as stats
from app.tables import Heatmap, Read, ReaderStudy, ReadState, StudyAssignment, StudyCase
from app.viewer import images

# One row per submitted read and heatmap method of its case (export: evidence.csv).
HEATMAP_COLUMNS = (
    "study",
    "reader",
    "case",
    "condition",
    "session",
    "step",
    "method",
    "target_class",
    "grid_rows",
    "grid_columns",
    "marks",
    "marked_fraction",
    "relevance_mass",
    "pointing_game",
    "iou_equal_area",
)
# One row per pair of reads of a case by two readers who both marked it (export: evidence.csv?table=pairs).
PAIR_COLUMNS = (
    "study",
    "case",
    "reader_a",
    "condition_a",
    "reader_b",
    "condition_b",
    "grid_rows",
    "grid_columns",
    "dice",
)
STATISTICS = ("relevance_mass", "pointing_game", "iou_equal_area")
Table = Literal["heatmaps", "pairs"]


@dataclass(frozen=True)
class MarkedRead:
    """A submitted read of the study, with its marks on the case's image."""

    reader: str
    case_id: int
    case: str
    condition: str
    session: int
    step: int
    marks: list[dict[str, Any]]


@dataclass(frozen=True)
class CaseMap:
    method: str
    target_class: int
    values: np.ndarray  # (H, W) float32, the raw attribution


def _marks_on(read: Read, case: StudyCase) -> list[dict[str, Any]]:
    return [
        mark
        for mark in read.evidence_marks or []
        if mark.get("instance_id") == case.instance_id and mark.get("frame", 0) == 0
    ]


def marked_reads(session: Session, *, study: ReaderStudy) -> list[MarkedRead]:
    """The study's submitted reads in reader then queue order, each with its marks on the case's image."""
    rows = session.execute(
        select(StudyAssignment, Read)
        .join(Read, Read.assignment_id == StudyAssignment.id)
        .where(StudyAssignment.reader_study_id == study.id, Read.state == ReadState.submitted)
        .options(selectinload(StudyAssignment.case), selectinload(StudyAssignment.reader))
    ).all()
    rows = sorted(rows, key=lambda row: (row[0].reader.position, row[0].order))
    return [
        MarkedRead(
            reader=assignment.reader.pseudonym,
            case_id=assignment.case_id,
            case=assignment.case.pseudonym,
            condition=assignment.condition,
            session=assignment.session,
            step=assignment.step,
            marks=_marks_on(read, assignment.case),
        )
        for assignment, read in rows
    ]


def _planar(shape: list[int]) -> bool:
    """A 2D map (leading axes of 1 aside): a 3D map has no one grid to compare a mark on one image with."""
    dims = list(shape)
    while len(dims) > 2 and dims[0] == 1:
        dims.pop(0)
    return len(dims) == 2


def case_maps(session: Session, *, cases: Iterable[StudyCase]) -> dict[int, list[CaseMap]]:
    """Each case's maps, one per method (the reading room's first: lowest target class), by case id."""
    cases = list(cases)
    predictions = predictions_service.latest_predictions(session, instance_ids=[case.instance_id for case in cases])
    maps: dict[int, list[CaseMap]] = {}
    for case in cases:
        prediction = predictions.get(case.instance_id)
        first: dict[str, Heatmap] = {}
        for heatmap in sorted(prediction.heatmaps if prediction else [], key=lambda row: row.target_class):
            first.setdefault(heatmap.method, heatmap)
        maps[case.id] = [
            CaseMap(method=method, target_class=heatmap.target_class, values=images.heatmap_array(heatmap))
            for method, heatmap in sorted(first.items())
            if _planar(heatmap.shape)
        ]
    return maps


def _statistics(heatmap: np.ndarray, mask: np.ndarray) -> dict[str, float | None]:
    return {
        "relevance_mass": stats.relevance_mass(heatmap, mask),
        "pointing_game": stats.pointing_game(heatmap, mask),
        "iou_equal_area": stats.iou_at_equal_area(heatmap, mask),
    }


def heatmap_rows(study: ReaderStudy, reads: list[MarkedRead], maps: dict[int, list[CaseMap]]) -> list[dict[str, Any]]:
    """One row per read and method of its case's maps: the read's marks against that map."""
    rows = []
    for read in reads:
        for case_map in maps.get(read.case_id, []):
            mask = stats.rasterise(read.marks, case_map.values.shape)
            rows.append(
                {
                    "study": study.name,
                    "reader": read.reader,
                    "case": read.case,
                    "condition": read.condition,
                    "session": read.session,
                    "step": read.step,
                    "method": case_map.method,
                    "target_class": case_map.target_class,
                    "grid_rows": int(mask.shape[0]),
                    "grid_columns": int(mask.shape[1]),
                    "marks": len(read.marks),
                    "marked_fraction": float(mask.mean()),
                    **_statistics(case_map.values, mask),
                }
            )
    return rows


def pair_rows(study: ReaderStudy, reads: list[MarkedRead], cases: dict[int, StudyCase]) -> list[dict[str, Any]]:
    """Dice of every two reads of a case by different readers who both marked something, on the image's grid."""
    rows = []
    for case_id, case in cases.items():
        grid = stats.comparison_grid(case.instance.rows, case.instance.columns)
        masks = [(read, stats.rasterise(read.marks, grid)) for read in reads if read.case_id == case_id and read.marks]
        for (a, mask_a), (b, mask_b) in combinations([item for item in masks if item[1].any()], 2):
            if a.reader == b.reader:
                continue
            rows.append(
                {
                    "study": study.name,
                    "case": case.pseudonym,
                    "reader_a": a.reader,
                    "condition_a": a.condition,
                    "reader_b": b.reader,
                    "condition_b": b.condition,
                    "grid_rows": grid[0],
                    "grid_columns": grid[1],
                    "dice": stats.dice(mask_a, mask_b),
                }
            )
    return rows


@dataclass(frozen=True)
class Evidence:
    reads: list[MarkedRead]
    rows: list[dict[str, Any]]  # HEATMAP_COLUMNS
    pairs: list[dict[str, Any]]  # PAIR_COLUMNS


def evidence_of(session: Session, *, study: ReaderStudy) -> Evidence:
    """The study's submitted reads with their marks, their rows against the heatmaps, and the pairs of readers."""
    cases = {
        case.id: case
        for case in session.scalars(
            select(StudyCase).where(StudyCase.reader_study_id == study.id).options(selectinload(StudyCase.instance))
        )
    }
    reads = marked_reads(session, study=study)
    maps = case_maps(session, cases=[cases[case_id] for case_id in sorted({read.case_id for read in reads})])
    return Evidence(reads=reads, rows=heatmap_rows(study, reads, maps), pairs=pair_rows(study, reads, cases))


def _means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each statistic's mean over cases, and the cases and reads it is over: the same for all three, which are
    defined alike (a mask not empty on the map's grid, a map with positive relevance)."""
    out: dict[str, Any] = {}
    for name in STATISTICS:
        out[name], out["cases"], out["reads"] = stats.mean_over_cases((row["case"], row[name]) for row in rows)
    return out


def _dice_means(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    mean, cases, count = stats.mean_over_cases((row["case"], row["dice"]) for row in pairs)
    return {"dice": mean, "cases": cases, "pairs": count}


def summarise(study: ReaderStudy, rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The dashboard's numbers: per method, means over cases overall and per condition; inter-reader Dice."""
    conditions = [(item["key"], item.get("label") or item["key"]) for item in study.conditions]
    methods = []
    for method in sorted({row["method"] for row in rows}):
        mine = [row for row in rows if row["method"] == method]
        methods.append(
            {
                "method": method,
                "label": vocabulary.method_label(method),
                "overall": _means(mine),
                "by_condition": [
                    {"condition": key, "label": label, **_means([row for row in mine if row["condition"] == key])}
                    for key, label in conditions
                ],
            }
        )
    same = [
        {
            "condition": key,
            "label": label,
            **_dice_means([p for p in pairs if p["condition_a"] == p["condition_b"] == key]),
        }
        for key, label in conditions
    ]
    return {"methods": methods, "dice": {"overall": _dice_means(pairs), "by_condition": same}}


def summary(session: Session, *, study: ReaderStudy) -> dict[str, Any]:
    """The study's evidence statistics for the dashboard (and export.json), JSON-ready."""
    found = evidence_of(session, study=study)
    return {
        "reads": len(found.reads),
        "reads_marked": sum(1 for read in found.reads if read.marks),
        **summarise(study, found.rows, found.pairs),
    }


def exported_rows(
    session: Session, *, study: ReaderStudy, table: Table, user_id: int, ip: str
) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """The columns and rows of an evidence download (`table` heatmaps or pairs), the export audited."""
    found = evidence_of(session, study=study)
    chosen = found.rows if table == "heatmaps" else found.pairs
    audit_service.record_when_read(
        session,
        action="export",
        user_id=user_id,
        object_type="reader_study",
        object_id=study.id,
        detail={"format": "evidence_csv", "table": table, "rows": len(chosen)},
        ip=ip,
    )
    return (HEATMAP_COLUMNS if table == "heatmaps" else PAIR_COLUMNS), chosen
