"""Who may see what of a case: the one rule that routes, pages and services ask, none decides alone.

Identity (patient name, ID, birth date, accession number, UIDs, free-text descriptions) is a role decision:
admins and coordinators, who bring studies in and assemble reader studies, see it; every other role (readers)
sees a keyed pseudonym in place of the name and nothing else of it, on every page and API route, in clinical
reads as in reader studies. Inside a reader-study case even the study's id and date are left out: the case
pseudonym (C0001) is all that names it, so nothing links it back to a stored study.

A reader in a reader study sees of the AI only what the assignment's condition shows; the server enforces it.
A reader with a pending assignment on a case must not get that case's prediction or heatmaps from any
route (prediction API, heatmap images and arrays, study and reading pages, worklist labels) beyond what the
condition of that assignment shows. With several pending assignments on one case (a sequential or crossed
design), the strictest one rules: an unaided read is never spoiled by an aided one that comes later.

It sits below the viewer, the predictions, the reading room and the reader studies (docs/architecture.md):
they import it, it imports none of them. Each hides its own fields of what this module rules hidden.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.errors import Forbidden
from app.tables import (
    AssignmentState,
    ConditionKind,
    ReaderStudy,
    ReaderStudyState,
    Role,
    Study,
    StudyAssignment,
    StudyCase,
    StudyReader,
)

T = TypeVar("T")

# What each kind of condition shows beside the image: "prediction" (grades/probabilities, uncertainty, referral),
# "heatmap" (the one chosen method's map), "similar_cases" (the nearest confirmed reference cases), "concepts"
# (the concept evidence, told in words) and "justification" (the written sentences, which draw on all of these).
_SHOWS: dict[ConditionKind, frozenset[str]] = {
    ConditionKind.unassisted: frozenset(),
    ConditionKind.prediction: frozenset({"prediction"}),
    ConditionKind.prediction_heatmap: frozenset({"prediction", "heatmap"}),
    ConditionKind.prediction_similar: frozenset({"prediction", "similar_cases"}),
    ConditionKind.prediction_concepts: frozenset({"prediction", "concepts"}),
    ConditionKind.prediction_justification: frozenset({"prediction", "justification"}),
}


class Blinded(Forbidden):
    """The caller is reading this case in a reader study under a condition that hides this; says which study."""

    page = "reader_studies/refused.html"


@dataclass(frozen=True)
class Allowance:
    """The most a reader may see of one case while its reads are pending: `kind`, the condition's kind (or, where
    several pending conditions meet on one case, the kind of what all of them allow); `shows`, the pieces of
    assistance that reach the browser."""

    kind: ConditionKind
    method: str | None  # the one heatmap method shown, where a heatmap is
    study_name: str
    shows: frozenset[str] = frozenset()

    @classmethod
    def of(cls, kind: ConditionKind, method: str | None, study_name: str) -> Allowance:
        return cls(kind=kind, method=method, study_name=study_name, shows=_SHOWS[kind])

    @property
    def prediction(self) -> bool:
        return "prediction" in self.shows

    def heatmap(self, method: str) -> bool:
        return "heatmap" in self.shows and method == self.method

    @property
    def similar_cases(self) -> bool:
        return "similar_cases" in self.shows

    @property
    def concepts(self) -> bool:
        return "concepts" in self.shows

    @property
    def justification(self) -> bool:
        return "justification" in self.shows

    def meet(self, other: Allowance) -> Allowance:
        """What both allow: an unaided read is never spoiled by an aided one of the same case. Two heatmap
        conditions with different methods show neither map until both are read."""
        shows = self.shows & other.shows
        method = self.method if self.method == other.method else None
        if method is None:
            shows -= {"heatmap"}
        kinds = [kind for kind, pieces in _SHOWS.items() if pieces == shows]
        # A meet that is no condition's own kind (similar cases met with concepts) is named by the narrower kind.
        kind = kinds[0] if kinds else ConditionKind.prediction
        return Allowance(kind=kind, method=method if "heatmap" in shows else None, study_name=self.study_name,
                         shows=shows)


def condition_of(reader_study: ReaderStudy, key: str) -> dict:
    """The condition dict (key, kind, method, label) of this study named `key`."""
    for condition in reader_study.conditions:
        if condition["key"] == key:
            return condition
    raise KeyError(f"reader study {reader_study.id} has no condition {key!r}")


def _pending_rows(session: Session, *, user_id: int, study_ids: list[int] | None = None, instance_ids=None):
    query = (
        select(StudyCase.study_id, StudyCase.instance_id, StudyAssignment.condition, ReaderStudy)
        .join(StudyAssignment, StudyAssignment.case_id == StudyCase.id)
        .join(StudyReader, StudyAssignment.study_reader_id == StudyReader.id)
        .join(ReaderStudy, StudyAssignment.reader_study_id == ReaderStudy.id)
        .where(
            StudyReader.user_id == user_id,
            StudyAssignment.state == AssignmentState.pending,
            ReaderStudy.state == ReaderStudyState.open,
        )
    )
    if study_ids is not None:
        query = query.where(StudyCase.study_id.in_(study_ids))
    if instance_ids is not None:
        query = query.where(StudyCase.instance_id.in_(instance_ids))
    return session.execute(query).all()


def condition_allowance(reader_study: ReaderStudy, key: str) -> Allowance:
    """What the condition `key` of this study shows of the AI (an assignment's case is shown under it)."""
    condition = condition_of(reader_study, key)
    return Allowance.of(ConditionKind(condition["kind"]), condition.get("method"), reader_study.name)


def _strictest(rows) -> dict[int, Allowance]:
    """Per key (study or instance id): what all of the reader's pending assignments on it allow."""
    allowed: dict[int, Allowance] = {}
    for key, condition_key, reader_study in rows:
        candidate = condition_allowance(reader_study, condition_key)
        current = allowed.get(key)
        allowed[key] = candidate if current is None else current.meet(candidate)
    return allowed


def blinded_studies(session: Session, *, user_id: int, study_ids: list[int] | None = None) -> dict[int, Allowance]:
    """Studies (by id) on which this user has pending reader-study reads, with what they may see."""
    rows = _pending_rows(session, user_id=user_id, study_ids=study_ids)
    return _strictest([(study_id, condition, reader_study) for study_id, _, condition, reader_study in rows])


def instance_allowance(session: Session, *, user_id: int, instance_id: int) -> Allowance | None:
    """What this user may see of the AI on this image; None when no reader study restricts it."""
    rows = _pending_rows(session, user_id=user_id, instance_ids=[instance_id])
    return _strictest([(instance, condition, reader_study) for _, instance, condition, reader_study in rows]).get(
        instance_id
    )


def check_prediction(session: Session, *, user_id: int, instance_id: int) -> Allowance | None:
    """Blinded unless this user may see the model's prediction of this image; returns what they may see
    (None: no reader study restricts it)."""
    allowance = instance_allowance(session, user_id=user_id, instance_id=instance_id)
    if allowance is not None and not allowance.prediction:
        raise Blinded(
            f"this image is a case of reader study {allowance.study_name!r} that you have not read yet; "
            "the model's output is hidden until you have read it from your queue"
        )
    return allowance


def check_heatmap(session: Session, *, user_id: int, instance_id: int, method: str) -> None:
    """Blinded unless this user may see this heatmap method on this image."""
    allowance = instance_allowance(session, user_id=user_id, instance_id=instance_id)
    if allowance is not None and not allowance.heatmap(method):
        raise Blinded(
            f"this image is a case of reader study {allowance.study_name!r} that you have not read yet; "
            f"the {method} heatmap is not part of its condition"
        )


def check_study_page(session: Session, *, user_id: int, study_id: int) -> None:
    """Blinded while this user has pending reads of the study: the open pages would show other conditions."""
    allowance = blinded_studies(session, user_id=user_id, study_ids=[study_id]).get(study_id)
    if allowance is not None:
        raise Blinded(
            f"this study is a case of reader study {allowance.study_name!r}; read it from your reader-study queue"
        )


# Identity ---------------------------------------------------------------------------------------------------

IDENTITY_ROLES = frozenset({Role.admin, Role.coordinator})
"""The roles that see who a study is of: they bring studies in and pick the cases of reader studies."""


def sees_identity(role: Role) -> bool:
    """Whether this role sees identity; any role not named in IDENTITY_ROLES (readers) does not."""
    return role in IDENTITY_ROLES


def _keyed(purpose: str, value: str) -> str:
    # Keyed with the server's secret: without the key, a pseudonym cannot be recomputed from a guessed patient ID.
    key = get_settings().secret_key.encode()
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()[:8]


def patient_pseudonym(study: Study) -> str:
    """`P-` and 8 hex digits of HMAC-SHA256(secret key, "patient:" + patient ID): the same for every study of one
    patient, so a reader tells two studies of one patient apart without learning who. A study without a
    patient ID gets one of its own (keyed on its Study Instance UID)."""
    if study.patient_id:
        return "P-" + _keyed("patient", study.patient_id)
    return "P-" + _keyed("study", study.study_instance_uid)


@dataclass(frozen=True)
class IdentityView:
    """One study's identity as one caller may see it; None where a field is hidden."""

    shown: bool  # the stored identity (True), or a pseudonym in place of the name (False)
    study_id: int | None  # None inside a reader-study case: no id that links the case back to the study
    patient: str  # the patient's name as stored, or their pseudonym; "" inside a case (its pseudonym names it)
    patient_id: str | None
    patient_birth_date: str | None  # DICOM DA, as stored
    accession_number: str | None
    study_instance_uid: str | None
    study_date: str | None  # DICOM DA, as stored
    description: str  # free text: "" where identity is hidden


@dataclass(frozen=True)
class IdentityRule:
    """What of identity one caller sees: `shown` for identity as stored, `linked` for the ids and dates that tie
    what they see to a stored study (False only inside a reader-study case)."""

    shown: bool
    linked: bool = True

    def study(self, study: Study) -> IdentityView:
        """The study's identity under this rule."""
        if self.shown:
            return IdentityView(
                shown=True,
                study_id=study.id,
                patient=study.patient_name,
                patient_id=study.patient_id,
                patient_birth_date=study.patient_birth_date,
                accession_number=study.accession_number,
                study_instance_uid=study.study_instance_uid,
                study_date=study.study_date,
                description=study.description,
            )
        return IdentityView(
            shown=False,
            study_id=self.link(study.id),
            patient=patient_pseudonym(study) if self.linked else "",
            patient_id=None,
            patient_birth_date=None,
            accession_number=None,
            study_instance_uid=None,
            # Dates stay, as under DICOM PS3.15's Retain Longitudinal Temporal Information option: a reader
            # compares with priors; without name, ID and birth date a date does not say who.
            study_date=study.study_date if self.linked else None,
            description="",
        )

    def uid(self, value: str) -> str | None:
        """A DICOM UID (Study, Series, SOP Instance), or None where identity is hidden."""
        return value if self.shown else None

    def free_text(self, value: str) -> str:
        """A free-text description (study, series): DICOM PS3.15's basic profile removes them, since they may
        name the patient or staff; "" where identity is hidden."""
        return value if self.shown else ""

    def file_name(self, value: str) -> str:
        """An uploaded file's own name ("fundus.png"): free text chosen by whoever saved the file, which may name
        the patient ("smith_john_left.png"), so shown only where identity is; "" elsewhere."""
        return value if self.shown else ""

    def link(self, value: T) -> T | None:
        """A value that ties what the caller sees to a stored study (its id, its upload time), or None inside a
        reader-study case."""
        return value if self.linked else None


def identity_rule(role: Role) -> IdentityRule:
    """What of identity a caller of this role sees, wherever they read outside a reader-study case."""
    return IdentityRule(shown=sees_identity(role))


def identity_for(role: Role, study: Study) -> IdentityView:
    """The study's identity as a caller of this role sees it (outside a reader-study case)."""
    return identity_rule(role).study(study)


CASE_IDENTITY = IdentityRule(shown=False, linked=False)
"""A reader-study case as its reader sees it, whatever their role: only its pseudonym, nothing that links back."""
