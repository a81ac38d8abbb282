"""Designing a reader study: create it, add cases and readers, upload the reference standard, open it
(which expands the design into assignments) and close it."""

from __future__ import annotations

import csv
import io
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app import errors
from app.audit import service as audit_service
from app.reader_studies.schemas import CaseOut, ReaderOut, ReaderStudyDetail, ReaderStudyIn, ReaderStudyOut
from app.reading import vocabulary
from app.statistics import design
from app.tables import (
    ConditionKind,
    Heatmap,
    Instance,
    Prediction,
    ReaderStudy,
    ReaderStudyState,
    Series,
    Study,
    StudyAssignment,
    StudyCase,
    StudyReader,
    StudyTask,
    User,
)

_FINDING_KEYS = tuple(key for key, _ in vocabulary.FINDINGS)
_TRUE, _FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n"}
MAX_ERRORS_SHOWN = 10


# A page of the reader-study pages that cannot be shown says why on this page (with a way back to the list).
REFUSED_PAGE = "reader_studies/refused.html"


class NotFound(errors.NotFound):
    """No such reader study (or case, reader, assignment of yours); the message is safe to show."""

    page = REFUSED_PAGE


class Invalid(errors.Invalid):
    """The request does not fit the study; the message says what."""

    page = REFUSED_PAGE


class Conflict(errors.Conflict):
    """The study's state forbids this (e.g. changing the design of an open study), or the queue's order."""

    page = REFUSED_PAGE


def _now() -> datetime:
    return datetime.now(UTC)


def create_study(session: Session, *, data: ReaderStudyIn, created_by_id: int | None) -> ReaderStudy:
    """A new draft study; the seed is drawn now when none is given, and stored."""
    if session.scalar(select(ReaderStudy.id).where(ReaderStudy.name == data.name)) is not None:
        raise Conflict(f"a reader study named {data.name!r} exists already")
    study = ReaderStudy(
        name=data.name,
        description=data.description,
        task=data.task,
        scheme=data.scheme.value,
        conditions=[condition.model_dump(mode="json") for condition in data.conditions],
        questions=data.questions,
        seed=data.seed if data.seed is not None else secrets.randbelow(2**31),
        washout_days=data.washout_days,
        allow_toggle=data.allow_toggle,
        educational=data.educational,
        created_by_id=created_by_id,
    )
    session.add(study)
    session.flush()
    return study


def get_study(session: Session, *, reader_study_id: int) -> ReaderStudy:
    study = session.get(
        ReaderStudy,
        reader_study_id,
        options=[selectinload(ReaderStudy.cases), selectinload(ReaderStudy.readers).selectinload(StudyReader.user)],
    )
    if study is None:
        raise NotFound(f"reader study {reader_study_id} does not exist")
    return study


def _assignment_count(session: Session, *, reader_study_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(StudyAssignment).where(StudyAssignment.reader_study_id == reader_study_id)
    ) or 0


def study_out(session: Session, *, study: ReaderStudy) -> ReaderStudyOut:
    return ReaderStudyOut(
        id=study.id,
        name=study.name,
        description=study.description,
        task=study.task.value,
        scheme=study.scheme,
        conditions=list(study.conditions),
        questions=list(study.questions),
        seed=study.seed,
        washout_days=study.washout_days,
        allow_toggle=study.allow_toggle,
        educational=study.educational,
        state=study.state.value,
        created_at=study.created_at,
        opened_at=study.opened_at,
        closed_at=study.closed_at,
        cases=len(study.cases),
        readers=len(study.readers),
        references=sum(case.reference is not None for case in study.cases),
        assignments=_assignment_count(session, reader_study_id=study.id),
    )


def study_detail(session: Session, *, study: ReaderStudy) -> ReaderStudyDetail:
    return ReaderStudyDetail(
        **study_out(session, study=study).model_dump(),
        case_list=[CaseOut.model_validate(case) for case in study.cases],
        reader_list=[
            ReaderOut(id=reader.id, pseudonym=reader.pseudonym, user_id=reader.user_id, email=reader.user.email)
            for reader in study.readers
        ],
    )


def list_studies(session: Session) -> list[ReaderStudyOut]:
    studies = session.scalars(
        select(ReaderStudy)
        .options(selectinload(ReaderStudy.cases), selectinload(ReaderStudy.readers))
        .order_by(ReaderStudy.created_at.desc())
    ).all()
    return [study_out(session, study=study) for study in studies]


def _require_draft(study: ReaderStudy, what: str) -> None:
    if study.state != ReaderStudyState.draft:
        raise Conflict(f"reader study {study.name!r} is {study.state.value}: {what} only while it is a draft")


def _first_instances(session: Session, *, study_ids: list[int]) -> dict[int, int]:
    """The image each study is read on: its first instance, by series and instance number."""
    rows = session.execute(
        select(Series.study_id, Instance.id)
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id.in_(study_ids))
        .order_by(Series.study_id, Series.number.nulls_last(), Series.id, Instance.number.nulls_last(), Instance.id)
    ).all()
    first: dict[int, int] = {}
    for study_id, instance_id in rows:
        first.setdefault(study_id, instance_id)
    return first


def add_cases(session: Session, *, study: ReaderStudy, study_ids: list[int]) -> int:
    """Add stored studies as cases (those already in are skipped); returns how many were added."""
    _require_draft(study, "cases can be added")
    wanted = list(dict.fromkeys(study_ids))
    images = _first_instances(session, study_ids=wanted)
    missing = [study_id for study_id in wanted if study_id not in images]
    if missing:
        known = set(session.scalars(select(Study.id).where(Study.id.in_(missing))))
        unknown = [study_id for study_id in missing if study_id not in known]
        if unknown:
            raise Invalid(f"no stored study with id {', '.join(map(str, unknown[:MAX_ERRORS_SHOWN]))}")
        raise Invalid(f"study {missing[0]} has no image to read")
    present = {case.study_id for case in study.cases}
    added = 0
    for study_id in wanted:
        if study_id in present:
            continue
        position = len(study.cases)
        study.cases.append(
            StudyCase(study_id=study_id, instance_id=images[study_id], pseudonym=f"C{position + 1:04d}",
                      position=position)
        )
        added += 1
    session.flush()
    return added


def _parse_flag(text: str) -> bool | None:
    value = text.strip().lower()
    if value == "":
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a yes/no value (use 1/0, true/false or yes/no)")


def _reference_of(task: StudyTask, row: dict[str, str]) -> dict[str, Any]:
    """The reference standard of one CSV row for this task; ValueError with a reason."""
    if task == StudyTask.dr_grading:
        text = (row.get("dr_grade") or "").strip()
        if not text.isdigit() or not 0 <= int(text) <= 4:
            raise ValueError(f"dr_grade must be an ICDR grade 0-4, not {text!r}")
        reference: dict[str, Any] = {"dr_grade": int(text)}
        dme = _parse_flag(row.get("dme") or "")
        if dme is not None:
            reference["dme"] = dme
        return reference
    if task == StudyTask.binary_finding:
        finding = (row.get("finding") or "").strip()
        if finding not in _FINDING_KEYS:
            raise ValueError(f"finding must be one of {', '.join(_FINDING_KEYS)}, not {finding!r}")
        return {"finding": finding}
    return {}


def _csv_rows(text: str, *, task: StudyTask) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    columns = {name.strip() for name in reader.fieldnames or []}
    if not columns & {"study_instance_uid", "study_id"}:
        raise Invalid("the CSV needs a header with a study_instance_uid or a study_id column")
    needed = {StudyTask.dr_grading: "dr_grade", StudyTask.binary_finding: "finding"}.get(task)
    if needed and needed not in columns:
        raise Invalid(f"a {task.value} study needs a {needed} column")
    rows = [{(key or "").strip(): (value or "") for key, value in row.items()} for row in reader]
    if not rows:
        raise Invalid("the CSV has no rows")
    return rows


def _resolve_studies(session: Session, rows: list[dict[str, str]]) -> tuple[dict[str, int], dict[int, int]]:
    uids = {row["study_instance_uid"].strip() for row in rows if row.get("study_instance_uid", "").strip()}
    ids = {int(row["study_id"]) for row in rows if row.get("study_id", "").strip().isdigit()}
    found = session.execute(select(Study.study_instance_uid, Study.id).where(Study.study_instance_uid.in_(uids)))
    by_uid = {uid: study_id for uid, study_id in found}
    by_id = {study_id: study_id for study_id in session.scalars(select(Study.id).where(Study.id.in_(ids)))}
    return by_uid, by_id


def upload_reference(session: Session, *, study: ReaderStudy, text: str) -> tuple[int, int]:
    """Set the reference standard from CSV text; a draft study also gains the cases it did not have.

    Every row is checked before anything changes: one bad row rejects the file (Invalid lists the rows).
    Returns (cases added, references set).
    """
    rows = _csv_rows(text, task=study.task)
    by_uid, by_id = _resolve_studies(session, rows)
    existing = {case.study_id: case for case in study.cases}
    errors: list[str] = []
    parsed: dict[int, dict[str, Any]] = {}
    for line, row in enumerate(rows, start=2):
        uid, raw_id = row.get("study_instance_uid", "").strip(), row.get("study_id", "").strip()
        study_id = by_uid.get(uid) if uid else (by_id.get(int(raw_id)) if raw_id.isdigit() else None)
        if study_id is None:
            errors.append(f"line {line}: no stored study {uid or raw_id or '(empty)'}")
            continue
        if study_id in parsed:
            errors.append(f"line {line}: study {uid or raw_id} appears twice")
            continue
        if study_id not in existing and study.state != ReaderStudyState.draft:
            errors.append(f"line {line}: study {uid or raw_id} is not a case, and the study is {study.state.value}")
            continue
        try:
            parsed[study_id] = _reference_of(study.task, row)
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
    if errors:
        more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise Invalid("the reference CSV was not applied: " + "; ".join(errors[:MAX_ERRORS_SHOWN]) + more)
    new = [study_id for study_id in parsed if study_id not in existing]
    added = add_cases(session, study=study, study_ids=new) if new else 0
    cases = {case.study_id: case for case in study.cases}
    for study_id, reference in parsed.items():
        cases[study_id].reference = reference or None
    session.flush()
    return added, sum(1 for reference in parsed.values() if reference)


def add_readers(session: Session, *, study: ReaderStudy, emails: list[str]) -> int:
    """Enrol users (by e-mail) as readers; returns how many were added."""
    _require_draft(study, "readers can be added")
    wanted = list(dict.fromkeys(email.strip().lower() for email in emails))
    found = session.scalars(select(User).where(func.lower(User.email).in_(wanted)))
    users = {user.email.lower(): user for user in found}
    unknown = [email for email in wanted if email not in users]
    if unknown:
        raise Invalid(f"no user with e-mail {', '.join(unknown[:MAX_ERRORS_SHOWN])}")
    inactive = [email for email in wanted if not users[email].is_active]
    if inactive:
        raise Invalid(f"user {inactive[0]} is deactivated")
    present = {reader.user_id for reader in study.readers}
    added = 0
    for email in wanted:
        user = users[email]
        if user.id in present:
            continue
        position = len(study.readers)
        study.readers.append(StudyReader(user_id=user.id, pseudonym=f"R{position + 1:02d}", position=position))
        added += 1
    session.flush()
    return added


def _missing_assistance(session: Session, *, study: ReaderStudy) -> list[str]:
    """Cases that lack the prediction or heatmap a condition would show."""
    kinds = {ConditionKind(condition["kind"]) for condition in study.conditions}
    methods = {condition["method"] for condition in study.conditions if condition.get("method")}
    if kinds == {ConditionKind.unassisted}:
        return []
    instance_ids = [case.instance_id for case in study.cases]
    predicted = set(session.scalars(select(Prediction.instance_id).where(Prediction.instance_id.in_(instance_ids))))
    problems = [f"{case.pseudonym} has no prediction" for case in study.cases if case.instance_id not in predicted]
    if methods:
        rows = session.execute(
            select(Prediction.instance_id, Heatmap.method)
            .join(Heatmap, Heatmap.prediction_id == Prediction.id)
            .where(Prediction.instance_id.in_(instance_ids), Heatmap.method.in_(methods))
        ).all()
        have = {(instance_id, method) for instance_id, method in rows}
        problems += [
            f"{case.pseudonym} has no {method} heatmap"
            for case in study.cases
            if case.instance_id in predicted
            for method in sorted(methods)
            if (case.instance_id, method) not in have
        ]
    return problems


def open_study(session: Session, *, study: ReaderStudy, user_id: int) -> int:
    """Freeze the design and write its assignments (seeded, per-reader order), audited; returns how many."""
    _require_draft(study, "a study can be opened")
    if not study.cases or not study.readers:
        raise Invalid("a study opens with at least one case and one reader")
    problems = _missing_assistance(session, study=study)
    if problems:
        raise Invalid("the assistance of some conditions is missing: " + "; ".join(problems[:MAX_ERRORS_SHOWN]))
    try:
        planned = design.plan(
            scheme=design.Scheme(study.scheme),
            readers=len(study.readers),
            cases=len(study.cases),
            conditions=[condition["key"] for condition in study.conditions],
            seed=study.seed,
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    cases = sorted(study.cases, key=lambda case: case.position)
    readers = sorted(study.readers, key=lambda reader: reader.position)
    session.add_all(
        StudyAssignment(
            reader_study_id=study.id,
            study_reader_id=readers[item.reader].id,
            case_id=cases[item.case].id,
            condition=item.condition,
            session=item.session,
            order=item.order,
            step=item.step,
        )
        for item in planned
    )
    study.state = ReaderStudyState.open
    study.opened_at = _now()
    session.flush()
    audit_service.record(session, action="reader_study_opened", user_id=user_id, object_type="reader_study",
                         object_id=study.id, detail={"assignments": len(planned), "seed": study.seed})
    return len(planned)


def close_study(session: Session, *, study: ReaderStudy) -> None:
    """No more reads; results and exports stay available."""
    if study.state != ReaderStudyState.open:
        raise Conflict(f"reader study {study.name!r} is {study.state.value}; only an open study can be closed")
    study.state = ReaderStudyState.closed
    study.closed_at = _now()
    session.flush()
