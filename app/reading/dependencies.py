"""Get-or-404 of one of the caller's reads (another reader's read is not found either)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends

from app.auth.dependencies import CurrentUser
from app.db import DbSession
from app.reading import service as reading_service
from app.reading.schemas import ReadOut


def _my_read_or_404(client_id: UUID, user: CurrentUser, session: DbSession) -> ReadOut:
    return reading_service.get_read(session, reader_id=user.id, client_id=client_id)


MyReadOr404 = Annotated[ReadOut, Depends(_my_read_or_404)]
