"""What the health endpoints answer."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class Health(StrEnum):
    ok = "ok"
    down = "down"


class Liveness(BaseModel):
    status: Health = Health.ok


class ComponentHealth(BaseModel):
    status: Health
    seconds: float
    # Why it is down: the kind of error or the timeout, never a URL (the endpoints need no sign-in).
    error: str | None = None


class Readiness(BaseModel):
    status: Health
    components: dict[str, ComponentHealth]
