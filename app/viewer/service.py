"""Queries of the viewer: the worklist and the study page, as far as the caller may see them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app import visibility
from app.audit import service as audit_service
from app.jobs import service as jobs_service
from app.jobs import timings as jobs_timings
from app.jobs.schemas import QueuePlace
from app.predictions import service as predictions_service
from app.studies import service as studies_service
from app.tables import AiState, Instance, Job, JobState, Prediction, Series, Study, User
from app.viewer.schemas import (
    ComparisonImage,
    HeatmapView,
    InstanceView,
    JobView,
    LabelProbability,
    PredictionView,
    Priors,
    PriorStudy,
    StudyView,
    Worklist,
    WorklistRow,
)

_ACTIVE = {AiState.queued.value, AiState.running.value}
WORKLIST_LIMIT = 200  # the newest studies the worklist shows (its page, its API and its event stream)
MAX_PRIORS = 50  # of one patient's other studies, the newest listed
# Shown from the colour route by viewer.js, as app/reading/room.py tells it (a layer above: not importable here).
_COLOUR_PHOTOMETRICS = ("RGB", "YBR", "PALETTE")


def _format_date(value: str | None) -> str | None:
    # DICOM DA is YYYYMMDD; anything else is shown as stored.
    if value is None:
        return None
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value


def _referrals(session: Session, *, study_ids: Sequence[int]) -> set[int]:
    rows = session.scalars(
        select(Job.study_id)
        .join(Prediction, Prediction.job_id == Job.id)
        .where(Job.study_id.in_(study_ids), Prediction.referral.is_(True))
        .distinct()
    )
    return set(rows)


def _predicted_labels(session: Session, *, study_ids: Sequence[int]) -> dict[int, str]:
    rows = session.execute(
        select(Job.study_id, Prediction.label)
        .join(Prediction, Prediction.job_id == Job.id)
        .where(Job.study_id.in_(study_ids))
        .order_by(Prediction.id)
    ).all()
    labels: dict[int, list[str]] = defaultdict(list)
    for study_id, label in rows:
        if label not in labels[study_id]:
            labels[study_id].append(label)
    return {study_id: ", ".join(values) for study_id, values in labels.items()}


OUTSIDE_DOMAIN_LABEL = "outside the model's domain"


def _refused_by_gate(jobs: Sequence[Job]) -> bool:
    """Every finished job of the study was refused by its model's input-domain gate (no prediction to label)."""
    done = [job for job in jobs if job.state == JobState.done]
    return bool(done) and all((job.timings or {}).get("out_of_domain") == 1.0 for job in done)


def _queue_places(session: Session, *, studies: Sequence[Study]) -> dict[int, QueuePlace]:
    """Each queued study's place: that of its job that a worker takes first (queued studies of the page only)."""
    queued = [job for study in studies for job in study.jobs if job.state == JobState.queued]
    places = jobs_timings.queue_places(session, queued)
    firsts: dict[int, QueuePlace] = {}
    for job in queued:
        place = places.get(job.id)
        best = firsts.get(job.study_id)
        if place is not None and (best is None or (place.position or 0) < (best.position or 0)):
            firsts[job.study_id] = place
    return firsts


def _unnamed_label(
    *, seen: visibility.IdentityView, images: int, uploaded: datetime | None, file_names: Sequence[str] = ()
) -> str | None:
    """What tells apart studies without a patient name (image uploads): the first file's name where the caller
    may see it ("fundus.png +2 · 3 images uploaded ..."), how many images, uploaded when. None where the study
    has a name (or the caller's pseudonym), and inside a reader-study case (no upload time)."""
    if seen.patient or uploaded is None:
        return None
    named = [name for name in file_names if name]
    more = f" +{len(named) - 1}" if len(named) > 1 else ""
    prefix = f"{named[0]}{more} · " if named else ""
    return f"{prefix}{images} image{'' if images == 1 else 's'} uploaded {uploaded:%Y-%m-%d %H:%M:%S}"


def _file_names(
    session: Session, *, study_ids: Sequence[int], identity: visibility.IdentityRule
) -> defaultdict[int, list[str]]:
    """The uploaded files' own names of each study, in upload order, where the identity rule shows them."""
    names: defaultdict[int, list[str]] = defaultdict(list)
    if not study_ids or not identity.shown:  # IdentityRule.file_name would hide every one: no query
        return names
    rows = session.execute(
        select(Series.study_id, Instance.source_filename)
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id.in_(study_ids))
        .order_by(Instance.id)
    ).all()
    for study_id, name in rows:
        names[study_id].append(identity.file_name(name))
    return names


def _rows(
    session: Session, *, studies: Sequence[Study], identity: visibility.IdentityRule, blinded: Collection[int] = ()
) -> list[WorklistRow]:
    """Worklist rows with the identity the rule shows, and no model label or referral flag on `blinded` studies
    (those the caller still has to read in a reader study)."""
    ids = [study.id for study in studies]
    counts = studies_service.instance_counts(session, study_ids=ids)
    labels = _predicted_labels(session, study_ids=ids)
    referrals = _referrals(session, study_ids=ids)
    places = _queue_places(session, studies=studies)
    unnamed = [study.id for study in studies if not study.patient_name]
    file_names = _file_names(session, study_ids=unnamed, identity=identity)
    rows = []
    for study in studies:
        summary = jobs_service.summarise(list(study.jobs))
        seen = identity.study(study)
        hide_ai = study.id in blinded
        place = places.get(study.id) if summary.state == AiState.queued.value else None
        uploaded = identity.link(study.created_at)
        rows.append(
            WorklistRow(
                id=seen.study_id,
                identity_shown=seen.shown,
                patient_name=seen.patient,
                patient_id=seen.patient_id,
                study_date=_format_date(seen.study_date),
                description=seen.description,
                modality=study.modality,
                instances=counts.get(study.id, 0),
                ai_state=summary.state,
                ai_progress=summary.progress,
                ai_error=summary.error,
                ai_label=(labels.get(study.id) or (OUTSIDE_DOMAIN_LABEL if _refused_by_gate(study.jobs) else None))
                if summary.state == AiState.done.value and not hide_ai else None,
                ai_referral=study.id in referrals and not hide_ai,
                uploaded_at=uploaded,
                unnamed_label=_unnamed_label(
                    seen=seen, images=counts.get(study.id, 0), uploaded=uploaded, file_names=file_names[study.id]
                ),
                queue_position=place.position if place else None,
                queue_expected_start_s=place.expected_start_s if place else None,
            )
        )
    return rows


def worklist_for(session: Session, *, user: User, limit: int = WORKLIST_LIMIT) -> Worklist:
    """The newest studies first as this user may see them: identity as their role shows it, and no model label
    or referral flag on the studies they still have to read in a reader study."""
    studies = studies_service.newest_studies(session, limit=limit)
    blinded = visibility.blinded_studies(session, user_id=user.id, study_ids=[study.id for study in studies])
    rows = _rows(session, studies=studies, identity=visibility.identity_rule(user.role), blinded=blinded.keys())
    return Worklist(studies=rows, active=any(row.ai_state in _ACTIVE for row in rows))


def worklist_page(session: Session, *, user: User, ip: str) -> Worklist:
    """The worklist page for this user, its view audited once the request commits (the page's polls of
    /api/worklist are not: they would add a row every two seconds while a job runs)."""
    worklist = worklist_for(session, user=user)
    audit_service.record_when_read(
        session, action="view", user_id=user.id, object_type="worklist", ip=ip,
        detail={"studies": len(worklist.studies)},
    )
    return worklist


def record_pixels_sent(
    session: Session, *, user_id: int, object_type: str, object_id: int, frame: int, form: str, ip: str
) -> None:
    """Audit that a caller was sent the pixels of an image or a heatmap (`form`: png, raw or data), once the
    request commits: once per view, at its first frame. Both viewers open frame 0 first; a cine loop's or a
    slider's later frames would add a row per frame. The routes call it after rendering: a revalidation
    answered 304 sends no pixels and is not recorded."""
    if frame == 0:
        audit_service.record_when_read(
            session, action="view", user_id=user_id, object_type=object_type, object_id=object_id, ip=ip,
            detail={"form": form},
        )


def _study_with_jobs(session: Session, *, study_id: int) -> Study:
    """The study with its jobs and their models (what the worklist and the study page show), or StudyNotFound."""
    study = session.get(Study, study_id, options=[selectinload(Study.jobs).selectinload(Job.model)])
    if study is None:
        raise studies_service.StudyNotFound(study_id)
    return study


def worklist_row(session: Session, *, study_id: int, identity: visibility.IdentityRule) -> WorklistRow:
    """One study's worklist row with the identity the rule shows and all its AI state (the reading room shows
    it, once the visibility service has let the caller in; a reader study blinds it there)."""
    return _rows(session, studies=[_study_with_jobs(session, study_id=study_id)], identity=identity)[0]


def worklist_row_for(session: Session, *, study_id: int, user: User) -> WorklistRow:
    """One study's worklist row as this user may see it (the study page polls it while its jobs run)."""
    study = _study_with_jobs(session, study_id=study_id)
    blinded = visibility.blinded_studies(session, user_id=user.id, study_ids=[study_id])
    return _rows(session, studies=[study], identity=visibility.identity_rule(user.role), blinded=blinded.keys())[0]


def _label_of(labels: list[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else str(index)


def _prediction_view(prediction: Prediction) -> PredictionView:
    labels = list(prediction.model.labels)
    return PredictionView(
        id=prediction.id,
        label=prediction.label,
        probabilities=[
            LabelProbability(label=_label_of(labels, index), probability=float(value))
            for index, value in enumerate(prediction.probabilities)
        ],
        model_name=prediction.model.name,
        model_version=prediction.model.version,
        predictive_entropy=prediction.predictive_entropy,
        referral=prediction.referral,
        heatmaps=[
            HeatmapView(
                id=heatmap.id,
                method=heatmap.method,
                target_class=heatmap.target_class,
                target_label=_label_of(labels, heatmap.target_class),
            )
            for heatmap in sorted(prediction.heatmaps, key=lambda row: (row.method, row.target_class))
        ],
    )


def study_page(session: Session, *, study_id: int, user: User, ip: str) -> StudyView:
    """The study page for this user (Blinded while they have reader-study reads of it pending; identity as
    their role shows it), its view audited once the request commits."""
    visibility.check_study_page(session, user_id=user.id, study_id=study_id)
    view = _study_view(session, study_id=study_id, identity=visibility.identity_rule(user.role), user_id=user.id)
    audit_service.record_when_read(
        session, action="view", user_id=user.id, object_type="study", object_id=study_id, ip=ip
    )
    return view


def _study_view(session: Session, *, study_id: int, identity: visibility.IdentityRule, user_id: int) -> StudyView:
    """The study page: fields, instances with their latest prediction and heatmaps, and jobs."""
    study = _study_with_jobs(session, study_id=study_id)
    seen = identity.study(study)
    instances = session.execute(
        select(Instance, Series)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == study.id)
        .order_by(Series.number.nulls_last(), Series.id, Instance.number.nulls_last(), Instance.id)
    ).all()
    predictions = predictions_service.latest_predictions(
        session, instance_ids=[instance.id for instance, _ in instances]
    )
    return StudyView(
        summary=_rows(session, studies=[study], identity=identity)[0],
        patient_birth_date=_format_date(seen.patient_birth_date),
        accession_number=seen.accession_number,
        study_instance_uid=seen.study_instance_uid,
        instances=[
            InstanceView(
                id=instance.id,
                series_description=identity.free_text(series.description),
                source_filename=identity.file_name(instance.source_filename),
                modality=instance.modality,
                number=instance.number,
                frames=instance.frames,
                rows=instance.rows,
                columns=instance.columns,
                prediction=_prediction_view(predictions[instance.id]) if instance.id in predictions else None,
            )
            for instance, series in instances
        ],
        jobs=[
            JobView(
                id=job.id,
                instance_id=job.instance_id,
                model_name=job.model.name,
                model_version=job.model.version,
                state=job.state.value,
                progress=job.progress,
                error=job.error,
            )
            for job in sorted(study.jobs, key=lambda row: row.id)
        ],
        priors=_priors(session, study=study, identity=identity, user_id=user_id),
    )


# Priors ------------------------------------------------------------------------------------------------------


def priors_for(session: Session, *, study_id: int, user: User) -> Priors:
    """The other studies of the study's patient that this user may open, newest first (refused as the study page
    is: StudyNotFound, or Blinded while they have reader-study reads of it pending)."""
    visibility.check_study_page(session, user_id=user.id, study_id=study_id)
    study = session.get(Study, study_id)
    if study is None:
        raise studies_service.StudyNotFound(study_id)
    return _priors(session, study=study, identity=visibility.identity_rule(user.role), user_id=user.id)


def _priors(session: Session, *, study: Study, identity: visibility.IdentityRule, user_id: int) -> Priors:
    """Studies with the same PatientID (none without one: an image upload is nobody's prior), less those the
    user has reader-study reads pending on: opened here they would link a case back to its study."""
    others: list[Study] = []
    if study.patient_id:
        others = list(
            session.scalars(
                select(Study)
                .where(Study.patient_id == study.patient_id, Study.id != study.id)
                .order_by(Study.study_date.desc(), Study.created_at.desc(), Study.id.desc())
                .limit(MAX_PRIORS)
            )
        )
    blinded = visibility.blinded_studies(session, user_id=user_id, study_ids=[other.id for other in others])
    others = [other for other in others if other.id not in blinded]
    ids = [other.id for other in others]
    images = _first_images(session, study_ids=[study.id, *ids])
    counts = studies_service.instance_counts(session, study_ids=ids)
    return Priors(
        study_id=study.id,
        label=f"Current {_format_date(study.study_date) or 'undated'}",
        first_image=images.get(study.id),
        priors=[
            PriorStudy(
                id=other.id,
                study_date=_format_date(other.study_date) or None,
                label=_prior_label(other.study_date, current=study.study_date),
                modality=other.modality,
                description=identity.free_text(other.description),
                instances=counts.get(other.id, 0),
                first_image=images.get(other.id),
            )
            for other in others
        ],
    )


def _prior_label(date: str, *, current: str) -> str:
    # DICOM DA (YYYYMMDD) strings order as their dates do.
    if not date:
        return "Undated"
    return f"{'Later' if current and date > current else 'Prior'} {_format_date(date)}"


def _first_images(session: Session, *, study_ids: Sequence[int]) -> dict[int, ComparisonImage]:
    """Each study's first image in the study page's order (series number, then instance number)."""
    rank = func.row_number().over(
        partition_by=Series.study_id,
        order_by=(Series.number.nulls_last(), Series.id, Instance.number.nulls_last(), Instance.id),
    )
    ranked = (
        select(Instance.id, Series.study_id, rank.label("rank"))
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id.in_(study_ids))
        .subquery()
    )
    rows = session.execute(
        select(Instance, ranked.c.study_id).join(ranked, ranked.c.id == Instance.id).where(ranked.c.rank == 1)
    ).all()
    return {study_id: _comparison_image(instance) for instance, study_id in rows}


def _comparison_image(instance: Instance) -> ComparisonImage:
    colour = instance.samples_per_pixel > 1 or instance.photometric.upper().startswith(_COLOUR_PHOTOMETRICS)
    return ComparisonImage(
        id=instance.id, modality=instance.modality, rows=instance.rows, columns=instance.columns,
        frames=instance.frames, colour=colour,
    )
