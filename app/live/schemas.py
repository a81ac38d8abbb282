"""Pydantic shapes of what the live pages are told of a study's AI: its state, its results, both at once."""

from __future__ import annotations

from pydantic import BaseModel

from app.reading.schemas import Assistance


class LiveJob(BaseModel):
    id: int
    state: str  # JobState
    progress: int


class LiveState(BaseModel):
    """The study's AI state as its worklist row shows it (app.viewer.service), and its jobs."""

    ai_state: str  # AiState: no_model | queued | running | done | failed
    ai_progress: int
    ai_error: str
    ai_label: str | None
    ai_referral: bool
    jobs: list[LiveJob]


class LiveInstance(BaseModel):
    """One image's model output as the reading room's assistance panel shows it."""

    id: int
    assistance: Assistance | None
    refusal: str | None = None  # why the model said nothing: the image is outside its domain


class LiveSnapshot(BaseModel):
    """All of it at once: what a page polls when it cannot hold an event stream open."""

    digest: str  # the event id the stream would send now (docs/api.md, "Live updates")
    state: LiveState
    instances: list[LiveInstance]
