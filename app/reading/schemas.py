"""Pydantic shapes of reads, explanation ratings and assistance events, kept apart from the ORM rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.bounds import DbId, FreeText, JsonDetail
from app.reading import vocabulary
from app.viewer.schemas import LabelProbability, WorklistRow

Likert = Annotated[int, Field(ge=1, le=5)]
AssistanceEventName = Literal[vocabulary.ASSISTANCE_EVENTS]  # type: ignore[valid-type]
_FINDING_KEYS = tuple(key for key, _ in vocabulary.FINDINGS)
_QUESTION_KEYS = tuple(key for key, _ in vocabulary.RATING_QUESTIONS)


class ReadAnswers(BaseModel):
    """The answers of either form; a draft may leave any of them empty."""

    model_config = ConfigDict(extra="forbid")

    dr_grade: int | None = Field(None, ge=0, le=4, description="ICDR grade: 0 none ... 4 PDR")
    dme: bool | None = Field(None, description="referable diabetic macular edema")
    finding: str | None = Field(None, max_length=64)
    confidence: Likert | None = None
    note: FreeText | None = Field(None, max_length=2000)

    @field_validator("finding")
    @classmethod
    def _known_finding(cls, value: str | None) -> str | None:
        if value is not None and value not in _FINDING_KEYS:
            raise ValueError(f"unknown finding {value!r}; the findings are {', '.join(_FINDING_KEYS)}")
        return value


class AssistanceState(BaseModel):
    """What assistance was on screen (at submit, or with an event)."""

    model_config = ConfigDict(extra="forbid")

    visible: bool
    method: FreeText | None = Field(None, max_length=64)
    opacity: float | None = Field(None, ge=0, le=1)
    colormap: FreeText | None = Field(None, max_length=32)
    threshold: float | None = Field(None, ge=0, le=1)
    grid: bool = False


class ReadIn(BaseModel):
    """A draft to save or a read to submit."""

    model_config = ConfigDict(extra="forbid")

    # A clinical read names its study; a reader-study read may leave it out (its assignment names the case).
    study_id: DbId | None = None
    instance_id: DbId | None = None
    answers: ReadAnswers = Field(default_factory=ReadAnswers)
    time_spent_seconds: float | None = Field(None, ge=0, le=7 * 24 * 3600)
    assistance: AssistanceState | None = None
    # The page numbers its drafts (milliseconds since the epoch, raised past the last one sent): a draft that
    # arrives after a newer one of the same read is not stored. None: stored whatever came before.
    client_seq: int | None = Field(None, ge=0, le=2**53)


class AiSnapshot(BaseModel):
    """What of the AI a read's page carried at submit, from the server's own rows (never the client's word): the
    condition of its assignment, the newest prediction of its image and the one heatmap the condition shows (or
    that the reader picked, outside a study). All None where the page carried no AI. Stored as a copy on the read."""

    condition: str | None = None  # the assignment's condition key; None for a clinical read
    condition_kind: str | None = None  # unassisted | prediction | prediction_heatmap; None for a clinical read
    prediction_id: int | None = None
    model: str | None = None
    model_version: str | None = None
    label: str | None = None
    label_index: int | None = None
    probability: float | None = None  # of the predicted label, as the assistance panel showed it
    entropy: float | None = None  # predictive entropy
    referral: bool | None = None
    method: str | None = None  # the heatmap method on the page
    heatmap_id: int | None = None
    # A binary-finding study's finding, and where the model reports it, its label's index and probability: what
    # the assistance panel showed as the AI's answer to the study's question. None where there is none.
    finding: str | None = None
    finding_label_index: int | None = None
    finding_probability: float | None = None


class ReadOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    client_id: str
    study_id: int | None  # None for a reader-study read: its reader knows the case by its pseudonym only
    instance_id: int | None
    assignment_id: int | None
    form: str
    state: str
    answers: dict[str, Any]
    dr_grade: int | None
    dme: bool | None
    confidence: int | None
    finding: str | None
    time_spent_seconds: float | None
    assisted: bool
    assistance: dict[str, Any]
    ai_shown: bool | None = None  # the AI on screen at submit, as the server recorded it; None on a draft
    client_seq: int | None = None  # the page's number of the newest draft stored
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None


class RatingIn(BaseModel):
    """Likert answers (1-5) about one heatmap; `client_id` makes a resend harmless."""

    model_config = ConfigDict(extra="forbid")

    client_id: UUID
    heatmap_id: DbId
    answers: dict[str, Likert] = Field(min_length=1)
    comment: FreeText = Field("", max_length=4000)

    @field_validator("answers")
    @classmethod
    def _known_questions(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(_QUESTION_KEYS))
        if unknown:
            raise ValueError(f"unknown question(s) {', '.join(unknown)}; the questions are {', '.join(_QUESTION_KEYS)}")
        return value


class RatingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    client_id: str
    heatmap_id: int
    method: str
    answers: dict[str, int]
    comment: str
    created_at: datetime


class AssistanceEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: AssistanceEventName
    study_id: DbId | None = None  # required outside reader studies; an assignment's events are about its case
    instance_id: DbId | None = None
    read_client_id: UUID | None = None
    detail: JsonDetail = Field(default_factory=dict)
    client_at: datetime | None = None


class AssistanceEventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[AssistanceEventIn] = Field(min_length=1, max_length=200)


class AssistanceEventsOut(BaseModel):
    stored: int


class Choice(BaseModel):
    value: str | int
    label: str
    hint: str = ""


class FormConfig(BaseModel):
    """What the grading and rating forms ask (from app/reading/vocabulary.py)."""

    kind: str  # dr | finding | generic | presence | rating (vocabulary.FORM_FIELDS)
    question: str = ""  # the presence form's question: "Effusion present?"
    grades: list[Choice]
    findings: list[Choice]
    confidence: list[Choice]
    questions: list[Choice]
    likert: list[Choice]


class HeatmapInfo(BaseModel):
    id: int
    method: str
    method_label: str
    target_class: int
    target_label: str
    shape: list[int]
    value_min: float
    value_max: float
    signed: bool
    rated: bool
    rank: int | None = None  # the method's place in the model's faithfulness ranking (1: best), if measured
    # This map's own faithfulness scores (models.explain.metrics.cheap_scores); {} until the worker has
    # computed them, which it may do after the map itself is stored.
    scores: dict[str, float] = {}


class Uncertainty(BaseModel):
    level: str  # uncertain (referred) | not_referred | unknown
    text: str
    entropy: float | None
    threshold: float | None


class FindingProbability(BaseModel):
    """A binary-finding study's finding as the model reports it: the calibrated probability that it is present."""

    finding: str  # the study's finding ("effusion")
    words: str  # as the panel names it ("Effusion")
    label: str  # the model's label of it
    label_index: int
    probability: float


class Assistance(BaseModel):
    """The model's output for one image, as the assistance panel shows it."""

    prediction_id: int
    label: str
    label_index: int
    probabilities: list[LabelProbability]
    model_name: str
    model_version: str
    model_summary: str = ""  # the card's sentence for clinicians: what it was trained on, how well it does
    multilabel: bool = False  # one presence probability per finding (they do not sum to 1); label: the highest
    referral: bool
    uncertainty: Uncertainty
    heatmaps: list[HeatmapInfo]
    # In a binary-finding study, its finding's probability (the panel's answer to the study's question); None
    # outside one, or where the model does not report the finding.
    study_finding: FindingProbability | None = None


class ReadingInstance(BaseModel):
    id: int
    modality: str
    description: str
    number: int | None
    frames: int
    rows: int
    columns: int
    photometric: str
    colour: bool
    assistance: Assistance | None
    refusal: str | None = None  # why the model said nothing: the image is outside its domain


class ReadingView(BaseModel):
    """Everything the reading room page needs; `assignment` is set when it shows a reader-study read."""

    study: WorklistRow
    instances: list[ReadingInstance]
    form: FormConfig
    read: ReadOut | None
    assignment: dict[str, Any] | None = None  # app.reader_studies.schemas.StudyAssignmentContext
