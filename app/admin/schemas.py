"""Pydantic shapes of the admin pages and API, kept apart from the ORM rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.auth import passwords
from app.jobs.schemas import TimingSummary
from app.tables import Role

MIN_PASSWORD = passwords.MIN_LENGTH


class ModelOut(BaseModel):
    """One installed model as its row and card describe it; `metrics` are the card's test metrics."""

    id: int
    name: str
    version: str
    task: str
    labels: list[str]
    modalities: list[str]
    is_active: bool
    serve_automatically: bool
    calibration_temperature: float
    uncertainty_threshold: float | None
    weights_sha256: str
    metrics_split: str
    metrics: dict[str, Any]
    training_data: str
    licence: str
    intended_use: str
    created_at: datetime
    timings: TimingSummary | None = None  # of its last jobs (app.jobs.timings)

    @property
    def weights_short(self) -> str:
        return self.weights_sha256[:12]


class ModelDetail(ModelOut):
    """The whole card, for the model's page."""

    card: dict[str, Any]


class UserRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    full_name: str
    role: Role
    specialty: str
    is_active: bool
    created_at: datetime


class NewUser(BaseModel):
    """The create-user form. The password is kept as typed (spaces count)."""

    email: str = Field(max_length=320)
    full_name: str = Field(default="", max_length=200)
    role: Role
    specialty: str = Field(default="", max_length=100)
    password: str = Field(max_length=passwords.MAX_LENGTH)

    @field_validator("email", "full_name", "specialty")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        local, _, domain = value.partition("@")
        if not local or not domain or " " in value:
            raise ValueError("enter an email address such as name@hospital.org")
        return value.lower()

    @field_validator("password")
    @classmethod
    def _password(cls, value: str, info: ValidationInfo) -> str:
        # The policy of every account (app/auth/passwords.py); the email is known here when it was valid.
        passwords.check_password(value, email=info.data.get("email", ""))
        return value


class AuditRow(BaseModel):
    id: int
    at: datetime
    action: str
    user_email: str | None
    object_type: str
    object_id: str
    detail: dict[str, Any]
    ip: str


class AuditPage(BaseModel):
    """One page of the audit log, newest first, with the filters that made it."""

    rows: list[AuditRow]
    page: int
    pages: int
    total: int
    action: str
    email: str
    actions: list[str]
