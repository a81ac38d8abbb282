"""The pipeline tests call `pipeline.run_job` on jobs of their own, in the pytest session's one database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update

from app.db import session_scope
from app.tables import Job, JobState


@pytest.fixture(autouse=True)
def no_leftover_queued_jobs() -> Iterator[None]:
    """Jobs that earlier tests queued (uploads through the API, with no worker) are retired: a worker runs any
    queued job more urgent than its own first (workers/pipeline.py), and a test expects its own job alone."""
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.state == JobState.queued).values(state=JobState.failed, error="left by a test")
        )
    yield
