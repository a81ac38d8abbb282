"""The coordinator dashboard's numbers of a reader study: its reads in long format (export.py) summarised by
the pure statistics of app/statistics/results.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.reader_studies import evidence, export
from app.reading import vocabulary
from app.statistics import results as study_results
from app.tables import ReaderStudy

_QUESTIONS = tuple(key for key, _ in vocabulary.RATING_QUESTIONS)


def design_of(study: ReaderStudy) -> study_results.Design:
    """The study's design for the statistics; a binary-finding study's positive answer is its finding present
    (`nodule` in a study made before studies named their finding)."""
    return study_results.Design(
        task=study.task.value,
        scheme=study.scheme,
        conditions=list(study.conditions),
        rating_questions=_QUESTIONS,
        positive_finding=vocabulary.positive_finding(study.finding),
    )


def dashboard(session: Session, *, study: ReaderStudy) -> dict[str, Any]:
    """Everything the coordinator dashboard shows (and export.json carries), JSON-ready."""
    rows = export.long_rows(session, study=study)
    about = {"id": study.id, "name": study.name, "task": study.task.value, "finding": study.finding,
             "scheme": study.scheme, "seed": study.seed, "state": study.state.value}
    return {"study": about, **study_results.summarise(rows, design=design_of(study)),
            "evidence": evidence.summary(session, study=study)}
