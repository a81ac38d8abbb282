"""Job state as the API shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.bounds import DbId, FreeText
from app.tables import JobState


class ExplainRequest(BaseModel):
    instance_id: DbId
    methods: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=32)
    model: Annotated[FreeText, Field(max_length=100)] | None = Field(
        None,
        description="the installed model to run, by name (also one not served automatically); default: the model "
        "routing picks for the image's modality and body part",
    )


class QueuePlace(BaseModel):
    """Where a queued job stands (all None once a worker took it)."""

    position: int | None = Field(None, description="1: the next job a worker of its queue takes")
    jobs_ahead: int | None = Field(None, description="jobs running or taken before it")
    expected_start_s: float | None = Field(
        None, description="seconds until a worker may take it, at the pace of the queue's last 50 jobs (one worker)"
    )


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    study_id: int
    instance_id: int | None
    model_id: int
    methods: list[str]
    queue: str
    state: JobState
    progress: int
    attempts: int
    error: str
    priority: int = Field(description="which queued job a worker takes first: 0 a signed-in user's upload or "
                          "request, 5 a command-line import, 9 the demo")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timings: dict[str, float]
    place: QueuePlace = Field(default_factory=QueuePlace, description="where a queued job stands")


class StageShare(BaseModel):
    key: str
    name: str
    median_s: float | None
    share: float | None = Field(description="the stage's seconds over the jobs' own (urgent work lent excluded)")


class TimingSummary(BaseModel):
    """Medians over a model's last finished jobs that gave an answer (app.jobs.timings)."""

    jobs: int
    wait_s: float | None = Field(description="queued until a worker took it")
    first_answer_s: float | None = Field(description="worker took it -> prediction stored")
    first_map_s: float | None
    all_maps_s: float | None
    total_s: float | None
    overhead_share: float | None
    stages: list[StageShare]
