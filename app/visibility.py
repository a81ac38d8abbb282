"""Who may see what of a case: the one rule that routes, pages and services ask, none decides alone.

A reader in a reader study sees of the AI only what the assignment's condition shows; the server enforces it.
A reader with a pending assignment on a case must not get that case's prediction or heatmaps from any
route (prediction API, heatmap images and arrays, study and reading pages, worklist labels) beyond what the
condition of that assignment shows. With several pending assignments on one case (a sequential or crossed
design), the strictest one rules: an unaided read is never spoiled by an aided one that comes later.

It sits below the viewer, the predictions, the reading room and the reader studies (docs/architecture.md):
they import it, it imports none of them. Each hides its own fields of what this module rules hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Forbidden
from app.tables import (
    AssignmentState,
    ConditionKind,
    ReaderStudy,
    ReaderStudyState,
    StudyAssignment,
    StudyCase,
    StudyReader,
)

_RANK = {ConditionKind.unassisted: 0, ConditionKind.prediction: 1, ConditionKind.prediction_heatmap: 2}


class Blinded(Forbidden):
    """The caller is reading this case in a reader study under a condition that hides this; says which study."""

    page = "reader_studies/refused.html"


@dataclass(frozen=True)
class Allowance:
    """The most a reader may see of one case while its reads are pending."""

    kind: ConditionKind
    method: str | None  # the one heatmap method shown, for prediction_heatmap
    study_name: str

    @property
    def prediction(self) -> bool:
        return self.kind != ConditionKind.unassisted

    def heatmap(self, method: str) -> bool:
        return self.kind == ConditionKind.prediction_heatmap and method == self.method


def condition_of(reader_study: ReaderStudy, key: str) -> dict:
    """The condition dict (key, kind, method, label) of this study named `key`."""
    for condition in reader_study.conditions:
        if condition["key"] == key:
            return condition
    raise KeyError(f"reader study {reader_study.id} has no condition {key!r}")


def _pending_rows(session: Session, *, user_id: int, study_ids: list[int] | None = None, instance_ids=None):
    query = (
        select(StudyCase.study_id, StudyCase.instance_id, StudyAssignment.condition, ReaderStudy)
        .join(StudyAssignment, StudyAssignment.case_id == StudyCase.id)
        .join(StudyReader, StudyAssignment.study_reader_id == StudyReader.id)
        .join(ReaderStudy, StudyAssignment.reader_study_id == ReaderStudy.id)
        .where(
            StudyReader.user_id == user_id,
            StudyAssignment.state == AssignmentState.pending,
            ReaderStudy.state == ReaderStudyState.open,
        )
    )
    if study_ids is not None:
        query = query.where(StudyCase.study_id.in_(study_ids))
    if instance_ids is not None:
        query = query.where(StudyCase.instance_id.in_(instance_ids))
    return session.execute(query).all()


def _strictest(rows) -> dict[int, Allowance]:
    """Per key (study or instance id): the strictest condition among the reader's pending assignments."""
    allowed: dict[int, Allowance] = {}
    for key, condition_key, reader_study in rows:
        condition = condition_of(reader_study, condition_key)
        candidate = Allowance(
            kind=ConditionKind(condition["kind"]), method=condition.get("method"), study_name=reader_study.name
        )
        current = allowed.get(key)
        if current is None or _RANK[candidate.kind] < _RANK[current.kind] or (
            candidate.kind == current.kind and candidate.method != current.method
        ):
            # Two heatmap conditions with different methods on one case: show neither method until both are read.
            if current is not None and candidate.kind == current.kind == ConditionKind.prediction_heatmap:
                candidate = Allowance(kind=ConditionKind.prediction, method=None, study_name=candidate.study_name)
            allowed[key] = candidate
    return allowed


def blinded_studies(session: Session, *, user_id: int, study_ids: list[int] | None = None) -> dict[int, Allowance]:
    """Studies (by id) on which this user has pending reader-study reads, with what they may see."""
    rows = _pending_rows(session, user_id=user_id, study_ids=study_ids)
    return _strictest([(study_id, condition, reader_study) for study_id, _, condition, reader_study in rows])


def instance_allowance(session: Session, *, user_id: int, instance_id: int) -> Allowance | None:
    """What this user may see of the AI on this image; None when no reader study restricts it."""
    rows = _pending_rows(session, user_id=user_id, instance_ids=[instance_id])
    return _strictest([(instance, condition, reader_study) for _, instance, condition, reader_study in rows]).get(
        instance_id
    )


def check_prediction(session: Session, *, user_id: int, instance_id: int) -> Allowance | None:
    """Blinded unless this user may see the model's prediction of this image; returns what they may see
    (None: no reader study restricts it)."""
    allowance = instance_allowance(session, user_id=user_id, instance_id=instance_id)
    if allowance is not None and not allowance.prediction:
        raise Blinded(
            f"this image is a case of reader study {allowance.study_name!r} that you have not read yet; "
            "the model's output is hidden until you have read it from your queue"
        )
    return allowance


def check_heatmap(session: Session, *, user_id: int, instance_id: int, method: str) -> None:
    """Blinded unless this user may see this heatmap method on this image."""
    allowance = instance_allowance(session, user_id=user_id, instance_id=instance_id)
    if allowance is not None and not allowance.heatmap(method):
        raise Blinded(
            f"this image is a case of reader study {allowance.study_name!r} that you have not read yet; "
            f"the {method} heatmap is not part of its condition"
        )


def check_study_page(session: Session, *, user_id: int, study_id: int) -> None:
    """Blinded while this user has pending reads of the study: the open pages would show other conditions."""
    allowance = blinded_studies(session, user_id=user_id, study_ids=[study_id]).get(study_id)
    if allowance is not None:
        raise Blinded(
            f"this study is a case of reader study {allowance.study_name!r}; read it from your reader-study queue"
        )
