"""Pydantic shapes of the worklist and the study page, kept apart from the ORM rows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class WorklistRow(BaseModel):
    """One study on the worklist with the state of its AI jobs, its identity as app/visibility.py lets the
    caller see it."""

    id: int | None  # None only in a reader-study case: no id that links the case back to its study
    identity_shown: bool  # False: `patient_name` is a pseudonym (P-...) and `patient_id` is None
    patient_name: str  # the name as stored, or the patient's pseudonym; "" in a reader-study case
    patient_id: str | None
    study_date: str | None
    description: str  # free text: "" where identity is hidden
    modality: str
    instances: int
    ai_state: str  # AiState: no_model | queued | running | done | failed
    ai_progress: int
    ai_error: str
    ai_label: str | None
    ai_referral: bool = False  # some prediction of the study is above its model's uncertainty threshold
    uploaded_at: datetime | None  # None only in a reader-study case, like `id`
    # A study without a patient name (PNG/JPEG uploads carry none): what tells it apart on the worklist, from
    # its upload time and number of images ("3 images uploaded 10:04:05"); None where it has a name.
    unnamed_label: str | None = None
    # A queued study: the place of its first job in its queue (1: next) and the seconds until a worker may take
    # it at the queue's recent pace (None before any job of the queue finished); both None in any other state.
    queue_position: int | None = None
    queue_expected_start_s: float | None = None


class Worklist(BaseModel):
    studies: list[WorklistRow]
    active: bool  # True while any study is queued or running: the page keeps polling


class LabelProbability(BaseModel):
    label: str
    probability: float


class HeatmapView(BaseModel):
    id: int
    method: str
    target_class: int
    target_label: str


class PredictionView(BaseModel):
    id: int
    label: str
    probabilities: list[LabelProbability]
    model_name: str
    model_version: str
    predictive_entropy: float | None
    referral: bool
    heatmaps: list[HeatmapView]


class InstanceView(BaseModel):
    id: int
    series_description: str
    source_filename: str  # the uploaded file's own name; "" where identity is hidden (app/visibility.py)
    modality: str
    number: int | None
    frames: int
    rows: int
    columns: int
    prediction: PredictionView | None


class JobView(BaseModel):
    id: int
    instance_id: int | None
    model_name: str
    model_version: str
    state: str
    progress: int
    error: str


class ComparisonImage(BaseModel):
    """What a viewport (app/static/viewer.js) needs to open an image."""

    id: int
    modality: str
    rows: int
    columns: int
    frames: int
    colour: bool


class PriorStudy(BaseModel):
    """Another study of the same patient, as the caller may see it."""

    id: int
    study_date: str | None  # YYYY-MM-DD
    label: str  # what its viewport says: "Prior 2024-05-02", "Later 2027-01-03" (dated after), "Undated"
    modality: str
    description: str  # free text: "" where identity is hidden
    instances: int
    first_image: ComparisonImage | None  # what "Compare" opens; None for a study without images


class Priors(BaseModel):
    """A study's priors, newest first, with what the comparison's left viewport opens of the study itself."""

    study_id: int
    label: str  # "Current 2026-12-01"
    first_image: ComparisonImage | None
    priors: list[PriorStudy]


class StudyView(BaseModel):
    """Everything the study page shows."""

    summary: WorklistRow
    patient_birth_date: str | None  # these three: None where identity is hidden
    accession_number: str | None
    study_instance_uid: str | None
    instances: list[InstanceView]
    jobs: list[JobView]
    priors: Priors
