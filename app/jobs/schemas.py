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
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timings: dict[str, float]
