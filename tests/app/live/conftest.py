"""Studies whose job the tests move step by step, committing what a worker commits (app/live watches only rows):
queued, running with progress, the prediction, heatmaps family by family, their scores later, done."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.db import session_scope
from app.main import create_app
from app.tables import Heatmap, Job, JobState, Prediction
from tests.app.reader_studies.conftest import coordinator, make_cases, readers  # noqa: F401 (fixtures)
from tests.app.reading.conftest import add_heatmap
from tests.app.viewer import factories
from tests.e2e.helpers import running_server

# A sequential design on one case: the reader's pending reads are unassisted first, so they see no AI at all.
NO_AI_FIRST = {
    "scheme": "sequential",
    "conditions": [
        {"key": "unassisted", "kind": "unassisted", "label": "Unassisted"},
        {"key": "grades", "kind": "prediction", "label": "Grades"},
    ],
}
SCORES = {"deletion_auc": 0.21, "insertion_auc": 0.64, "sparsity_gini": 0.5, "target_probability": 0.83}


@dataclass(frozen=True)
class LiveJob:
    """A study and its job, with the worker's commits as methods (each its own unit of work)."""

    study_id: int
    instance_id: int
    job_id: int

    def progress(self, value: int) -> None:
        with session_scope() as session:
            job = session.get_one(Job, self.job_id)
            job.state, job.progress = JobState.running, value

    def prediction(self) -> int:
        with session_scope() as session:
            job = session.get_one(Job, self.job_id)
            row = Prediction(
                job_id=job.id,
                instance_id=self.instance_id,
                model_id=job.model_id,
                probabilities=[0.17, 0.83],
                label="abnormal",
                label_index=1,
                predictive_entropy=0.456,
            )
            session.add(row)
            session.flush()
            return row.id

    def heatmap(self, prediction_id: int, method: str) -> int:
        with session_scope() as session:
            return add_heatmap(session, prediction_id, method=method, array=factories.blob_heatmap((16, 16))).id

    def score(self, heatmap_id: int) -> None:
        with session_scope() as session:
            session.get_one(Heatmap, heatmap_id).scores = dict(SCORES)

    def finish(self) -> None:
        with session_scope() as session:
            job = session.get_one(Job, self.job_id)
            job.state, job.progress = JobState.done, 100


def queued_study(session: Session) -> LiveJob:
    """pydicom's CT_small as a study with one queued job and nothing else yet (committed)."""
    data, header = factories.ct_small()
    stored = factories.insert_study(
        session, data=data, source_format="dicom", rows=header.Rows, columns=header.Columns, modality="CT"
    )
    job = factories.add_job(session, stored, state=JobState.queued)
    session.commit()
    return LiveJob(stored.study_id, stored.instance_id, job.id)


@pytest.fixture
def live_job(db_session) -> LiveJob:
    return queued_study(db_session)


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(run_sweeper=False)


@pytest.fixture(scope="module")
def server(app) -> Iterator[str]:
    """The app under uvicorn, for the event streams read over real HTTP."""
    with running_server(app) as base:
        yield base
