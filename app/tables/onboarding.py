"""A user's model on its way in: the upload, the answers for its card, what the worker found in the file, the
checks it ran and their outcome (workers/onboarding.py). A model is served only once its onboarding passed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.tables.core import AiModel, User, _enum, utcnow

__all__ = ["ModelOnboarding", "OnboardingState"]


class OnboardingState(StrEnum):
    """inspecting (queued or running: the file is read, its layers listed, a preview drawn) -> proposed (the
    coordinator confirms the target layer) -> checking (the checks run) -> installed, or failed with why."""

    inspecting = "inspecting"
    proposed = "proposed"
    checking = "checking"
    installed = "installed"
    failed = "failed"


class ModelOnboarding(Base):
    __tablename__ = "model_onboardings"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(32))
    state: Mapped[OnboardingState] = mapped_column(
        _enum(OnboardingState, "onboarding_state"), default=OnboardingState.inspecting
    )
    # 0-100 and what runs now, for the page's progress bar.
    progress: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str] = mapped_column(String(200), default="")
    # The uploaded file's name as the user gave it, and where the upload lies under the data folder.
    filename: Mapped[str] = mapped_column(String(255), default="")
    folder: Mapped[str] = mapped_column(String(500), default="")
    # The card's answers as given (labels, domain, input, target layer...), what the file told (format,
    # layers, proposals), and the checks' report (models.onboarding.checks.CheckReport.as_dict()).
    answers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    proposal: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str] = mapped_column(String(200), default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("ai_models.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    created_by: Mapped[User | None] = relationship()
    model: Mapped[AiModel | None] = relationship()
