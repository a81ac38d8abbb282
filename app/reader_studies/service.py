"""Designing a reader study: create it, add cases and readers, open it (which expands the design into
assignments) and close it. The reference standard has its own module (app/reader_studies/reference.py)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app import errors, visibility
from app.ai_models import routing
from app.audit import service as audit_service
from app.reader_studies.schemas import (
    CandidateCase,
    CaseOut,
    FindingChoice,
    ReaderOut,
    ReaderStudyDetail,
    ReaderStudyIn,
    ReaderStudyOut,
)
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
from app.viewer import service as viewer_service

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
        finding=data.finding,
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
        finding=study.finding,
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


_COLOUR_PHOTOMETRICS = ("RGB", "YBR", "PALETTE")


def _refusal(task: StudyTask, kind: str) -> str:
    """Why a study of this task does not read an image of this kind ("" when it does)."""
    if vocabulary.task_accepts(task.value, kind):
        return ""
    wanted = vocabulary.IMAGE_WORDS[vocabulary.TASK_IMAGES[task.value]]
    return f"not {wanted}, the only image a {vocabulary.TASK_WORDS[task.value]} study reads"


def case_images(
    session: Session, *, task: StudyTask, study_ids: list[int], identity: visibility.IdentityRule | None = None
) -> dict[int, CandidateCase]:
    """The image each study is read on (its first instance, by series and instance number), what it is, and
    whether a study of this task reads it. `identity`: the caller's, for the free-text description."""
    rows = session.execute(
        select(Series.study_id, Instance, Series.modality, Series.body_part, Series.description, Study.description)
        .join(Instance, Instance.series_id == Series.id)
        .join(Study, Study.id == Series.study_id)
        .where(Series.study_id.in_(study_ids))
        .order_by(Series.study_id, Series.number.nulls_last(), Series.id, Instance.number.nulls_last(), Instance.id)
    ).all()
    shown = identity or visibility.IdentityRule(shown=True)
    first: dict[int, CandidateCase] = {}
    for study_id, instance, series_modality, body_part, series_text, study_text in rows:
        if study_id in first:
            continue
        modality = instance.modality or series_modality
        colour = instance.samples_per_pixel > 1 or instance.photometric.upper().startswith(_COLOUR_PHOTOMETRICS)
        kind = vocabulary.image_kind(modality, body_part, colour=colour)
        reason = _refusal(task, kind)
        first[study_id] = CandidateCase(
            study_id=study_id,
            instance_id=instance.id,
            modality=modality,
            body_part=body_part,
            description=shown.free_text(series_text or study_text),
            kind=kind,
            thumbnail_url=f"/api/instances/{instance.id}/image.png?max_size=512",
            accepted=not reason,
            reason=reason,
        )
    return first


def candidate_cases(session: Session, *, study: ReaderStudy, user: User) -> tuple[list[CandidateCase], int]:
    """The stored studies (newest first, as the worklist shows them to this user) that this draft study's task
    reads and that are not cases yet; and how many others its task does not read."""
    present = {case.study_id for case in study.cases}
    rows = [row for row in viewer_service.worklist_for(session, user=user).studies if row.id not in present]
    ids = [row.id for row in rows if row.id is not None]
    images = case_images(session, task=study.task, study_ids=ids, identity=visibility.identity_rule(user.role))
    ai_states = {row.id: row.ai_state for row in rows}
    accepted = [
        image.model_copy(update={"ai_state": ai_states.get(study_id, "")})
        for study_id, image in images.items()
        if image.accepted
    ]
    accepted.sort(key=lambda image: ids.index(image.study_id))
    return accepted, len(images) - len(accepted)


def finding_choices(session: Session, *, task: StudyTask) -> list[FindingChoice]:
    """The findings a study of this task may name so that its AI arms show their probability: the labels of the
    active models served on the images it reads (chest radiographs, CR or DX of the chest), by label."""
    if task != StudyTask.binary_finding:
        return []
    serving = {
        model.id: model
        for modality in sorted(vocabulary.RADIOGRAPH_MODALITIES)
        if (model := routing.automatic_model(session, modality=modality, body_part="CHEST")) is not None
    }
    models_of: dict[str, list[str]] = {}
    for model in sorted(serving.values(), key=lambda row: row.name):
        for label in model.labels:
            models_of.setdefault(str(label), []).append(model.name)
    return [FindingChoice(finding=label, models=names) for label, names in models_of.items()]


def models_reporting(session: Session, *, finding: str) -> list[str]:
    """The served models that report a binary-finding study's finding: its AI arms show their probability of it."""
    if not finding:
        return []
    choices = finding_choices(session, task=StudyTask.binary_finding)
    index = vocabulary.label_index([choice.finding for choice in choices], finding)
    return choices[index].models if index is not None else []


def _what(image: CandidateCase) -> str:
    """'MR SHOULDER, Shoulder sag T1': what a refused case is, in the words of its headers."""
    return ", ".join(filter(None, (f"{image.modality} {image.body_part}".strip(), image.description)))


def add_cases(session: Session, *, study: ReaderStudy, study_ids: list[int]) -> int:
    """Add stored studies as cases (those already in are skipped); returns how many were added. A study the
    task does not read (an MR in a DR grading study) is refused now, with the reason, not when it opens."""
    _require_draft(study, "cases can be added")
    wanted = list(dict.fromkeys(study_ids))
    images = case_images(session, task=study.task, study_ids=wanted)
    missing = [study_id for study_id in wanted if study_id not in images]
    if missing:
        known = set(session.scalars(select(Study.id).where(Study.id.in_(missing))))
        unknown = [study_id for study_id in missing if study_id not in known]
        if unknown:
            raise Invalid(f"no stored study with id {', '.join(map(str, unknown[:MAX_ERRORS_SHOWN]))}")
        raise Invalid(f"study {missing[0]} has no image to read")
    refused = [images[study_id] for study_id in wanted if not images[study_id].accepted]
    if refused:
        shown = refused[:MAX_ERRORS_SHOWN]
        raise Invalid("; ".join(f"study {image.study_id} ({_what(image)}): {image.reason}" for image in shown))
    present = {case.study_id for case in study.cases}
    added = 0
    for study_id in wanted:
        if study_id in present:
            continue
        position = len(study.cases)
        study.cases.append(
            StudyCase(
                study_id=study_id,
                instance_id=images[study_id].instance_id,
                pseudonym=f"C{position + 1:04d}",
                position=position,
            )
        )
        added += 1
    session.flush()
    return added


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


def open_study(session: Session, *, study: ReaderStudy, user_id: int, ip: str) -> int:
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
                         object_id=study.id, ip=ip, detail={"assignments": len(planned), "seed": study.seed})
    return len(planned)


def close_study(session: Session, *, study: ReaderStudy) -> None:
    """No more reads; results and exports stay available."""
    if study.state != ReaderStudyState.open:
        raise Conflict(f"reader study {study.name!r} is {study.state.value}; only an open study can be closed")
    study.state = ReaderStudyState.closed
    study.closed_at = _now()
    session.flush()
