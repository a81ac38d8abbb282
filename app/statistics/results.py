"""The coordinator dashboard's numbers, computed from the long-format reads (app/reader_studies/export.py
makes them from the database; app/reader_studies/results.py calls this with them).

Per condition: accuracy; sensitivity and specificity for referable DR (ICDR grade >= 2, as in Sayres et al.
2019) or for the study's finding (Design.positive_finding: its "present" answer); quadratic-weighted kappa
against the reference (per reader, then averaged) and between readers; Fleiss' kappa; Krippendorff's alpha
(ordinal). Ratings: mean per method and question with a bootstrap interval, and the ICC across readers. An ORH
multi-reader multi-case comparison of each assisted condition with the unassisted one where the design is fully
crossed. Undefined values are None.
"""

from __future__ import annotations

import math
import statistics as pystats
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from app.statistics import agreement as stats
from app.statistics import mrmc

T = TypeVar("T")

# The tasks and condition kinds of a study as stored (app.tables.StudyTask, ConditionKind; string enums).
DR_GRADING, BINARY_FINDING, EXPLANATION_RATING = "dr_grading", "binary_finding", "explanation_rating"
UNASSISTED = "unassisted"
BOOTSTRAP_SEED = 20190401  # fixed: the dashboard shows the same intervals on every load
# Every condition's result has these keys (None where undefined), so pages and exports see one shape.
_MEASURES = ("accuracy", "sensitivity", "specificity", "kappa_vs_reference_by_reader", "kappa_vs_reference_mean",
             "kappa_between_readers", "krippendorff_alpha_ordinal", "fleiss_kappa")


@dataclass(frozen=True)
class Design:
    """What the numbers depend on of a study: its task, scheme and conditions, and the forms' vocabulary."""

    task: str  # dr_grading | binary_finding | explanation_rating
    scheme: str  # counterbalanced | crossed | sequential
    conditions: Sequence[Mapping[str, Any]]  # key, kind, method, label
    rating_questions: Sequence[str]  # the keys of the explanation questions, in the forms' order
    # The answer (and reference) that counts as positive in a binary-finding study: "present", the study's own
    # finding present ("Effusion present?"); "nodule" in a study that names no finding (the older nodule form).
    positive_finding: str


def clean(value: Any) -> Any:
    """NaN and infinities become None (JSON has neither); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {key: clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _answer_and_truth(design: Design, row: dict[str, Any]) -> tuple[float | None, float | None]:
    """The read's ordinal answer and the reference on the same scale (grade 0-4, or finding 1/0)."""
    if design.task == DR_GRADING:
        return row["dr_grade"], row["reference_dr_grade"]
    if design.task == BINARY_FINDING:
        answer = None if row["finding"] is None else float(row["finding"] == design.positive_finding)
        truth = None if row["reference_finding"] is None else float(row["reference_finding"] == design.positive_finding)
        return answer, truth
    return None, None


def _positive(design: Design, value: float) -> bool:
    return value >= 2 if design.task == DR_GRADING else value >= 1


def _score(design: Design, row: dict[str, Any]) -> float | None:
    """An ordinal suspicion score for ROC analysis: the grade (DR), or the finding weighted by confidence."""
    if design.task == DR_GRADING:
        return row["dr_grade"]
    if row["finding"] is None:
        return None
    confidence = row["confidence"] or 3
    return 5 + confidence if row["finding"] == design.positive_finding else 6 - confidence


def _labels(design: Design) -> list[int]:
    return list(range(5)) if design.task == DR_GRADING else [0, 1]


def _matrix(rows: list[dict], readers: list[str], cases: list[str], design: Design) -> np.ndarray:
    """Readers x cases answers (NaN where the reader did not read the case under this condition)."""
    matrix = np.full((len(readers), len(cases)), np.nan)
    r_index, c_index = {r: i for i, r in enumerate(readers)}, {c: i for i, c in enumerate(cases)}
    for row in rows:
        answer, _ = _answer_and_truth(design, row)
        if answer is not None:
            matrix[r_index[row["reader"]], c_index[row["case"]]] = answer
    return matrix


def _judged(design: Design, done: list[dict]) -> list[tuple[str, float, float]]:
    """(reader, answer, reference) of the reads that have both on the task's ordinal scale."""
    judged = []
    for row in done:
        answer, reference = _answer_and_truth(design, row)
        if answer is not None and reference is not None:
            judged.append((row["reader"], answer, reference))
    return judged


def _against_reference(design: Design, judged: list[tuple[str, float, float]]) -> dict[str, Any]:
    """Accuracy, sensitivity and specificity of the positive call, and quadratic kappa per reader and mean."""
    if not judged:
        return {}
    answers = np.array([answer for _, answer, _ in judged])
    truth = np.array([reference for _, _, reference in judged])
    sensitivity, specificity = stats.sensitivity_specificity(
        predicted=[_positive(design, a) for a in answers], truth=[_positive(design, t) for t in truth]
    )
    per_reader: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for reader, answer, reference in judged:
        per_reader[reader].append((answer, reference))
    kappas = {
        reader: stats.quadratic_kappa(a=[a for a, _ in items], b=[t for _, t in items], labels=_labels(design))
        for reader, items in sorted(per_reader.items())
    }
    finite = [value for value in kappas.values() if math.isfinite(value)]
    return {
        "accuracy": stats.accuracy(answers=answers, reference=truth),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "kappa_vs_reference_by_reader": kappas,
        "kappa_vs_reference_mean": float(np.mean(finite)) if finite else None,
    }


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _effort(done: list[dict]) -> dict[str, Any]:
    """Time, confidence and assistance toggles of the reads."""
    seconds = [row["seconds"] for row in done if row["seconds"] is not None]
    confidence = [row["confidence"] for row in done if row["confidence"] is not None]
    return {
        "mean_seconds": _mean_or_none(seconds),
        "median_seconds": float(pystats.median(seconds)) if seconds else None,
        "mean_confidence": _mean_or_none(confidence),
        "toggles": sum(row["toggles"] for row in done),
    }


def _condition_result(design: Design, condition: Mapping[str, Any], rows: list[dict]) -> dict[str, Any]:
    done = [row for row in rows if row["state"] == "done" and row["condition"] == condition["key"]]
    judged = _judged(design, done)
    return {
        "key": condition["key"],
        "label": condition.get("label"),
        "kind": condition["kind"],
        "method": condition.get("method"),
        "reads": len(done),
        "reads_with_reference": len(judged),
        **dict.fromkeys(_MEASURES),
        **_against_reference(design, judged),
        **_agreement(design, done),
        **_effort(done),
    }


def _agreement(design: Design, done: list[dict]) -> dict[str, Any]:
    """Agreement between readers on these reads (one answer per reader and case)."""
    readers = sorted({row["reader"] for row in done})
    cases = sorted({row["case"] for row in done})
    if len(readers) < 2 or not cases:
        return {}
    matrix = _matrix(done, readers, cases, design)
    return {
        "kappa_between_readers": stats.mean_pairwise_kappa(matrix=matrix, labels=_labels(design)),
        "krippendorff_alpha_ordinal": _safe(lambda: stats.krippendorff_alpha(matrix=matrix, level="ordinal")),
        "fleiss_kappa": _safe(lambda: stats.fleiss_kappa(matrix=matrix.T, categories=_labels(design))),
    }


def _pooled_agreement(design: Design, rows: list[dict]) -> dict[str, Any] | None:
    """A counterbalanced design reads each case once per reader, often under one reader per condition: the
    readers' agreement is then only defined over all conditions pooled."""
    if design.scheme != "counterbalanced" or design.task == EXPLANATION_RATING:
        return None
    done = [row for row in rows if row["state"] == "done"]
    return {"kappa_between_readers": None, "krippendorff_alpha_ordinal": None, "fleiss_kappa": None,
            **_agreement(design, done)}


def _safe(compute: Callable[[], T]) -> T | None:
    """Agreement statistics are undefined on some designs (e.g. one category only): None, not a 500."""
    try:
        return compute()
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return None


def _progress(rows: list[dict]) -> dict[str, Any]:
    by_reader: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_case: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        for table, key in ((by_reader, row["reader"]), (by_case, row["case"])):
            table[key][1] += 1
            table[key][0] += row["state"] == "done"
    return {
        "done": sum(row["state"] == "done" for row in rows),
        "total": len(rows),
        "by_reader": [{"reader": key, "done": d, "total": t} for key, (d, t) in sorted(by_reader.items())],
        "by_case": [{"case": key, "done": d, "total": t} for key, (d, t) in sorted(by_case.items())],
    }


def _ratings(rows: list[dict], questions: Sequence[str]) -> dict[str, Any]:
    rated = [row for row in rows if row["rating_method"]]
    by_method = []
    for method in sorted({row["rating_method"] for row in rated}):
        for question in questions:
            values = [row[f"rating_{question}"] for row in rated
                      if row["rating_method"] == method and row[f"rating_{question}"] is not None]
            if len(values) >= 2:
                mean, low, high = stats.bootstrap_mean_ci(values=values, seed=BOOTSTRAP_SEED)
            elif values:  # one rating: a mean, no interval
                mean, low, high = float(values[0]), None, None
            if values:
                by_method.append({"method": method, "question": question, "n": len(values), "mean": mean,
                                  "ci_low": low, "ci_high": high})
    return {"by_method": by_method, "icc": _ratings_icc(rated, questions)}


def _ratings_icc(rated: list[dict], questions: Sequence[str]) -> dict[str, Any]:
    """ICC across readers of each question, over the (case, method) targets that every reader rated."""
    readers = sorted({row["reader"] for row in rated})
    result: dict[str, Any] = {}
    for question in questions:
        table: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        for row in rated:
            if row[f"rating_{question}"] is not None:
                table[(row["case"], row["rating_method"])][row["reader"]] = row[f"rating_{question}"]
        complete = [target for target, by_reader in sorted(table.items()) if len(by_reader) == len(readers)]
        if len(readers) < 2 or len(complete) < 2:
            result[question] = {"targets": len(complete), "raters": len(readers),
                                "note": "needs at least 2 targets rated by every reader"}
            continue
        matrix = np.array([[table[target][reader] for reader in readers] for target in complete], dtype=float)
        value = _safe(partial(stats.icc, matrix=matrix))
        result[question] = {"targets": len(complete), "raters": len(readers),
                            **(value.as_dict() | {"ICC2_ci95": list(value.icc2_ci95)} if value else {})}
    return result


def _time_course(rows: list[dict]) -> list[dict[str, Any]]:
    """Mean seconds per case by position in the readers' queues (learning and fatigue over the study)."""
    by_order: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if row["state"] == "done" and row["seconds"] is not None:
            by_order[row["order"]].append(row["seconds"])
    return [{"order": order + 1, "mean_seconds": float(np.mean(values)), "reads": len(values)}
            for order, values in sorted(by_order.items())]


_ORH_NEEDS = ("ORH needs every reader to read every case with a reference under both conditions "
              "(a crossed or sequential design, all reads done) and both classes present")


def _mrmc(design: Design, rows: list[dict]) -> dict[str, Any]:
    """ORH comparison (AUC of the ordinal score) of each assisted condition with the unassisted one."""
    if design.task == EXPLANATION_RATING:
        return {"supported": False, "reason": "an explanation-rating study has no diagnostic answer"}
    baseline = next((c["key"] for c in design.conditions if c["kind"] == UNASSISTED), None)
    if baseline is None:
        return {"supported": False, "reason": "no unassisted condition to compare with"}
    truth_of = {
        row["case"]: _positive(design, ref) for row in rows if (ref := _answer_and_truth(design, row)[1]) is not None
    }
    comparisons = [
        _orh_comparison(design, rows, keys=(baseline, condition["key"]), truth_of=truth_of)
        for condition in design.conditions
        if condition["key"] != baseline
    ]
    return {"supported": any(c.get("supported") for c in comparisons), "comparisons": comparisons}


def _orh_scores(design: Design, rows: list[dict], *, keys: tuple[str, str], readers: list[str],
                cases: list[str]) -> np.ndarray:
    """Conditions x readers x cases suspicion scores (NaN where a read is missing)."""
    scores = np.full((2, len(readers), len(cases)), np.nan)
    case_index = {case: i for i, case in enumerate(cases)}
    for row in rows:
        if row["state"] == "done" and row["condition"] in keys and row["case"] in case_index:
            scores[keys.index(row["condition"]), readers.index(row["reader"]), case_index[row["case"]]] = (
                _score(design, row)
            )
    return scores


def _orh_comparison(design: Design, rows: list[dict], *, keys: tuple[str, str],
                    truth_of: dict[str, bool]) -> dict[str, Any]:
    """One assisted condition against the baseline, or why ORH cannot compare them on these reads."""
    readers = sorted({row["reader"] for row in rows})
    cases = sorted(truth_of)
    scores = _orh_scores(design, rows, keys=keys, readers=readers, cases=cases)
    truth = np.array([truth_of[case] for case in cases], dtype=bool)
    comparison: dict[str, Any] = {"modalities": list(keys), "figure_of_merit": "empirical AUC"}
    if np.isnan(scores).any() or truth.all() or not truth.any() or len(readers) < 2:
        return comparison | {"supported": False, "reason": _ORH_NEEDS}
    result = mrmc.mrmc_analysis(scores=scores, truth=truth)
    return comparison | {
        "supported": True,
        "auc": dict(zip(keys, result.modality_means.tolist(), strict=True)),
        "difference": result.difference,
        "difference_ci95": result.difference_ci,
        "f": result.f,
        "ddf": result.ddf_h,
        "p": result.p,
        "readers": len(readers),
        "cases": len(cases),
    }


def summarise(rows: list[dict[str, Any]], *, design: Design) -> dict[str, Any]:
    """Progress, results per condition, pooled agreement, ratings, time course and the MRMC comparison of a
    study's long-format rows (one per assignment); JSON-ready (NaN is None)."""
    return clean(
        {
            "progress": _progress(rows),
            "conditions": [_condition_result(design, condition, rows) for condition in design.conditions],
            "agreement_pooled": _pooled_agreement(design, rows),
            "ratings": _ratings(rows, design.rating_questions),
            "time_course": _time_course(rows),
            "mrmc": _mrmc(design, rows),
        }
    )
