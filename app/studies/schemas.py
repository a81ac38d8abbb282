"""Studies API shapes: what an upload returns, a study's detail and the list of studies. No patient fields;
UIDs and descriptions only where app/visibility.py shows the caller identity (None and "" otherwise)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class InstanceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sop_instance_uid: str | None
    modality: str
    source_format: str
    rows: int
    columns: int
    frames: int
    photometric: str
    duplicate: bool = False


class StudyFields(BaseModel):
    """The fields of a study row that the API shows (no patient fields)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    study_instance_uid: str | None
    modality: str
    description: str
    study_date: str
    created_at: datetime


class StudyOut(StudyFields):
    """A study with instances (of this upload, for POST; all of them, for GET) and job ids."""

    instances: list[InstanceOut]
    job_ids: list[int]


class UploadOut(StudyOut):
    """The first study of the upload, plus every study the upload touched (itself included)."""

    studies: list[StudyOut]


class StudySummary(StudyFields):
    instance_count: int
