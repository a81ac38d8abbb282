"""Core tables: users and sessions, studies > series > instances, models, jobs, predictions, reads."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class Role(StrEnum):
    admin = "admin"
    coordinator = "coordinator"
    reader = "reader"


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class JobPriority(IntEnum):
    """Which queued job a worker takes first: the lower, the sooner (app.jobs.service.claim_more_urgent).

    A signed-in user's upload or request waits for no batch work; imports from the command line come next;
    the demo's jobs only run when nobody waits.
    """

    interactive = 0
    batch = 5
    demo = 9


class AiState(StrEnum):
    """What the AI did with a study: summarised from its jobs for the worklist."""

    no_model = "no_model"
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


def _enum(enum_cls: type[StrEnum], name: str, length: int = 16) -> SAEnum:
    # Stored as plain strings with a CHECK constraint: portable across SQLite and Postgres.
    return SAEnum(enum_cls, name=name, native_enum=False, validate_strings=True, length=length)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "user_role"))
    specialty: Mapped[str] = mapped_column(String(100), default="")
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuthSession(Base):
    """A signed-in browser session or an API bearer token; only the token's HMAC-SHA256 under the secret key is
    stored (app.auth.service._digest)."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hmac: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "cookie" or "bearer"
    csrf_token: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship()


class LoginThrottle(Base):
    """Recent failed sign-ins of one account (the email tried, known or not) or one client address, and the
    lock-out they earned (app/auth/throttle.py). In the database, so that every API process counts the same."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)  # "account:" or "address:" + a sha256
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last failure, or when the row was made: a row quiet for an hour is forgotten.
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64), index=True)  # login, login_failed, view, export, ...
    object_type: Mapped[str] = mapped_column(String(64), default="")
    object_id: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str] = mapped_column(String(64), default="")


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")  # modalities of its series, joined
    description: Mapped[str] = mapped_column(String(200), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    # PHI, kept apart: only shown to clinical users, never exported or shown in blinded reads.
    patient_name: Mapped[str] = mapped_column(String(200), default="")
    # Indexed: a study's priors are the other studies of its patient (app/viewer/service.priors_for).
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    series: Mapped[list[Series]] = relationship(back_populates="study", cascade="all, delete-orphan")
    jobs: Mapped[list[Job]] = relationship(back_populates="study", cascade="all, delete-orphan")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(String(200), default="")
    number: Mapped[int | None] = mapped_column(Integer)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", cascade="all, delete-orphan")


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("sop_instance_uid", "sha256", name="uq_instances_sop_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    source_format: Mapped[str] = mapped_column(String(8))  # dicom | png | jpeg
    # The uploaded file's own name (without folders): what tells apart image uploads without a patient name.
    source_filename: Mapped[str] = mapped_column(String(255), default="", server_default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    number: Mapped[int | None] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[int] = mapped_column(Integer)
    samples_per_pixel: Mapped[int] = mapped_column(Integer, default=1)
    bits_stored: Mapped[int] = mapped_column(Integer, default=8)
    photometric: Mapped[str] = mapped_column(String(32), default="")
    window_center: Mapped[float | None] = mapped_column(Float)
    window_width: Mapped[float | None] = mapped_column(Float)
    storage_key: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")
    predictions: Mapped[list[Prediction]] = relationship(
        back_populates="instance", cascade="all, delete-orphan"
    )


class AiModel(Base):
    __tablename__ = "ai_models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_ai_models_name_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(64))
    labels: Mapped[list[str]] = mapped_column(JSON)
    modalities: Mapped[list[str]] = mapped_column(JSON)
    input_spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    calibration_temperature: Mapped[float] = mapped_column(Float, default=1.0)
    uncertainty_threshold: Mapped[float | None] = mapped_column(Float)
    card: Mapped[dict[str, Any]] = mapped_column(JSON)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    # The worker's look for the most urgent queued job of its queue (app.jobs.service.claim_more_urgent).
    __table_args__ = (Index("ix_jobs_queue_order", "state", "queue", "priority", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("ai_models.id"))
    methods: Mapped[list[str]] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(16), default="gpu")
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"), default=JobState.queued, index=True)
    # A JobPriority value; the worker takes the most urgent queued job first, and between the stages of a job
    # it runs a more urgent one that arrived meanwhile (workers/pipeline.py).
    priority: Mapped[int] = mapped_column(Integer, default=JobPriority.batch, server_default="5")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last sign of life of the worker that holds a running job (its claim, heartbeat, progress). Liveness
    # reads only this: updated_at moves with any write to the row (app.jobs.service).
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # Who asked for the job through POST /api/jobs (None: planned by an upload): their quota of expensive jobs.
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)

    study: Mapped[Study] = relationship(back_populates="jobs")
    instance: Mapped[Instance | None] = relationship()
    model: Mapped[AiModel] = relationship()


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("job_id", "instance_id", name="uq_predictions_job_instance"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("ai_models.id"))
    probabilities: Mapped[list[float]] = mapped_column(JSON)
    label: Mapped[str] = mapped_column(String(100))
    label_index: Mapped[int] = mapped_column(Integer)
    predictive_entropy: Mapped[float | None] = mapped_column(Float)
    mutual_information: Mapped[float | None] = mapped_column(Float)
    mc_spread: Mapped[float | None] = mapped_column(Float)
    referral: Mapped[bool] = mapped_column(default=False)
    # Explanations beyond heatmaps, computed with the prediction (workers/evidence.py); None where the model
    # ships no reference library / concept bank. similar_cases: the k nearest confirmed reference cases, each
    # {rank, index, case_id, labels, similarity}; concepts: per concept {concept, sensitivity, strength,
    # accuracy}, strongest first.
    similar_cases: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # Their thumbnails (base64 PNG, in rank order), copied from the model's reference library so that the API
    # serves them without the model's files; loaded only when one is asked for.
    similar_thumbnails: Mapped[list[str] | None] = mapped_column(JSON, deferred=True)
    concepts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    instance: Mapped[Instance] = relationship(back_populates="predictions")
    model: Mapped[AiModel] = relationship()
    heatmaps: Mapped[list[Heatmap]] = relationship(back_populates="prediction", cascade="all, delete-orphan")


class Heatmap(Base):
    """A raw signed attribution map, stored as float16 bytes in the database (C order, `shape`)."""

    __tablename__ = "heatmaps"
    __table_args__ = (
        UniqueConstraint("prediction_id", "method", "target_class", name="uq_heatmaps_prediction_method"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(String(64))
    target_class: Mapped[int] = mapped_column(Integer)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    shape: Mapped[list[int]] = mapped_column(JSON)
    dtype: Mapped[str] = mapped_column(String(16), default="float16")
    # Loaded only when read (the data routes, the exports): listing a prediction's maps must not pull every
    # map's bytes, which made the prediction JSON the slowest metadata route under load.
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    value_min: Mapped[float] = mapped_column(Float)
    value_max: Mapped[float] = mapped_column(Float)
    scores: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    prediction: Mapped[Prediction] = relationship(back_populates="heatmaps")


class ReadState(StrEnum):
    draft = "draft"
    submitted = "submitted"


class Read(Base):
    """One reader's grading of a study (or one of its images): a draft autosaved, then submitted once.

    `answers` keeps the whole form; the typed columns repeat what analyses filter on.
    """

    __tablename__ = "reads"
    __table_args__ = (UniqueConstraint("reader_id", "client_id", name="uq_reads_reader_client"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instances.id", ondelete="SET NULL"))
    # Set when the read is a reader-study assignment (app/tables/reader_studies.py).
    assignment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assignments.id", ondelete="SET NULL", name="fk_reads_assignment_id"), index=True
    )
    client_id: Mapped[str] = mapped_column(String(64))
    # The newest draft stored, as its page numbered it: an autosave that arrives after a newer one is ignored.
    client_seq: Mapped[int | None] = mapped_column(BigInteger)
    form: Mapped[str] = mapped_column(String(16))  # dr | finding
    state: Mapped[ReadState] = mapped_column(_enum(ReadState, "read_state"), default=ReadState.draft)
    answers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dr_grade: Mapped[int | None] = mapped_column(Integer)  # ICDR 0-4
    dme: Mapped[bool | None] = mapped_column()
    confidence: Mapped[int | None] = mapped_column(Integer)  # 1-5
    finding: Mapped[str | None] = mapped_column(String(64))
    time_spent_seconds: Mapped[float | None] = mapped_column(Float)
    assisted: Mapped[bool] = mapped_column(default=False)
    assistance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # what was visible at submit
    # What of the AI the page carried at submit, as the server served it (app.reading.service.ai_shown_at_submit):
    # a copy, so that a later prediction or model change leaves it as it was. None on drafts and on reads
    # submitted before revision 0008.
    ai_shown: Mapped[bool | None] = mapped_column()
    ai_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The regions the reader marked as what drove their grade (app.reading.schemas.EvidenceMark, in normalised
    # image coordinates), kept with the draft and frozen at submit; compared with the heatmaps by
    # app/reader_studies/evidence.py.
    evidence_marks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AssistanceEvent(Base):
    """What assistance a reader saw and when: shown, hidden, method or opacity changed..."""

    __tablename__ = "assistance_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instances.id", ondelete="SET NULL"))
    read_id: Mapped[int | None] = mapped_column(ForeignKey("reads.id", ondelete="SET NULL"), index=True)
    assignment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assignments.id", ondelete="SET NULL", name="fk_assistance_events_assignment_id"), index=True
    )
    event: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    client_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ExplanationRating(Base):
    """A reader's Likert answers (1-5) about one explanation, with a comment: a heatmap (`heatmap_id`, `method`
    its method), or an explanation of a prediction that is not a map (`prediction_id`, `method` one of
    "similar_cases", "concepts", "justification")."""

    __tablename__ = "explanation_ratings"
    __table_args__ = (UniqueConstraint("reader_id", "client_id", name="uq_explanation_ratings_reader_client"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    heatmap_id: Mapped[int | None] = mapped_column(ForeignKey("heatmaps.id", ondelete="CASCADE"), index=True)
    prediction_id: Mapped[int | None] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE", name="fk_explanation_ratings_prediction_id"), index=True
    )
    method: Mapped[str] = mapped_column(String(64))
    answers: Mapped[dict[str, int]] = mapped_column(JSON)
    comment: Mapped[str] = mapped_column(Text, default="")
    client_id: Mapped[str] = mapped_column(String(64))
    assignment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assignments.id", ondelete="SET NULL", name="fk_explanation_ratings_assignment_id"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
