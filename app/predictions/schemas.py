"""A prediction with its uncertainty and the list of its heatmaps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
    # Explanations beyond heatmaps, as stored (workers/evidence.py); None where the model has none or a reader
    # study's condition hides them. similar_cases: {rank, index, case_id, label_indices, similarity} nearest first;
    # concepts: {concept, sensitivity, strength, accuracy} strongest first.
    similar_cases: list[dict[str, Any]] | None = None
    concepts: list[dict[str, Any]] | None = None
