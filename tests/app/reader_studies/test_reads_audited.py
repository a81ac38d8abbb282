"""A reader study's opening and each submitted read of an assignment are audited with the client address."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from app.tables import AuditEvent
from tests.app.reader_studies.conftest import next_assignment, open_study

DR = {"dr_grade": 0, "dme": False, "confidence": 5}


def test_opening_and_assignment_reads_are_audited(app_client, coordinator, make_cases, readers, db_session):
    cases = make_cases(1)
    (user, headers), = readers(1)
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user],
                       conditions=[{"key": "unassisted", "kind": "unassisted"}])
    opened = db_session.scalar(select(AuditEvent).where(
        AuditEvent.action == "reader_study_opened", AuditEvent.object_id == str(study["id"])))
    assert opened is not None and opened.ip == "testclient"

    item = next_assignment(app_client, headers, study["id"])
    assert item is not None
    url = f"/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit"
    read = app_client.post(url, json={"answers": DR}, headers=headers)  # no study id: the assignment names it
    assert read.status_code == 201, read.text
    assert read.json()["study_id"] is None and read.json()["assignment_id"] == item["id"]
    (event,) = db_session.scalars(select(AuditEvent).where(
        AuditEvent.action == "read_submitted", AuditEvent.user_id == user.id)).all()
    assert (event.object_type, event.object_id, event.ip) == ("read", str(read.json()["id"]), "testclient")
    assert event.detail == {"study_id": cases[0].study_id, "assignment_id": item["id"], "form": "dr"}
