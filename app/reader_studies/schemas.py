"""Pydantic shapes of reader studies: the design a coordinator sends, and what readers and coordinators get."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.bounds import DbId, FreeText
from app.reading import vocabulary
from app.statistics.design import Scheme
from app.tables import ConditionKind, StudyTask
from models.explain.names import METHOD_NAMES  # torch-free

_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_QUESTION_KEYS = tuple(key for key, _ in vocabulary.RATING_QUESTIONS)


# The conditions that show an explanation a reader can rate on the study's Likert questions.
RATEABLE_KINDS = frozenset({
    ConditionKind.prediction_heatmap,
    ConditionKind.prediction_similar,
    ConditionKind.prediction_concepts,
    ConditionKind.prediction_justification,
})


class ConditionIn(BaseModel):
    """One assistance condition: what the reader sees beside the image."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="snake_case name used in exports, e.g. 'unassisted'")
    kind: ConditionKind
    method: str | None = Field(None, description="the heatmap method shown; required for prediction_heatmap")
    label: FreeText = Field("", max_length=100)

    @field_validator("key")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _KEY.match(value):
            raise ValueError("a condition key is snake_case: lower-case letters, digits and _, starting with a letter")
        return value

    @model_validator(mode="after")
    def _method_fits_kind(self) -> ConditionIn:
        if self.kind == ConditionKind.prediction_heatmap and not self.method:
            raise ValueError(f"condition {self.key!r} shows a heatmap: name its method")
        if self.kind != ConditionKind.prediction_heatmap and self.method:
            raise ValueError(f"condition {self.key!r} shows no heatmap: it takes no method")
        if self.method and self.method not in METHOD_NAMES:
            raise ValueError(f"unknown method {self.method!r}; the methods are {', '.join(sorted(METHOD_NAMES))}")
        if not self.label:
            self.label = self.key.replace("_", " ").capitalize()
        return self


class ReaderStudyIn(BaseModel):
    """A new reader study. The defaults are the three arms of Sayres et al. (Ophthalmology 2019)."""

    model_config = ConfigDict(extra="forbid")

    name: FreeText = Field(min_length=1, max_length=200)
    description: FreeText = Field("", max_length=4000)
    task: StudyTask = StudyTask.dr_grading
    finding: FreeText = Field(
        "",
        max_length=64,
        description="binary_finding only, and required there: the finding read ('effusion'), asked as 'Effusion "
        "present?'. A label of the model that serves the cases (GET /api/reader-studies/finding-choices) lets the "
        "AI arms show that label's probability; any other finding is allowed, and then they show none of it",
    )
    scheme: Scheme = Scheme.counterbalanced
    conditions: list[ConditionIn] = Field(
        default_factory=lambda: [
            ConditionIn(key="unassisted", kind=ConditionKind.unassisted, label="Unassisted"),
            ConditionIn(key="grades", kind=ConditionKind.prediction, label="Grades only"),
            ConditionIn(
                key="grades_heatmap",
                kind=ConditionKind.prediction_heatmap,
                method="integrated_gradients",
                label="Grades + heatmap",
            ),
        ],
        min_length=1,
        max_length=8,
    )
    questions: list[str] = Field(default_factory=lambda: list(_QUESTION_KEYS))
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="omit for a random seed (stored)")
    washout_days: float = Field(0.0, ge=0, le=365)
    allow_toggle: bool = False
    educational: bool = False

    @field_validator("questions")
    @classmethod
    def _known_questions(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(_QUESTION_KEYS))
        if unknown:
            raise ValueError(f"unknown question(s) {', '.join(unknown)}; the questions are {', '.join(_QUESTION_KEYS)}")
        return list(dict.fromkeys(value))

    @field_validator("finding")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())

    @model_validator(mode="after")
    def _finding_fits_task(self) -> ReaderStudyIn:
        if self.task == StudyTask.binary_finding and not self.finding:
            raise ValueError(
                "a binary-finding study names the finding it reads (finding, e.g. 'effusion'): its readers are "
                "asked whether it is present, and its AI arms show the model's probability of it"
            )
        if self.task != StudyTask.binary_finding and self.finding:
            raise ValueError(f"only a binary-finding study names a finding; a {self.task.value} study takes none")
        return self

    @model_validator(mode="after")
    def _conditions_fit(self) -> ReaderStudyIn:
        keys = [condition.key for condition in self.conditions]
        if len(set(keys)) != len(keys):
            raise ValueError("condition keys must be unique")
        if self.task == StudyTask.explanation_rating:
            if any(condition.kind not in RATEABLE_KINDS for condition in self.conditions):
                raise ValueError(
                    "an explanation-rating study shows an explanation in every condition (a heatmap, similar cases, "
                    "concepts or a justification)"
                )
            if not self.questions:
                raise ValueError("an explanation-rating study asks at least one question")
        if self.scheme == Scheme.sequential:
            if len(self.conditions) != 2 or self.conditions[0].kind != ConditionKind.unassisted:
                raise ValueError("a sequential study has two conditions: unassisted first, then an assisted one")
            if self.conditions[1].kind == ConditionKind.unassisted:
                raise ValueError("the second condition of a sequential study must show assistance")
        return self


class FindingChoice(BaseModel):
    """A finding the designer offers a binary-finding study: a label of the installed models that serve its
    images, with those models (their AI arms show its probability)."""

    finding: str
    models: list[str]


class CasesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    study_ids: list[DbId] = Field(min_length=1, max_length=5000)


class CandidateCase(BaseModel):
    """A stored study as the designer's case picker shows it: the image it would be read on, and whether the
    study's task reads it (and why not)."""

    study_id: int
    instance_id: int
    modality: str
    body_part: str
    description: str  # the series description, else the study's ("" where the caller sees no identity)
    kind: str  # vocabulary.image_kind: fundus | chest_radiograph | chest_ct | other
    thumbnail_url: str
    ai_state: str = ""
    accepted: bool
    reason: str = ""  # why the study's task does not read it


class CandidatesOut(BaseModel):
    candidates: list[CandidateCase]
    not_shown: int = Field(description="stored studies the study's task does not read (other modalities)")


class ReadersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    emails: list[Annotated[FreeText, Field(max_length=320)]] = Field(min_length=1, max_length=500)


class CaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    pseudonym: str
    study_id: int
    instance_id: int
    reference: dict[str, Any] | None


class ReaderOut(BaseModel):
    id: int
    pseudonym: str
    user_id: int
    email: str


class ReaderStudyOut(BaseModel):
    id: int
    name: str
    description: str
    task: str
    finding: str  # binary_finding: the finding read; "" for the other tasks (and binary-finding studies made before)
    scheme: str
    conditions: list[dict[str, Any]]
    questions: list[str]
    seed: int
    washout_days: float
    allow_toggle: bool
    educational: bool
    state: str
    created_at: datetime
    opened_at: datetime | None
    closed_at: datetime | None
    cases: int
    readers: int
    references: int
    assignments: int


class ReaderStudyDetail(ReaderStudyOut):
    case_list: list[CaseOut]
    reader_list: list[ReaderOut]


class ReferenceUploadOut(BaseModel):
    cases_added: int
    references_set: int


class AssignmentOut(BaseModel):
    """One entry of a reader's queue. The reference is only there in educational studies, after the read."""

    id: int
    order: int
    session: int
    step: int
    case: str
    condition: str
    condition_label: str
    state: str
    available: bool
    not_before: datetime | None
    completed_at: datetime | None
    url: str


class QueueOut(BaseModel):
    reader_study_id: int
    name: str
    task: str
    reader: str
    done: int
    total: int
    next_url: str | None
    waiting_reason: str
    assignments: list[AssignmentOut]


class StudyAssignmentContext(BaseModel):
    """What the reading room needs to know about the assignment it shows (sent to the browser)."""

    id: int
    reader_study_id: int
    reader_study_name: str
    task: str
    finding: str  # the binary-finding study's finding ("" where it names none)
    case: str
    condition: str
    condition_label: str
    kind: str
    allow_toggle: bool
    position: int
    total: int
    state: str
    queue_url: str
    questions: list[str]
    reference: dict[str, Any] | None
