"""Reads (draft, autosave, idempotent submit), explanation ratings and assistance events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import visibility
from app.audit import service as audit_service
from app.db import Base
from app.errors import Conflict, Invalid, NotFound
from app.reading import vocabulary
from app.reading.schemas import AssistanceEventIn, RatingIn, RatingOut, ReadIn, ReadOut
from app.tables import AssistanceEvent, ExplanationRating, Heatmap, Instance, Read, ReadState, Series, Study

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


def _find_read(session: Session, *, reader_id: int, client_id: str) -> Read | None:
    return session.scalar(select(Read).where(Read.reader_id == reader_id, Read.client_id == client_id))


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
    missing = sorted(asked - given)
    if complete and missing:
        raise Invalid(f"a submitted read must answer {', '.join(missing)}")


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
    """Create or update the reader's draft; returns (read, created). Conflict once it was submitted.

    A reader-study read names its assignment and the form of its study's task.
    """
    form = form or _form_of(session, study_id=_study_of(data), instance_id=data.instance_id)
    _check_answers(data, form=form, complete=False)
    key = str(client_id)
    read = _find_read(session, reader_id=reader_id, client_id=key)
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
    read.form = form
    _apply(read, data)
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
    read = _find_read(session, reader_id=reader_id, client_id=key)
    if read is not None and read.state == ReadState.submitted:
        _same_assignment(read, assignment_id)
        return _read_out(read), False
    form = form or _form_of(session, study_id=_study_of(data), instance_id=data.instance_id)
    _check_answers(data, form=form, complete=True)
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


def rate_explanation(
    session: Session, *, reader_id: int, data: RatingIn, assignment_id: int | None = None
) -> tuple[RatingOut, bool]:
    """Store a rating of a heatmap; returns (rating, created). The same client id returns the stored one."""
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
    method = session.scalar(select(Heatmap.method).where(Heatmap.id == data.heatmap_id))
    if method is None:
        raise Invalid(f"heatmap {data.heatmap_id} does not exist")
    row = ExplanationRating(
        reader_id=reader_id,
        heatmap_id=data.heatmap_id,
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
