"""Pydantic shapes of the auth API, kept apart from the ORM rows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from app.tables import Role


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    full_name: str
    role: Role
    specialty: str
