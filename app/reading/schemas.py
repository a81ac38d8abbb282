"""Pydantic shapes of reads, explanation ratings and assistance events, kept apart from the ORM rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


# Readers' own evidence (app/statistics/evidence.py): where on the image the grade came from, as boxes and brush
# strokes in normalised image coordinates (x = column / width, y = row / height, 0..1 from the top left), so that
# a mark means the same place at any display size. Bounded so that a draft stays a small request.
MAX_EVIDENCE_MARKS = 200
MAX_STROKE_POINTS = 2000
MAX_EVIDENCE_POINTS = 20_000
Normalised = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
BrushRadius = Annotated[float, Field(gt=0, le=0.5, allow_inf_nan=False)]


class BoxMark(BaseModel):
    """A rectangle the reader drew: [x0, y0, x1, y1], its left, top, right and bottom edges (x0 < x1, y0 < y1)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["box"]
    instance_id: DbId = Field(description="the image of the read the mark is on")
    frame: int = Field(0, ge=0, le=100_000, description="the frame of a multi-frame image (0 otherwise)")
    box: tuple[Normalised, Normalised, Normalised, Normalised]

    @field_validator("box")
    @classmethod
    def _ordered(cls, value: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = value
        if not (x0 < x1 and y0 < y1):
            raise ValueError("a box is [x0, y0, x1, y1] with x0 < x1 and y0 < y1 (left, top, right, bottom)")
        return value


class StrokeMark(BaseModel):
    """A brush stroke (`brush` marks, `erase` unmarks what was marked before it): the polyline of its points, and
    the brush's half width along x and along y, each in its axis's normalised units (a round brush of r pixels on a
    W x H image: [r / W, r / H])."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["brush", "erase"]
    instance_id: DbId = Field(description="the image of the read the mark is on")
    frame: int = Field(0, ge=0, le=100_000, description="the frame of a multi-frame image (0 otherwise)")
    radius: tuple[BrushRadius, BrushRadius]
    points: list[tuple[Normalised, Normalised]] = Field(min_length=1, max_length=MAX_STROKE_POINTS)


EvidenceMark = Annotated[BoxMark | StrokeMark, Field(discriminator="kind")]


def _bounded_marks(marks: list[BoxMark | StrokeMark] | None) -> list[BoxMark | StrokeMark] | None:
    points = sum(len(mark.points) for mark in marks or () if isinstance(mark, StrokeMark))
    if points > MAX_EVIDENCE_POINTS:
        raise ValueError(f"the marks hold {points} points; a read holds at most {MAX_EVIDENCE_POINTS}")
    return marks


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
    # The reader's evidence marks, in drawing order (an erase applies to what came before it); None leaves the
    # stored marks as they are (a page that does not mark), [] clears them.
    evidence_marks: list[EvidenceMark] | None = Field(None, max_length=MAX_EVIDENCE_MARKS)

    _marks_bounded = field_validator("evidence_marks")(_bounded_marks)


class AiSnapshot(BaseModel):
    """What of the AI a read's page carried at submit, from the server's own rows (never the client's word): the
    condition of its assignment, the newest prediction of its image and the one heatmap the condition shows (or
    that the reader picked, outside a study). All None where the page carried no AI. Stored as a copy on the read."""

    condition: str | None = None  # the assignment's condition key; None for a clinical read
    condition_kind: str | None = None  # app.tables.ConditionKind; None for a clinical read
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
    # The explanations beyond heatmaps the page carried (None where it carried none): the reference cases shown,
    # how many of them carried the predicted label, the concept evidence in words and the justification's sentences.
    similar_case_ids: list[str] | None = None
    similar_agreeing: int | None = None
    concepts: str | None = None
    justification: list[str] | None = None


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
    evidence_marks: list[EvidenceMark] = []  # the reader's own evidence, as stored (ReadIn.evidence_marks)
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None


# The explanations of a prediction that are not maps, as a rating names them.
BEYOND_HEATMAPS = ("similar_cases", "concepts", "justification")


class RatingIn(BaseModel):
    """Likert answers (1-5) about one explanation: a heatmap (`heatmap_id`), or a prediction's explanation that is
    not a map (`prediction_id` and `explanation`); `client_id` makes a resend harmless."""

    model_config = ConfigDict(extra="forbid")

    client_id: UUID
    heatmap_id: DbId | None = None
    prediction_id: DbId | None = None
    explanation: Literal["similar_cases", "concepts", "justification"] | None = None
    answers: dict[str, Likert] = Field(min_length=1)
    comment: FreeText = Field("", max_length=4000)

    @model_validator(mode="after")
    def _one_explanation(self) -> RatingIn:
        if self.heatmap_id is not None and (self.prediction_id is not None or self.explanation is not None):
            raise ValueError("rate either a heatmap (heatmap_id) or a prediction's explanation, not both")
        if self.heatmap_id is None and (self.prediction_id is None or self.explanation is None):
            raise ValueError(
                "name the explanation rated: heatmap_id, or prediction_id with explanation "
                f"({', '.join(BEYOND_HEATMAPS)})"
            )
        return self

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
    heatmap_id: int | None
    prediction_id: int | None = None
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


class SimilarCase(BaseModel):
    """One confirmed reference case near this image in the model's embedding (models/similar.py)."""

    rank: int  # 1: the most similar
    case_id: str  # the reference dataset's own id of the case ("retinamnist/train/0042"), never a stored study
    labels: list[str]  # its confirmed grade, or its confirmed findings
    similarity: float  # cosine similarity of the two embeddings, -1..1
    agrees: bool  # it carries the label the model predicts for this image
    thumbnail_url: str


class SimilarCases(BaseModel):
    """The k nearest confirmed cases of the model's reference library, and what the card measured of them."""

    cases: list[SimilarCase]
    agreeing: int  # how many carry the predicted label
    library: str  # the library's size and source, in words
    precision: float | None = None  # the card's precision@k of the label on the test split
    prior: float | None = None  # the precision a random reference case would have


class ConceptEvidence(BaseModel):
    """How much one learnt concept drives this prediction (TCAV's directional derivative, models/concepts.py)."""

    concept: str
    sensitivity: float
    strength: str  # strong | moderate | weak | none: against the training images of the predicted class
    accuracy: float | None = None  # how well the concept vector told held-out concept examples from random ones
    tcav_score: float | None = None  # share of the class's training images whose logit rises along the concept
    tcav_p: float | None = None  # its two-sided t-test against random concepts, Bonferroni-corrected
    validated: bool = True  # held-out accuracy above chance (p < 0.05); an unvalidated concept is never told


class ConceptsShown(BaseModel):
    items: list[ConceptEvidence]
    headline: str  # "haemorrhages (strong) and hard exudates (weak)"; "" when no concept stands out
    page_url: str  # the model's global concept page


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
    # Explanations beyond heatmaps (None: the model has none, or the reader-study condition does not show them).
    similar_cases: SimilarCases | None = None
    concepts: ConceptsShown | None = None
    justification: list[str] | None = None  # the sentences of app/reading/justification.py


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
