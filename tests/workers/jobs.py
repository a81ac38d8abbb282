"""Jobs for the pipeline and fault tests: a stored fundus photograph and a queued job row, not sent to a broker
(the pipeline tests call the pipeline directly; the fault tests send it themselves)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from app.ai_models import sync as models_sync
from app.db import session_scope
from app.jobs import service as jobs_service
from app.storage import get_blob_store
from app.tables import AiModel, Instance, Job, Series, Study


def fundus_model_id() -> int:
    """The id of the model that serves fundus photographs (the shipped DR grader), its folder synced first."""
    models_sync.sync_now()
    with session_scope() as session:
        model = jobs_service.model_for_modality(session, modality="OP")
        assert isinstance(model, AiModel)
        return model.id


def queued_photo_job(data: bytes, *, model_id: int, methods: list[str], attempts: int = 0) -> int:
    """Store the JPEG `data` as an OP instance of a new study and queue a job of `model_id` for it; its id."""
    with session_scope() as session:
        return add_photo_job(session, data, model_id=model_id, methods=methods, attempts=attempts).id


def add_photo_job(session: Session, data: bytes, *, model_id: int, methods: list[str], attempts: int = 0) -> Job:
    """The same in the caller's session (another database than the session's, say), flushed, not committed."""
    sha = hashlib.sha256(data).hexdigest()
    key = get_blob_store().put(sha, data)
    study = Study(study_instance_uid=generate_uid(), modality="OP")
    series = Series(study=study, series_instance_uid=generate_uid(), modality="OP")
    instance = Instance(
        series=series,
        sop_instance_uid=generate_uid(),
        source_format="jpeg",
        modality="OP",
        rows=1,
        columns=1,
        samples_per_pixel=3,
        storage_key=key,
        sha256=sha,
        size_bytes=len(data),
    )
    job = Job(
        study=study,
        instance=instance,
        model_id=model_id,
        methods=methods,
        queue="gpu",
        attempts=attempts,
        sent_at=datetime.now(UTC),
    )
    session.add(job)
    session.flush()
    return job
