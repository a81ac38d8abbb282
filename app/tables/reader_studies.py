"""Reader-study tables: a study design, its cases with their reference standard, its readers, and the
assignments (reader x case x condition x order) that the design expands into when the study opens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.tables.core import Instance, Study, User, _enum, utcnow

__all__ = [
    "AssignmentState",
    "ConditionKind",
    "ReaderStudy",
    "ReaderStudyState",
    "StudyAssignment",
    "StudyCase",
    "StudyReader",
    "StudyTask",
]


class StudyTask(StrEnum):
    dr_grading = "dr_grading"  # ICDR grade + referable DME + confidence (Sayres et al. 2019)
    binary_finding = "binary_finding"  # finding present / absent + confidence
    explanation_rating = "explanation_rating"  # Likert answers about the heatmap shown


class ConditionKind(StrEnum):
    unassisted = "unassisted"  # no prediction, no heatmap reach the browser
    prediction = "prediction"  # the model's grades / probabilities and uncertainty
    prediction_heatmap = "prediction_heatmap"  # the above plus the heatmap of one chosen method
    prediction_similar = "prediction_similar"  # the prediction plus the most similar confirmed reference cases
    prediction_concepts = "prediction_concepts"  # the prediction plus its concept evidence, told in words
    prediction_justification = "prediction_justification"  # the prediction plus its written justification only


class ReaderStudyState(StrEnum):
    draft = "draft"  # cases, readers and conditions may change
    open = "open"  # assignments exist; the design is frozen
    closed = "closed"  # no more reads


class AssignmentState(StrEnum):
    pending = "pending"
    done = "done"


class ReaderStudy(Base):
    __tablename__ = "reader_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    task: Mapped[StudyTask] = mapped_column(_enum(StudyTask, "study_task", length=32))
    # binary_finding: which finding is read ("effusion"), a label of the model that serves the cases so that the
    # assisted arms show the AI's probability of that very finding; "" for the other tasks.
    finding: Mapped[str] = mapped_column(String(64), default="", server_default="")
    scheme: Mapped[str] = mapped_column(String(32))  # app.statistics.design.Scheme
    # [{"key": "unassisted", "kind": "unassisted", "method": null, "label": "Unassisted"}, ...]
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    questions: Mapped[list[str]] = mapped_column(JSON, default=list)  # rating question keys asked
    seed: Mapped[int] = mapped_column(Integer)  # case order per reader derives from it; stored for audit
    washout_days: Mapped[float] = mapped_column(Float, default=0.0)
    allow_toggle: Mapped[bool] = mapped_column(default=False)  # may readers hide the assistance shown?
    educational: Mapped[bool] = mapped_column(default=False)  # reference shown to readers after each read
    state: Mapped[ReaderStudyState] = mapped_column(
        _enum(ReaderStudyState, "reader_study_state"), default=ReaderStudyState.draft
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    cases: Mapped[list[StudyCase]] = relationship(
        back_populates="reader_study", cascade="all, delete-orphan", order_by="StudyCase.id"
    )
    readers: Mapped[list[StudyReader]] = relationship(
        back_populates="reader_study", cascade="all, delete-orphan", order_by="StudyReader.position"
    )


class StudyCase(Base):
    """One case of a reader study: a stored study (and the image read), named by a pseudonym in exports."""

    __tablename__ = "study_cases"
    __table_args__ = (
        UniqueConstraint("reader_study_id", "study_id", name="uq_study_cases_study"),
        UniqueConstraint("reader_study_id", "pseudonym", name="uq_study_cases_pseudonym"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reader_study_id: Mapped[int] = mapped_column(ForeignKey("reader_studies.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="RESTRICT"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="RESTRICT"))
    pseudonym: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)  # 0-based index used by the design
    # The reference standard: {"dr_grade": 2, "dme": false} or {"finding": "nodule"}; null until uploaded.
    reference: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    reader_study: Mapped[ReaderStudy] = relationship(back_populates="cases")
    study: Mapped[Study] = relationship()
    instance: Mapped[Instance] = relationship()


class StudyReader(Base):
    __tablename__ = "study_readers"
    __table_args__ = (UniqueConstraint("reader_study_id", "user_id", name="uq_study_readers_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    reader_study_id: Mapped[int] = mapped_column(ForeignKey("reader_studies.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    pseudonym: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)

    reader_study: Mapped[ReaderStudy] = relationship(back_populates="readers")
    user: Mapped[User] = relationship()


class StudyAssignment(Base):
    """One read to do: this reader, this case, under this condition, at this place in the reader's queue."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("study_reader_id", "order", name="uq_assignments_reader_order"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reader_study_id: Mapped[int] = mapped_column(ForeignKey("reader_studies.id", ondelete="CASCADE"), index=True)
    study_reader_id: Mapped[int] = mapped_column(ForeignKey("study_readers.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("study_cases.id", ondelete="CASCADE"), index=True)
    condition: Mapped[str] = mapped_column(String(64))
    session: Mapped[int] = mapped_column(Integer, default=1)
    order: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[AssignmentState] = mapped_column(
        _enum(AssignmentState, "assignment_state"), default=AssignmentState.pending
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    reader: Mapped[StudyReader] = relationship()
    case: Mapped[StudyCase] = relationship()
