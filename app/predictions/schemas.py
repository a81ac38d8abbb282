"""A prediction with its uncertainty and the list of its heatmaps."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class HeatmapRef(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    method: str
    target_class: int
    shape: list[int]
    value_min: float
    value_max: float
    scores: dict[str, float]


class PredictionOut(BaseModel):
    """Computed from the row and its model (names, labels, the uncertainty measures together)."""

    id: int
    instance_id: int
    job_id: int
    model: str
    model_version: str
    labels: list[str]
    probabilities: list[float]
    label: str
    label_index: int
    uncertainty: dict[str, float | None]
    referral: bool
    created_at: datetime
    heatmaps: list[HeatmapRef]
