"""The reads of a reader study in long format: one row per assignment, pseudonymous, no PHI.

Columns name the study, reader and case by pseudonym only; patient name, id, birth date, accession number,
UIDs and Lumen's own study ids never appear (tests inspect the files for them).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app.audit import service as audit_service
from app.reading import vocabulary
from app.tables import (
    AssistanceEvent,
    ExplanationRating,
    Read,
    ReaderStudy,
    ReadState,
    StudyAssignment,
)

_QUESTIONS = tuple(key for key, _ in vocabulary.RATING_QUESTIONS)
# Export column -> key of the read's AI snapshot (app.reading.schemas.AiSnapshot).
_AI_FIELDS = {
    "ai_model": "model",
    "ai_model_version": "model_version",
    "ai_label": "label",
    "ai_probability": "probability",
    "ai_entropy": "entropy",
    "ai_referral": "referral",
    "ai_method": "method",
}
AI_COLUMNS = tuple(_AI_FIELDS)
# Added after the AI columns (columns are only ever added at the end): the finding a binary-finding study reads,
# and the AI's probability of it as the panel showed it at submit.
FINDING_COLUMNS = ("study_finding", "ai_finding_probability")
# Added after those: the kind of the condition (what it shows: app.tables.ConditionKind), and the explanations
# beyond heatmaps the page carried at submit (the similar cases by their reference ids, how many of them carried
# the predicted label, the concept evidence and the justification in the words shown).
BEYOND_COLUMNS = ("condition_kind", "ai_similar_cases", "ai_similar_agreeing", "ai_concepts", "ai_justification")
COLUMNS = (
    "study",
    "reader",
    "case",
    "condition",
    "session",
    "order",
    "step",
    "state",
    "dr_grade",
    "dme",
    "finding",
    "confidence",
    "reference_dr_grade",
    "reference_dme",
    "reference_finding",
    "seconds",
    "toggles",
    "assistance_visible_at_submit",
    "rating_method",
    *(f"rating_{key}" for key in _QUESTIONS),
    "rating_comment",
    "started_at",
    "submitted_at",
    # What of the AI the page carried at submit, as the server recorded it then (Read.ai_snapshot).
    "ai_shown",
    *AI_COLUMNS,
    *FINDING_COLUMNS,
    *BEYOND_COLUMNS,
    # The number of evidence marks the reader drew (Read.evidence_marks); their statistics: evidence.csv.
    "evidence_marks",
)


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _ai_of(read: Read | None) -> dict[str, Any]:
    """The AI columns of a read: what was recorded at its submit; empty before it (or before revision 0008)."""
    snapshot = (read.ai_snapshot if read else None) or {}
    return {"ai_shown": read.ai_shown if read else None} | {
        column: snapshot.get(key) for column, key in _AI_FIELDS.items()
    }


def _finding_of(study: ReaderStudy, read: Read | None) -> dict[str, Any]:
    """The study's finding (empty where it names none) and the AI's probability of it recorded at submit."""
    snapshot = (read.ai_snapshot if read else None) or {}
    return {"study_finding": study.finding or None, "ai_finding_probability": snapshot.get("finding_probability")}


def _beyond_of(study: ReaderStudy, condition: str, read: Read | None) -> dict[str, Any]:
    snapshot = (read.ai_snapshot if read else None) or {}
    kinds = {item["key"]: item["kind"] for item in study.conditions}
    similar = snapshot.get("similar_case_ids")
    sentences = snapshot.get("justification")
    return {
        "condition_kind": kinds.get(condition),
        "ai_similar_cases": " ".join(similar) if similar else None,
        "ai_similar_agreeing": snapshot.get("similar_agreeing"),
        "ai_concepts": snapshot.get("concepts"),
        "ai_justification": " ".join(sentences) if sentences else None,
    }


def _reads(session: Session, *, assignment_ids: list[int]) -> dict[int, Read]:
    rows = session.scalars(
        select(Read)
        .where(Read.assignment_id.in_(assignment_ids), Read.state == ReadState.submitted)
        .order_by(Read.submitted_at)
    )
    return {read.assignment_id: read for read in rows if read.assignment_id is not None}


def _ratings(session: Session, *, assignment_ids: list[int]) -> dict[int, ExplanationRating]:
    rows = session.scalars(
        select(ExplanationRating)
        .where(ExplanationRating.assignment_id.in_(assignment_ids))
        .order_by(ExplanationRating.created_at)
    )
    # The newest rating of each assignment: the rows come oldest first.
    return {rating.assignment_id: rating for rating in rows if rating.assignment_id is not None}


def _toggles(session: Session, *, assignment_ids: list[int]) -> Counter[int]:
    rows = session.execute(
        select(AssistanceEvent.assignment_id, func.count())
        .where(AssistanceEvent.assignment_id.in_(assignment_ids), AssistanceEvent.event.in_(("shown", "hidden")))
        .where(AssistanceEvent.detail["initial"].as_boolean().is_not(True))
        .group_by(AssistanceEvent.assignment_id)
    ).all()
    return Counter({assignment_id: count for assignment_id, count in rows if assignment_id is not None})


def long_rows(session: Session, *, study: ReaderStudy) -> list[dict[str, Any]]:
    """One dict per assignment (read or not yet), in reader then queue order."""
    assignments = list(
        session.scalars(
            select(StudyAssignment)
            .where(StudyAssignment.reader_study_id == study.id)
            .options(selectinload(StudyAssignment.case), selectinload(StudyAssignment.reader))
        )
    )
    assignments.sort(key=lambda row: (row.reader.position, row.order))
    ids = [row.id for row in assignments]
    reads, ratings, toggles = (
        _reads(session, assignment_ids=ids),
        _ratings(session, assignment_ids=ids),
        _toggles(session, assignment_ids=ids),
    )
    rows = []
    for assignment in assignments:
        read, rating = reads.get(assignment.id), ratings.get(assignment.id)
        reference = assignment.case.reference or {}
        answers = rating.answers if rating else {}
        rows.append(
            {
                "study": study.name,
                "reader": assignment.reader.pseudonym,
                "case": assignment.case.pseudonym,
                "condition": assignment.condition,
                "session": assignment.session,
                "order": assignment.order,
                "step": assignment.step,
                "state": assignment.state.value,
                "dr_grade": read.dr_grade if read else None,
                "dme": read.dme if read else None,
                "finding": read.finding if read else None,
                "confidence": read.confidence if read else None,
                "reference_dr_grade": reference.get("dr_grade"),
                "reference_dme": reference.get("dme"),
                "reference_finding": reference.get("finding"),
                "seconds": read.time_spent_seconds if read else None,
                "toggles": toggles.get(assignment.id, 0),
                "assistance_visible_at_submit": read.assisted if read else None,
                "rating_method": rating.method if rating else None,
                **{f"rating_{key}": answers.get(key) for key in _QUESTIONS},
                "rating_comment": rating.comment if rating else None,
                "started_at": _iso(assignment.started_at),
                "submitted_at": _iso(read.submitted_at if read else assignment.completed_at),
                **_ai_of(read),
                **_finding_of(study, read),
                **_beyond_of(study, assignment.condition, read),
                "evidence_marks": len(read.evidence_marks or []) if read else None,
            }
        )
    return rows


def exported_rows(session: Session, *, study: ReaderStudy, user_id: int, ip: str, kind: str) -> list[dict[str, Any]]:
    """The long rows of a download (`kind` csv or json), the export audited once the request commits."""
    rows = long_rows(session, study=study)
    audit_service.record_when_read(
        session, action="export", user_id=user_id, object_type="reader_study", object_id=study.id,
        detail={"format": kind, "rows": len(rows)}, ip=ip,
    )
    return rows


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) sends data away): OWASP's
# CSV-injection advice is to start such a text cell with a single quote, which the spreadsheet shows as text.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """One value as a CSV cell: empty for None, true/false for booleans, numbers as they are (-1.5 stays a
    number), text that a spreadsheet would take for a formula behind a single quote."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    """CSV with a header, each cell as csv_cell writes it (text neutralised against formula injection)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: csv_cell(value) for key, value in row.items()})
    return out.getvalue()
