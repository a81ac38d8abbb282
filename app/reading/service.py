"""Reads (draft, autosave, idempotent submit), explanation ratings and assistance events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import visibility
from app.audit import service as audit_service
from app.db import Base
from app.errors import Conflict, Invalid, NotFound
from app.predictions import service as predictions_service
from app.reading import beyond, vocabulary
from app.reading.schemas import AiSnapshot, AssistanceEventIn, RatingIn, RatingOut, ReadIn, ReadOut
from app.tables import (
    AssistanceEvent,
    ExplanationRating,
    Heatmap,
    Instance,
    Prediction,
    Read,
    ReaderStudy,
    ReadState,
    Series,
    Study,
    StudyAssignment,
)

# Bound to the ORM rows: with `find` returning `T | None`, an unbound T would be inferred as `Row | None`.
T = TypeVar("T", bound=Base)


def _now() -> datetime:
    return datetime.now(UTC)


def _read_out(read: Read) -> ReadOut:
    """The read as its reader gets it back; a reader-study read does not name its study (no id that links the
    case back to it)."""
    out = ReadOut.model_validate(read)
    if read.assignment_id is not None:
        out = out.model_copy(update={"study_id": visibility.CASE_IDENTITY.link(read.study_id)})
    return out


def _study_of(data: ReadIn) -> int:
    if data.study_id is None:
        raise Invalid("a read names the study it reads (study_id)")
    return data.study_id


def _insert_once(session: Session, row: T, *, find: Callable[[], T | None]) -> tuple[T, bool]:
    """Insert `row`; if a concurrent request inserted the same client id first, return that row instead."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = find()
        if existing is None:
            raise
        return existing, False
    return row, True


def _find_read(session: Session, *, reader_id: int, client_id: str, lock: bool = False) -> Read | None:
    """The reader's read of this client id; `lock` holds its row until commit, so that two drafts of it sent
    at once (a keep-alive request and the beacon of a page being left) are compared and stored one at a time."""
    query = select(Read).where(Read.reader_id == reader_id, Read.client_id == client_id)
    return session.scalar(query.with_for_update() if lock else query)


def _outdated(read: Read, data: ReadIn) -> bool:
    """The draft was numbered by its page before the one stored: it arrived late and must not overwrite it."""
    return data.client_seq is not None and read.client_seq is not None and data.client_seq <= read.client_seq


def _form_of(session: Session, *, study_id: int, instance_id: int | None) -> str:
    """The form for the study (or the given image of it); Invalid if either does not exist or they differ."""
    study = session.get(Study, study_id)
    if study is None:
        raise Invalid(f"study {study_id} does not exist")
    if instance_id is None:
        return vocabulary.form_for(study.modality)
    row = session.execute(
        select(Instance.modality, Series.study_id)
        .join(Series, Instance.series_id == Series.id)
        .where(Instance.id == instance_id)
    ).first()
    if row is None or row.study_id != study_id:
        raise Invalid(f"instance {instance_id} is not an image of study {study_id}")
    return vocabulary.form_for(row.modality or study.modality)


def _check_answers(data: ReadIn, *, form: str, complete: bool) -> None:
    given = {key for key, value in data.answers.model_dump().items() if value is not None and key != "note"}
    asked = set(vocabulary.FORM_FIELDS[form])
    extra = sorted(given - asked)
    if extra:
        raise Invalid(f"{', '.join(extra)} is not asked by the {form} form (it asks {', '.join(sorted(asked))})")
    offered = [key for key, _ in vocabulary.FINDINGS_OF_FORM.get(form, ())]
    if data.answers.finding is not None and data.answers.finding not in offered:
        raise Invalid(f"the {form} form's findings are {', '.join(offered)}, not {data.answers.finding!r}")
    missing = sorted(asked - given)
    if complete and missing:
        raise Invalid(f"a submitted read must answer {', '.join(missing)}")


def _check_marks(session: Session, data: ReadIn) -> None:
    """Each evidence mark is on an image of the read's study (the message names no study: a reader-study read's
    reader knows the case by its pseudonym only)."""
    wanted = {mark.instance_id for mark in data.evidence_marks or ()}
    if not wanted:
        return
    found = set(
        session.scalars(
            select(Instance.id)
            .join(Series, Instance.series_id == Series.id)
            .where(Instance.id.in_(wanted), Series.study_id == _study_of(data))
        )
    )
    if wanted - found:
        raise Invalid(f"an evidence mark is on image {min(wanted - found)}, which is not an image of this read")


def _apply(read: Read, data: ReadIn) -> None:
    answers = data.answers
    read.study_id, read.instance_id = _study_of(data), data.instance_id
    read.answers = answers.model_dump(exclude_none=True)
    read.dr_grade, read.dme, read.finding, read.confidence = (
        answers.dr_grade,
        answers.dme,
        answers.finding,
        answers.confidence,
    )
    if data.time_spent_seconds is not None:
        read.time_spent_seconds = data.time_spent_seconds
    if data.assistance is not None:
        read.assistance = data.assistance.model_dump()
        read.assisted = data.assistance.visible
    if data.evidence_marks is not None:
        read.evidence_marks = [mark.model_dump(mode="json") for mark in data.evidence_marks]


def _new_read(reader_id: int, key: str, data: ReadIn, *, form: str, assignment_id: int | None) -> Read:
    return Read(
        reader_id=reader_id,
        client_id=key,
        study_id=_study_of(data),
        form=form,
        answers={},
        assistance={},
        assignment_id=assignment_id,
    )


def _served_prediction(session: Session, *, instance_id: int | None) -> Prediction | None:
    """The prediction the page showed of this image: its newest, which app/live pushes to an open page."""
    if instance_id is None:
        return None
    return predictions_service.latest_predictions(session, instance_ids=[instance_id]).get(instance_id)


def _shown_heatmap(prediction: Prediction | None, *, shown: Callable[[str], bool]) -> Heatmap | None:
    """The map on the page of a method it shows: of that method's target classes the lowest, which the reading
    room puts first (app/reading/room.py orders a prediction's maps by rank, method, then target class)."""
    maps = [heatmap for heatmap in prediction.heatmaps if shown(heatmap.method)] if prediction else []
    return min(maps, key=lambda heatmap: heatmap.target_class, default=None)


def _finding_snapshot(prediction: Prediction, finding: str) -> dict[str, Any]:
    """The study's finding, and its index and probability where the model reports it (the panel's answer)."""
    if not finding:
        return {}
    values = list(prediction.probabilities)
    index = vocabulary.label_index(list(prediction.model.labels), finding)
    if index is None or index >= len(values):
        return {"finding": finding}
    return {"finding": finding, "finding_label_index": index, "finding_probability": float(values[index])}


def _beyond_snapshot(prediction: Prediction, allowance: visibility.Allowance | None) -> dict[str, Any]:
    """The explanations beyond heatmaps the page carried: all of them outside a study, else the condition's."""
    fields: dict[str, Any] = {}
    probability = beyond.top_probability(prediction)
    if allowance is None or allowance.similar_cases:
        similar = beyond.similar_cases(prediction)
        if similar is not None:
            fields["similar_case_ids"] = [case.case_id for case in similar.cases]
            fields["similar_agreeing"] = similar.agreeing
    if allowance is None or allowance.concepts:
        concepts = beyond.concepts(prediction)
        if concepts is not None:
            fields["concepts"] = concepts.headline
    if allowance is None or allowance.justification:
        fields["justification"] = beyond.justification_of(prediction, top_probability=probability)
    return fields


def _snapshot(
    prediction: Prediction | None,
    heatmap: Heatmap | None,
    *,
    condition: str | None,
    kind: str | None,
    finding: str = "",
    allowance: visibility.Allowance | None = None,
) -> AiSnapshot:
    if prediction is None:
        return AiSnapshot(condition=condition, condition_kind=kind)
    values, index = list(prediction.probabilities), prediction.label_index
    return AiSnapshot(
        **_finding_snapshot(prediction, finding),
        **_beyond_snapshot(prediction, allowance),
        condition=condition,
        condition_kind=kind,
        prediction_id=prediction.id,
        model=prediction.model.name,
        model_version=prediction.model.version,
        label=prediction.label,
        label_index=index,
        probability=float(values[index]) if 0 <= index < len(values) else None,
        entropy=prediction.predictive_entropy,
        referral=prediction.referral,
        method=heatmap.method if heatmap else None,
        heatmap_id=heatmap.id if heatmap else None,
    )


def _study_read_ai(session: Session, *, read: Read, assignment_id: int) -> tuple[bool, AiSnapshot]:
    assignment = session.get(StudyAssignment, assignment_id)
    study = session.get(ReaderStudy, assignment.reader_study_id) if assignment else None
    if assignment is None or study is None:
        raise NotFound(f"assignment {assignment_id} does not exist")
    allowance = visibility.condition_allowance(study, assignment.condition)
    prediction = _served_prediction(session, instance_id=read.instance_id) if allowance.prediction else None
    snapshot = _snapshot(
        prediction,
        _shown_heatmap(prediction, shown=allowance.heatmap),
        condition=assignment.condition,
        kind=allowance.kind.value,
        finding=study.finding,
        allowance=allowance,
    )
    # Where readers may not hide the assistance, the page kept it on screen whatever the client says.
    on_screen = read.assisted if study.allow_toggle else True
    return on_screen and prediction is not None, snapshot


def ai_shown_at_submit(session: Session, *, read: Read) -> tuple[bool, AiSnapshot]:
    """What of the AI the read's page carried at submit, from the server's own rows, and whether it was on screen.

    In a reader study the assignment's condition decides what the page carried (as app/visibility.py blinds it);
    outside one the page carries the image's prediction and the reader picks the map (`assistance.method`, kept
    only if the prediction has a map of it). Where the reader may hide the assistance, `assistance.visible` (the
    client's report) says whether it was on screen.
    """
    if read.assignment_id is not None:
        return _study_read_ai(session, read=read, assignment_id=read.assignment_id)
    prediction = _served_prediction(session, instance_id=read.instance_id)
    picked = read.assistance.get("method")
    heatmap = _shown_heatmap(prediction, shown=lambda method: method == picked)
    return read.assisted and prediction is not None, _snapshot(prediction, heatmap, condition=None, kind=None)


def _same_assignment(read: Read, assignment_id: int | None) -> None:
    if read.assignment_id != assignment_id:
        raise Invalid(f"read {read.client_id} belongs to another assignment")


def save_draft(
    session: Session,
    *,
    reader_id: int,
    client_id: UUID,
    data: ReadIn,
    assignment_id: int | None = None,
    form: str | None = None,
) -> tuple[ReadOut, bool]:
    """Create or update the reader's draft; returns (read, created). Conflict once it was submitted. A draft
    numbered before the stored one (`client_seq`) changes nothing: the stored read is returned as it is.

    A reader-study read names its assignment and the form of its study's task.
    """
    form = form or _form_of(session, study_id=_study_of(data), instance_id=data.instance_id)
    _check_answers(data, form=form, complete=False)
    _check_marks(session, data)
    key = str(client_id)
    read = _find_read(session, reader_id=reader_id, client_id=key, lock=True)
    created = read is None
    if read is None:
        read, created = _insert_once(
            session,
            _new_read(reader_id, key, data, form=form, assignment_id=assignment_id),
            find=lambda: _find_read(session, reader_id=reader_id, client_id=key),
        )
    _same_assignment(read, assignment_id)
    if read.state == ReadState.submitted:
        raise Conflict(f"read {key} was submitted at {read.submitted_at:%Y-%m-%d %H:%M:%S} UTC; it cannot change")
    if not created and _outdated(read, data):
        return _read_out(read), False
    read.form = form
    _apply(read, data)
    read.client_seq = data.client_seq if data.client_seq is not None else read.client_seq
    read.updated_at = _now()
    session.flush()
    return _read_out(read), created


def submit_read(
    session: Session,
    *,
    reader_id: int,
    client_id: UUID,
    data: ReadIn,
    ip: str,
    assignment_id: int | None = None,
    form: str | None = None,
) -> tuple[ReadOut, bool]:
    """Submit the read; returns (read, newly submitted), the submission audited. A resubmission returns the
    stored read unchanged (and is not audited again: nothing changed)."""
    key = str(client_id)
    read = _find_read(session, reader_id=reader_id, client_id=key, lock=True)
    if read is not None and read.state == ReadState.submitted:
        _same_assignment(read, assignment_id)
        return _read_out(read), False
    form = form or _form_of(session, study_id=_study_of(data), instance_id=data.instance_id)
    _check_answers(data, form=form, complete=True)
    _check_marks(session, data)
    if read is None:
        read, inserted = _insert_once(
            session,
            _new_read(reader_id, key, data, form=form, assignment_id=assignment_id),
            find=lambda: _find_read(session, reader_id=reader_id, client_id=key),
        )
        if not inserted and read.state == ReadState.submitted:
            _same_assignment(read, assignment_id)
            return _read_out(read), False
    _same_assignment(read, assignment_id)
    read.form = form
    _apply(read, data)
    read.client_seq = max((seq for seq in (read.client_seq, data.client_seq) if seq is not None), default=None)
    read.ai_shown, snapshot = ai_shown_at_submit(session, read=read)
    read.ai_snapshot = snapshot.model_dump(mode="json")
    read.state = ReadState.submitted
    read.submitted_at = read.updated_at = _now()
    session.flush()
    audit_service.record(
        session, action="read_submitted", user_id=reader_id, object_type="read", object_id=read.id, ip=ip,
        detail={"study_id": read.study_id, "assignment_id": assignment_id, "form": form},
    )
    return _read_out(read), True


def get_read(session: Session, *, reader_id: int, client_id: UUID) -> ReadOut:
    """One of the reader's reads, or NotFound (another reader's read is not found either)."""
    read = _find_read(session, reader_id=reader_id, client_id=str(client_id))
    if read is None:
        raise NotFound(f"you have no read {client_id}")
    return _read_out(read)


def latest_read(session: Session, *, reader_id: int, study_id: int) -> ReadOut | None:
    """The reader's open clinical draft of the study if any, else their newest submitted clinical read of it.
    Reader-study reads are left out: showing one here would tell its reader which study their case was."""
    reads = session.scalars(
        select(Read)
        .where(Read.reader_id == reader_id, Read.study_id == study_id, Read.assignment_id.is_(None))
        .order_by(Read.updated_at.desc())
    ).all()
    drafts = [read for read in reads if read.state == ReadState.draft]
    chosen = drafts[0] if drafts else (reads[0] if reads else None)
    return _read_out(chosen) if chosen is not None else None


def _rating_out(rating: ExplanationRating) -> RatingOut:
    return RatingOut.model_validate(rating)


def _require_beyond(session: Session, *, prediction_id: int | None, explanation: str) -> None:
    """The prediction exists and has this explanation to rate (a justification, every prediction has)."""
    prediction = session.get(Prediction, prediction_id) if prediction_id is not None else None
    if prediction is None:
        raise Invalid(f"prediction {prediction_id} does not exist")
    if explanation == "similar_cases" and not prediction.similar_cases:
        raise Invalid(f"prediction {prediction_id} has no similar cases: its model ships no reference library")
    if explanation == "concepts" and prediction.concepts is None:
        raise Invalid(f"prediction {prediction_id} has no concept evidence: its model ships no concept bank")


def rate_explanation(
    session: Session, *, reader_id: int, data: RatingIn, assignment_id: int | None = None
) -> tuple[RatingOut, bool]:
    """Store a rating of a heatmap or of a prediction's explanation beyond maps; returns (rating, created). The
    same client id returns the stored one."""
    key = str(data.client_id)

    def find() -> ExplanationRating | None:
        return session.scalar(
            select(ExplanationRating).where(
                ExplanationRating.reader_id == reader_id, ExplanationRating.client_id == key
            )
        )

    existing = find()
    if existing is not None:
        return _rating_out(existing), False
    if data.heatmap_id is not None:
        method = session.scalar(select(Heatmap.method).where(Heatmap.id == data.heatmap_id))
        if method is None:
            raise Invalid(f"heatmap {data.heatmap_id} does not exist")
    else:
        method = str(data.explanation)
        _require_beyond(session, prediction_id=data.prediction_id, explanation=method)
    row = ExplanationRating(
        reader_id=reader_id,
        heatmap_id=data.heatmap_id,
        prediction_id=data.prediction_id,
        method=method,
        answers=dict(data.answers),
        comment=data.comment.strip(),
        client_id=key,
        assignment_id=assignment_id,
    )
    rating, created = _insert_once(session, row, find=find)
    return _rating_out(rating), created


def rated_heatmaps(session: Session, *, reader_id: int, heatmap_ids: Sequence[int]) -> set[int]:
    """Which of these heatmaps the reader has rated."""
    if not heatmap_ids:
        return set()
    return set(
        session.scalars(
            select(ExplanationRating.heatmap_id).where(
                ExplanationRating.reader_id == reader_id, ExplanationRating.heatmap_id.in_(heatmap_ids)
            )
        )
    )


def record_events(
    session: Session, *, reader_id: int, events: Sequence[AssistanceEventIn], assignment_id: int | None = None
) -> int:
    """Store what assistance the reader saw; an event names a study (and image) of this Lumen."""
    if any(event.study_id is None for event in events):
        raise Invalid("an assistance event names the study it is about (study_id)")
    study_ids = {event.study_id for event in events if event.study_id is not None}
    known = set(session.scalars(select(Study.id).where(Study.id.in_(study_ids))))
    if study_ids - known:
        raise Invalid(f"study {min(study_ids - known)} does not exist")
    instance_ids = {event.instance_id for event in events if event.instance_id is not None}
    if instance_ids:
        found = set(session.scalars(select(Instance.id).where(Instance.id.in_(instance_ids))))
        if instance_ids - found:
            raise Invalid(f"instance {min(instance_ids - found)} does not exist")
    client_ids = {str(event.read_client_id) for event in events if event.read_client_id is not None}
    read_ids: dict[str, int] = {}
    if client_ids:
        rows = session.execute(
            select(Read.client_id, Read.id).where(Read.reader_id == reader_id, Read.client_id.in_(client_ids))
        ).all()
        read_ids = {client_id: read_id for client_id, read_id in rows}
    session.add_all(
        AssistanceEvent(
            reader_id=reader_id,
            study_id=event.study_id,
            instance_id=event.instance_id,
            read_id=read_ids.get(str(event.read_client_id)) if event.read_client_id else None,
            assignment_id=assignment_id,
            event=event.event,
            detail=event.detail,
            client_at=event.client_at,
        )
        for event in events
    )
    session.flush()
    return len(events)
