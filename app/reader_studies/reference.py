"""The reference standard of a reader study, uploaded as CSV: checked whole, then applied and audited.

Changing the reference of a study that is open or closed changes how reads already made are scored (a case
graded 2 by the readers turns from right to wrong), so it is applied only when the upload confirms it: without
`confirm`, Conflict names each case that would change, old -> new, and nothing changes. Every change, in a
draft too, is audited with the old and new value of each case.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.bounds import parse_db_id
from app.reader_studies.service import MAX_ERRORS_SHOWN, Conflict, Invalid, add_cases
from app.reading import vocabulary
from app.tables import ReaderStudy, ReaderStudyState, Study, StudyTask

_FINDING_KEYS = tuple(key for key, _ in vocabulary.FINDINGS)
_TRUE, _FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n"}
AUDIT_ACTION = "reference_changed"


@dataclass(frozen=True)
class ReferenceChange:
    """One case whose reference standard an upload changes (None: no reference)."""

    study_id: int
    old: dict[str, Any] | None
    new: dict[str, Any] | None


class UnconfirmedReferenceChange(Conflict):
    """409: the upload would change the reference of reads already made, and did not say confirm."""


def upload_reference(
    session: Session, *, study: ReaderStudy, text: str, user_id: int | None, ip: str = "", confirm: bool = False
) -> tuple[int, int]:
    """Set the reference standard from CSV text; a draft study also gains the cases it did not have.

    Every row is checked before anything changes: one bad row rejects the file (Invalid lists the rows). An
    open or closed study's references change only with `confirm` (UnconfirmedReferenceChange lists them).
    Returns (cases added, references set).
    """
    parsed = _parse(session, study=study, text=text)
    changes = _changes(study, parsed)
    if changes and study.state != ReaderStudyState.draft and not confirm:
        raise UnconfirmedReferenceChange(_unconfirmed_message(study, changes))
    added = _apply(session, study=study, parsed=parsed)
    if changes:
        _audit(session, study=study, changes=changes, user_id=user_id, ip=ip, confirmed=confirm)
    return added, sum(1 for reference in parsed.values() if reference)


def _apply(session: Session, *, study: ReaderStudy, parsed: dict[int, dict[str, Any]]) -> int:
    """Add the studies that are not cases yet (a draft's), then set every row's reference; returns the added."""
    present = {case.study_id for case in study.cases}
    new = [study_id for study_id in parsed if study_id not in present]
    added = add_cases(session, study=study, study_ids=new) if new else 0
    cases = {case.study_id: case for case in study.cases}
    for study_id, reference in parsed.items():
        cases[study_id].reference = reference or None
    session.flush()
    return added


def _parse(session: Session, *, study: ReaderStudy, text: str) -> dict[int, dict[str, Any]]:
    """Each row's study id and reference; Invalid naming the bad rows (at most MAX_ERRORS_SHOWN of them)."""
    rows = _csv_rows(text, task=study.task)
    by_uid, by_id = _resolve_studies(session, rows)
    present = {case.study_id for case in study.cases}
    errors: list[str] = []
    parsed: dict[int, dict[str, Any]] = {}
    for line, row in enumerate(rows, start=2):
        try:
            study_id, named = _study_of_row(row, by_uid, by_id)
            if study_id in parsed:
                raise ValueError(f"study {named} appears twice")
            if study_id not in present and study.state != ReaderStudyState.draft:
                raise ValueError(f"study {named} is not a case, and the study is {study.state.value}")
            parsed[study_id] = _reference_of(study, row)
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
    if errors:
        more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise Invalid("the reference CSV was not applied: " + "; ".join(errors[:MAX_ERRORS_SHOWN]) + more)
    return parsed


def _csv_rows(text: str, *, task: StudyTask) -> list[dict[str, str]]:
    if "\x00" in text:
        raise Invalid("the reference CSV may not contain NUL characters")
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    columns = {name.strip() for name in reader.fieldnames or []}
    if not columns & {"study_instance_uid", "study_id"}:
        raise Invalid("the CSV needs a header with a study_instance_uid or a study_id column")
    needed = {StudyTask.dr_grading: "dr_grade", StudyTask.binary_finding: "finding"}.get(task)
    if needed and needed not in columns:
        raise Invalid(f"a {task.value} study needs a {needed} column")
    rows = [{(key or "").strip(): (value or "") for key, value in row.items()} for row in reader]
    if not rows:
        raise Invalid("the CSV has no rows")
    return rows


def _resolve_studies(session: Session, rows: list[dict[str, str]]) -> tuple[dict[str, int], set[int]]:
    """The stored studies the rows name: by StudyInstanceUID, and the ids that exist."""
    uids = {row["study_instance_uid"].strip() for row in rows if row.get("study_instance_uid", "").strip()}
    ids = {study_id for row in rows if (study_id := parse_db_id(row.get("study_id", ""))) is not None}
    found = session.execute(select(Study.study_instance_uid, Study.id).where(Study.study_instance_uid.in_(uids)))
    by_uid = {uid: study_id for uid, study_id in found}
    return by_uid, set(session.scalars(select(Study.id).where(Study.id.in_(ids))))


def _study_of_row(row: dict[str, str], by_uid: dict[str, int], by_id: set[int]) -> tuple[int, str]:
    """The stored study a row names (its UID first, else its id) and how the row named it; ValueError if none."""
    uid, raw_id = row.get("study_instance_uid", "").strip(), row.get("study_id", "").strip()
    study_id = by_uid.get(uid) if uid else parse_db_id(raw_id)
    if study_id is None or (not uid and study_id not in by_id):
        raise ValueError(f"no stored study {uid or raw_id or '(empty)'}")
    return study_id, uid or raw_id


def _parse_flag(text: str) -> bool | None:
    value = text.strip().lower()
    if value == "":
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a yes/no value (use 1/0, true/false or yes/no)")


def _presence(text: str, finding: str) -> str:
    """`present` or `absent` from present/absent, 1/0, yes/no or true/false; ValueError naming the finding."""
    value = text.strip().lower()
    if value in (vocabulary.PRESENT, vocabulary.ABSENT):
        return value
    try:
        flag = _parse_flag(value)
    except ValueError:
        flag = None
    if flag is None:
        raise ValueError(f"finding says whether {finding} is present: present/absent, 1/0 or yes/no, not {text!r}")
    return vocabulary.PRESENT if flag else vocabulary.ABSENT


def _reference_of(study: ReaderStudy, row: dict[str, str]) -> dict[str, Any]:
    """The reference standard of one CSV row for this study's task; ValueError with a reason."""
    task = study.task
    if task == StudyTask.binary_finding and study.finding:
        return {"finding": _presence(row.get("finding") or "", study.finding)}
    if task == StudyTask.dr_grading:
        text = (row.get("dr_grade") or "").strip()
        if not (text.isascii() and text.isdigit() and int(text) <= 4):
            raise ValueError(f"dr_grade must be an ICDR grade 0-4, not {text!r}")
        reference: dict[str, Any] = {"dr_grade": int(text)}
        dme = _parse_flag(row.get("dme") or "")
        if dme is not None:
            reference["dme"] = dme
        return reference
    if task == StudyTask.binary_finding:
        finding = (row.get("finding") or "").strip()
        if finding not in _FINDING_KEYS:
            raise ValueError(f"finding must be one of {', '.join(_FINDING_KEYS)}, not {finding!r}")
        return {"finding": finding}
    return {}


def _changes(study: ReaderStudy, parsed: dict[int, dict[str, Any]]) -> list[ReferenceChange]:
    """The cases (present or to be added) whose stored reference differs from the uploaded one."""
    stored = {case.study_id: case.reference for case in study.cases}
    return [
        ReferenceChange(study_id, stored.get(study_id), reference or None)
        for study_id, reference in parsed.items()
        if stored.get(study_id) != (reference or None)
    ]


def _shown(reference: dict[str, Any] | None) -> str:
    return " ".join(f"{key}={value}" for key, value in reference.items()) if reference else "none"


def _unconfirmed_message(study: ReaderStudy, changes: list[ReferenceChange]) -> str:
    pseudonyms = {case.study_id: case.pseudonym for case in study.cases}
    listed = "; ".join(
        f"{pseudonyms[change.study_id]}: {_shown(change.old)} -> {_shown(change.new)}"
        for change in changes[:MAX_ERRORS_SHOWN]
    )
    more = f" (and {len(changes) - MAX_ERRORS_SHOWN} more)" if len(changes) > MAX_ERRORS_SHOWN else ""
    return (
        f"reader study {study.name!r} is {study.state.value}: the upload would change the reference standard of "
        f"{len(changes)} case(s) and so the scores of reads already made: {listed}{more}. Nothing was changed; "
        "send it again with confirm=true to apply it"
    )


def _audit(
    session: Session, *, study: ReaderStudy, changes: list[ReferenceChange], user_id: int | None, ip: str,
    confirmed: bool,
) -> None:
    pseudonyms = {case.study_id: case.pseudonym for case in study.cases}
    cases = [
        {"case": pseudonyms[change.study_id], "study_id": change.study_id, "old": change.old, "new": change.new}
        for change in changes
    ]
    audit_service.record(
        session, action=AUDIT_ACTION, user_id=user_id, object_type="reader_study", object_id=study.id, ip=ip,
        detail={"state": study.state.value, "confirmed": confirmed, "changes": cases},
    )
