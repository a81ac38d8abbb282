"""The jobs an ingest plans carry who is waiting for them: a signed-in user's upload first, a command-line
import next, the demo last (app.tables.JobPriority; the worker's order is tested in tests/workers/test_stages.py)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app.ai_models import sync as models_sync
from app.db import session_scope
from app.ingest import service as ingest_service
from app.tables import Job, JobPriority
from tests.e2e.helpers import FUNDUS_IN_DOMAIN, fresh_jpeg


def _priorities(study_ids: list[int]) -> list[int]:
    with session_scope() as session:
        return list(session.scalars(select(Job.priority).where(Job.study_id.in_(study_ids))))


def _ingest(*, user_id: int | None, priority: JobPriority | None = None) -> list[int]:
    models_sync.sync_now()
    upload = ingest_service.Upload("fundus.jpg", fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=128))
    with session_scope() as session:
        result = ingest_service.ingest(
            session, uploads=[upload], user_id=user_id, origin=ingest_service.ImageOrigin("OP", "EYE"),
            priority=priority,
        )
        return [outcome.study.id for outcome in result.studies]


def test_a_signed_in_users_upload_is_interactive_and_an_import_without_one_is_batch(make_user) -> None:
    user, _ = make_user("reader")
    assert _priorities(_ingest(user_id=user.id)) == [JobPriority.interactive]
    assert _priorities(_ingest(user_id=None)) == [JobPriority.batch]
    assert _priorities(_ingest(user_id=None, priority=JobPriority.demo)) == [JobPriority.demo]


def test_lumen_import_plans_batch_jobs(tmp_path: Path) -> None:
    models_sync.sync_now()
    path = tmp_path / "fundus.jpg"
    path.write_bytes(fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=128))
    outcome = ingest_service.import_path(path, origin=ingest_service.ImageOrigin("OP", "EYE"))
    assert outcome.startswith("stored study"), outcome
    with session_scope() as session:
        newest = session.scalars(select(Job).order_by(Job.id.desc()).limit(1)).one()
        assert newest.priority == JobPriority.batch
