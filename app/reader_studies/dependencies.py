"""Who may do what in reader studies, and get-or-404 of a study or of the caller's assignment."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth.dependencies import CurrentUser, require_roles
from app.bounds import DbId
from app.db import DbSession
from app.reader_studies import assignments
from app.reader_studies import service as study_service
from app.tables import ReaderStudy, Role, StudyAssignment, User

# Coordinators (and admins) design studies, follow them and export them; anyone signed in may be a reader.
CanCoordinate = Annotated[User, Depends(require_roles(Role.admin, Role.coordinator))]


def _study_or_404(reader_study_id: DbId, _signed_in: CurrentUser, session: DbSession) -> ReaderStudy:
    """The study, looked up only for a signed-in caller: an anonymous 401 must not depend on whether it exists."""
    return study_service.get_study(session, reader_study_id=reader_study_id)


def _assignment_or_404(assignment_id: DbId, user: CurrentUser, session: DbSession) -> StudyAssignment:
    """The caller's assignment; another reader's is not found either."""
    return assignments.get_assignment(session, assignment_id=assignment_id, user_id=user.id)


ReaderStudyOr404 = Annotated[ReaderStudy, Depends(_study_or_404)]
MyAssignmentOr404 = Annotated[StudyAssignment, Depends(_assignment_or_404)]
