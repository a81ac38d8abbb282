"""A reader's side of a reader study: their queue of assignments, the case of an assignment shown under its
condition, and its read, rating and assistance events (stored by the reading room's services, app/reading).

Reads come in the queue's order (the seeded per-reader order of the design); a crossed design's next
session opens after the washout; a study's condition decides what of the AI the page carries at all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app import visibility
from app.reader_studies.schemas import RATEABLE_KINDS, AssignmentOut, QueueOut, StudyAssignmentContext
from app.reader_studies.service import Conflict, Invalid, NotFound
from app.reading import beyond, room, vocabulary
from app.reading import service as reading_service
from app.reading.schemas import (
    BEYOND_HEATMAPS,
    Assistance,
    AssistanceEventIn,
    FindingProbability,
    RatingIn,
    RatingOut,
    ReadIn,
    ReadingView,
    ReadOut,
)
from app.tables import (
    AssignmentState,
    ConditionKind,
    ExplanationRating,
    Read,
    ReaderStudy,
    ReaderStudyState,
    ReadState,
    StudyAssignment,
    StudyReader,
    StudyTask,
)


def form_of(study: ReaderStudy) -> str:
    """The read form of the study's task (a binary-finding study's asks about its finding)."""
    return vocabulary.study_form(study.task.value, study.finding)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _reader_row(session: Session, *, study: ReaderStudy, user_id: int) -> StudyReader:
    reader = session.scalar(
        select(StudyReader).where(StudyReader.reader_study_id == study.id, StudyReader.user_id == user_id)
    )
    if reader is None:
        raise NotFound(f"you are not a reader of reader study {study.name!r}")
    return reader


def _assignments(session: Session, *, reader: StudyReader) -> list[StudyAssignment]:
    return list(
        session.scalars(
            select(StudyAssignment)
            .where(StudyAssignment.study_reader_id == reader.id)
            .options(selectinload(StudyAssignment.case))
            .order_by(StudyAssignment.order)
        )
    )


def _not_before(assignments: list[StudyAssignment], item: StudyAssignment, washout_days: float) -> datetime | None:
    """When a crossed design's later session may start: the washout after the reader's previous session."""
    if item.session <= 1 or washout_days <= 0:
        return None
    previous = [row.completed_at for row in assignments if row.session == item.session - 1 and row.completed_at]
    return _aware(max(previous)) + timedelta(days=washout_days) if previous else None


def _next_open(study: ReaderStudy, assignments: list[StudyAssignment]) -> tuple[StudyAssignment | None, str]:
    """The reader's next assignment if it may be read now, else None and the reason."""
    if study.state != ReaderStudyState.open:
        return None, f"the study is {study.state.value}"
    pending = [row for row in assignments if row.state == AssignmentState.pending]
    if not pending:
        return None, "all your reads are done"
    item = pending[0]
    not_before = _not_before(assignments, item, study.washout_days)
    if not_before is not None and not_before > _now():
        return None, f"session {item.session} opens after the washout, on {not_before:%Y-%m-%d %H:%M} UTC"
    return item, ""


def _condition_label(study: ReaderStudy, key: str) -> str:
    return visibility.condition_of(study, key).get("label") or key


def queue(session: Session, *, study: ReaderStudy, user_id: int) -> QueueOut:
    """The reader's assignments in order, with the next one they may read."""
    reader = _reader_row(session, study=study, user_id=user_id)
    assignments = _assignments(session, reader=reader)
    following, reason = _next_open(study, assignments)
    return QueueOut(
        reader_study_id=study.id,
        name=study.name,
        task=study.task.value,
        reader=reader.pseudonym,
        done=sum(row.state == AssignmentState.done for row in assignments),
        total=len(assignments),
        next_url=f"/assignments/{following.id}/read" if following else None,
        waiting_reason=reason,
        assignments=[
            AssignmentOut(
                id=row.id,
                order=row.order,
                session=row.session,
                step=row.step,
                case=row.case.pseudonym,
                condition=row.condition,
                condition_label=_condition_label(study, row.condition),
                state=row.state.value,
                available=following is not None and row.id == following.id,
                not_before=_not_before(assignments, row, study.washout_days),
                completed_at=row.completed_at,
                url=f"/assignments/{row.id}/read",
            )
            for row in assignments
        ],
    )


def get_assignment(session: Session, *, assignment_id: int, user_id: int) -> StudyAssignment:
    """The caller's assignment; another reader's is not found either (no hint that it exists)."""
    assignment = session.scalar(
        select(StudyAssignment)
        .join(StudyReader, StudyAssignment.study_reader_id == StudyReader.id)
        .where(StudyAssignment.id == assignment_id, StudyReader.user_id == user_id)
        .options(selectinload(StudyAssignment.case), selectinload(StudyAssignment.reader))
    )
    if assignment is None:
        raise NotFound(f"you have no assignment {assignment_id}")
    return assignment


def _require_current(session: Session, *, assignment: StudyAssignment, study: ReaderStudy) -> None:
    """Conflict unless this is the reader's next read (done reads are shown, not changed)."""
    if assignment.state == AssignmentState.done:
        raise Conflict(f"case {assignment.case.pseudonym} of this assignment was read already")
    following, reason = _next_open(study, _assignments(session, reader=assignment.reader))
    if following is None:
        raise Conflict(f"this read is not open: {reason}")
    if following.id != assignment.id:
        raise Conflict(f"read your cases in the order of your queue: {following.case.pseudonym} comes first")


def _context(session: Session, *, assignment: StudyAssignment, study: ReaderStudy) -> StudyAssignmentContext:
    condition = visibility.condition_of(study, assignment.condition)
    total = len(_assignments(session, reader=assignment.reader))
    show_reference = study.educational and assignment.state == AssignmentState.done
    return StudyAssignmentContext(
        id=assignment.id,
        reader_study_id=study.id,
        reader_study_name=study.name,
        task=study.task.value,
        finding=study.finding,
        case=assignment.case.pseudonym,
        condition=assignment.condition,
        condition_label=condition.get("label") or assignment.condition,
        kind=condition["kind"],
        allow_toggle=study.allow_toggle and condition["kind"] != ConditionKind.unassisted,
        position=assignment.order + 1,
        total=total,
        state=assignment.state.value,
        queue_url=f"/reader-studies/{study.id}/queue",
        questions=list(study.questions),
        reference=assignment.case.reference if show_reference else None,
    )


def _finding_probability(assistance: Assistance, finding: str) -> FindingProbability | None:
    """The study's finding as this prediction reports it, or None where the model has no label of it."""
    index = vocabulary.label_index([item.label for item in assistance.probabilities], finding) if finding else None
    if index is None:
        return None
    label = assistance.probabilities[index]
    return FindingProbability(
        finding=finding, words=vocabulary.finding_words(finding), label=label.label, label_index=index,
        probability=label.probability,
    )


def _blind(
    view: ReadingView, *, assignment: StudyAssignment, allowance: visibility.Allowance, finding: str = ""
) -> ReadingView:
    """Only the case's image, and no AI beyond what the visibility service allows under its condition; with the
    probability of the study's finding where it names one. (Its identity was left out when the view was built:
    app/visibility.py's CASE_IDENTITY.)"""
    instances = []
    for instance in view.instances:
        if instance.id != assignment.case.instance_id:
            continue
        assistance = instance.assistance if allowance.prediction else None
        if assistance is not None:
            shown = [item for item in assistance.heatmaps if allowance.heatmap(item.method)]
            assistance = assistance.model_copy(
                update={
                    "heatmaps": shown[:1],
                    "study_finding": _finding_probability(assistance, finding),
                    **beyond.restrict(assistance, allowance),
                }
            )
        refusal = instance.refusal if allowance.prediction else None  # the gate's verdict is AI output too
        instances.append(instance.model_copy(update={"assistance": assistance, "refusal": refusal}))
    study = view.study.model_copy(
        update={
            "ai_state": "done" if allowance.prediction else "no_model",
            "ai_error": "",
            "ai_label": None,
            "ai_referral": False,
        }
    )
    return view.model_copy(update={"study": study, "instances": instances})


def _assignment_read(session: Session, *, assignment: StudyAssignment) -> ReadOut | None:
    read = session.scalar(
        select(Read).where(Read.assignment_id == assignment.id).order_by(Read.updated_at.desc()).limit(1)
    )
    return reading_service.get_read(session, reader_id=read.reader_id, client_id=UUID(read.client_id)) if read else None


def assignment_view(session: Session, *, assignment: StudyAssignment, user_id: int) -> ReadingView:
    """The reading room for this assignment; the first view of an open read starts its clock."""
    study = assignment.reader.reader_study
    if assignment.state == AssignmentState.pending:
        _require_current(session, assignment=assignment, study=study)
        if assignment.started_at is None:
            assignment.started_at = _now()
    view = room.reading_view(
        session, study_id=assignment.case.study_id, reader_id=user_id, identity=visibility.CASE_IDENTITY
    )
    allowance = visibility.condition_allowance(study, assignment.condition)
    view = _blind(view, assignment=assignment, allowance=allowance, finding=study.finding)
    form = room.form_config(form_of(study), finding=study.finding)
    # An arm that shows no explanation (a heatmap, similar cases, concepts, a justification) asks nothing about
    # one: its page carries no rating questions at all.
    rated = visibility.condition_of(study, assignment.condition)["kind"] in RATEABLE_KINDS
    form = form.model_copy(update={"questions": [q for q in form.questions if rated and q.value in study.questions]})
    context = _context(session, assignment=assignment, study=study)
    return view.model_copy(
        update={
            "form": form,
            "read": _assignment_read(session, assignment=assignment),
            "assignment": context.model_dump(mode="json"),
        }
    )


def _read_data(assignment: StudyAssignment, data: ReadIn) -> ReadIn:
    """The read of the assignment's case: its reader need not (and in the browser cannot) name the study."""
    case = assignment.case
    if data.study_id not in (None, case.study_id) or data.instance_id not in (None, case.instance_id):
        raise Invalid(f"this assignment reads case {case.pseudonym}, not the study or image sent")
    return data.model_copy(update={"study_id": case.study_id, "instance_id": case.instance_id})


def _require_read_task(study: ReaderStudy) -> None:
    if study.task == StudyTask.explanation_rating:
        raise Invalid("an explanation-rating study is answered with a rating, not a read")


def _read_call(assignment: StudyAssignment, client_id: UUID, data: ReadIn) -> dict:
    """The arguments of the reading service for this assignment's read: its reader, case, form and id."""
    return {
        "reader_id": assignment.reader.user_id,
        "client_id": client_id,
        "data": _read_data(assignment, data),
        "assignment_id": assignment.id,
        "form": form_of(assignment.reader.reader_study),
    }


def save_draft(
    session: Session, *, assignment: StudyAssignment, client_id: UUID, data: ReadIn
) -> tuple[ReadOut, bool]:
    """Autosave the assignment's draft; only the reader's current assignment takes one."""
    study = assignment.reader.reader_study
    _require_current(session, assignment=assignment, study=study)
    _require_read_task(study)
    return reading_service.save_draft(session, **_read_call(assignment, client_id, data))


def _complete(assignment: StudyAssignment) -> None:
    assignment.state = AssignmentState.done
    assignment.completed_at = _now()


def submit(
    session: Session, *, assignment: StudyAssignment, client_id: UUID, data: ReadIn, ip: str
) -> tuple[ReadOut, bool]:
    """Submit the assignment's read (audited) and complete it; the same client id again returns the stored read."""
    study = assignment.reader.reader_study
    existing = session.scalar(
        select(Read).where(
            Read.reader_id == assignment.reader.user_id,
            Read.client_id == str(client_id),
            Read.state == ReadState.submitted,
        )
    )
    if existing is None:
        _require_current(session, assignment=assignment, study=study)
        _require_read_task(study)
    read, created = reading_service.submit_read(session, **_read_call(assignment, client_id, data), ip=ip)
    if created:
        _complete(assignment)
    return read, created


def _shown_explanations(session: Session, *, assignment: StudyAssignment) -> set[tuple[str, int]]:
    """What this assignment's page shows that a reader may rate: ("heatmap", id) and (explanation, prediction id)
    for the explanations beyond maps."""
    view = assignment_view(session, assignment=assignment, user_id=assignment.reader.user_id)
    shown: set[tuple[str, int]] = set()
    for item in view.instances:
        assistance = item.assistance
        if assistance is None:
            continue
        shown |= {("heatmap", heatmap.id) for heatmap in assistance.heatmaps}
        for explanation in BEYOND_HEATMAPS:
            if getattr(assistance, explanation) is not None:
                shown.add((explanation, assistance.prediction_id))
    return shown


def _rated(data: RatingIn) -> tuple[str, int]:
    if data.heatmap_id is not None:
        return "heatmap", data.heatmap_id
    assert data.explanation is not None and data.prediction_id is not None  # RatingIn's validator
    return data.explanation, data.prediction_id


def rate(session: Session, *, assignment: StudyAssignment, data: RatingIn) -> tuple[RatingOut, bool]:
    """Rate the explanation this assignment shows (its heatmap, similar cases, concepts or justification); in an
    explanation-rating study this completes the read."""
    study = assignment.reader.reader_study
    existing = session.scalar(
        select(ExplanationRating).where(
            ExplanationRating.reader_id == assignment.reader.user_id,
            ExplanationRating.client_id == str(data.client_id),
        )
    )
    if existing is None:
        what, number = _rated(data)
        if (what, number) not in _shown_explanations(session, assignment=assignment):
            named = f"heatmap {number}" if what == "heatmap" else f"the {what} of prediction {number}"
            raise Invalid(f"{named} is not shown in this assignment")
        missing = sorted(set(study.questions) - set(data.answers))
        if study.task == StudyTask.explanation_rating and missing:
            raise Invalid(f"answer every question of this study: {', '.join(missing)} missing")
    rating, created = reading_service.rate_explanation(
        session, reader_id=assignment.reader.user_id, data=data, assignment_id=assignment.id
    )
    if created and study.task == StudyTask.explanation_rating:
        _complete(assignment)
    return rating, created


def record_events(session: Session, *, assignment: StudyAssignment, events: list[AssistanceEventIn]) -> int:
    """Store the reader's assistance toggles and changes during this assignment (about its case, whether or not
    an event names its study)."""
    case = assignment.case
    if any(event.study_id not in (None, case.study_id) for event in events):
        raise Invalid(f"these events are not about case {case.pseudonym}")
    about_case = [event.model_copy(update={"study_id": case.study_id}) for event in events]
    return reading_service.record_events(
        session, reader_id=assignment.reader.user_id, events=about_case, assignment_id=assignment.id
    )


def my_studies(session: Session, *, user_id: int) -> list[dict]:
    """The open and closed studies this user reads in, with their progress."""
    readers = session.scalars(
        select(StudyReader).where(StudyReader.user_id == user_id).options(selectinload(StudyReader.reader_study))
    ).all()
    mine = []
    for reader in readers:
        study = reader.reader_study
        if study.state == ReaderStudyState.draft:
            continue
        assignments = _assignments(session, reader=reader)
        mine.append({
            "id": study.id,
            "name": study.name,
            "state": study.state.value,
            "done": sum(row.state == AssignmentState.done for row in assignments),
            "total": len(assignments),
        })
    return mine
