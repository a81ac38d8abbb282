"""The identity rule of app/visibility.py: admins and coordinators see who a study is of, readers see a keyed
pseudonym and nothing else of it, on the service and on every route that shows a study."""

from __future__ import annotations

import re
import secrets
from types import SimpleNamespace

import pytest

from app import visibility
from app.tables import Role, Study
from tests.app.viewer import factories

SEES = {"admin": True, "coordinator": True, "reader": False}


def _study(**fields: object) -> Study:
    values: dict[str, object] = {
        "id": 7,
        "study_instance_uid": f"2.25.{secrets.randbits(96)}",
        "patient_name": "Doe^Jane",
        "patient_id": "MRN-0042",
        "patient_birth_date": "19700102",
        "accession_number": "ACC-9",
        "study_date": "20240131",
        "description": "Chest PA for Dr Who",
    }
    return Study(**{**values, **fields})


@pytest.mark.parametrize("role", list(Role))
def test_identity_is_decided_by_role(role: Role):
    study = _study()
    seen = visibility.identity_for(role, study)
    assert seen.shown is SEES[role.value] is visibility.sees_identity(role)
    assert seen.study_id == 7 and seen.study_date == "20240131"  # not identity: kept for every role
    if seen.shown:
        assert (seen.patient, seen.patient_id, seen.patient_birth_date, seen.accession_number) == (
            "Doe^Jane", "MRN-0042", "19700102", "ACC-9")
        assert seen.study_instance_uid == study.study_instance_uid and seen.description == study.description
    else:
        assert seen.patient == visibility.patient_pseudonym(study)
        assert (seen.patient_id, seen.patient_birth_date, seen.accession_number, seen.study_instance_uid) == (
            None, None, None, None)
        assert seen.description == ""
    rule = visibility.identity_rule(role)
    assert rule.uid("1.2.3") == ("1.2.3" if seen.shown else None)
    assert rule.free_text("Series 1") == ("Series 1" if seen.shown else "")


def test_pseudonym_is_stable_per_patient_and_keyed(monkeypatch):
    one, same_patient, other = _study(), _study(id=8), _study(id=9, patient_id="MRN-0043")
    pseudonym = visibility.patient_pseudonym(one)
    assert re.fullmatch(r"P-[0-9a-f]{8}", pseudonym)
    assert visibility.patient_pseudonym(same_patient) == pseudonym != visibility.patient_pseudonym(other)
    assert "0042" not in pseudonym
    # Studies without a patient ID are not one patient: each is keyed on its own UID.
    assert visibility.patient_pseudonym(_study(patient_id="")) != visibility.patient_pseudonym(_study(patient_id=""))
    # Keyed: another server secret gives another pseudonym, so it cannot be recomputed without the key.
    monkeypatch.setattr(visibility, "get_settings", lambda: SimpleNamespace(secret_key="another secret"))
    assert visibility.patient_pseudonym(one) != pseudonym


def test_a_reader_study_case_links_nothing_back():
    seen = visibility.CASE_IDENTITY.study(_study())
    assert (seen.shown, seen.study_id, seen.patient, seen.patient_id, seen.study_date, seen.description) == (
        False, None, "", None, None, "")
    assert visibility.CASE_IDENTITY.link(123) is None and visibility.identity_rule(Role.admin).link(123) == 123


@pytest.mark.parametrize("role", ["admin", "coordinator", "reader"])
def test_every_route_that_shows_a_study_asks_the_rule(role, app_client, make_user, db_session):
    name = f"Visible^{secrets.token_hex(4)}"
    stored = factories.done_study(db_session, patient_name=name)
    study = db_session.get(Study, stored.study_id)
    study.accession_number, study.patient_birth_date = f"ACC{secrets.token_hex(4)}", "19611231"
    db_session.commit()
    identity = [name, study.patient_id, study.accession_number, study.study_instance_uid, "1961-12-31"]
    _, token = make_user(role)
    headers = {"Authorization": f"Bearer {token}"}

    worklist = app_client.get("/api/worklist", headers=headers).json()
    row = next(row for row in worklist["studies"] if row["id"] == stored.study_id)
    assert row == app_client.get(f"/api/worklist/{stored.study_id}", headers=headers).json()
    assert row["identity_shown"] is SEES[role]
    assert row["patient_name"] == (name if SEES[role] else visibility.patient_pseudonym(study))
    assert row["patient_id"] == (study.patient_id if SEES[role] else None)
    detail = app_client.get(f"/api/studies/{stored.study_id}", headers=headers).json()
    listed = next(s for s in app_client.get("/api/studies", headers=headers).json() if s["id"] == stored.study_id)
    for shown in (detail, listed):
        assert shown["study_instance_uid"] == (study.study_instance_uid if SEES[role] else None)
        assert shown["description"] == ("Test study" if SEES[role] else "")
    assert all((i["sop_instance_uid"] is not None) is SEES[role] for i in detail["instances"])
    page = app_client.get(f"/studies/{stored.study_id}", headers=headers).text
    reading = app_client.get(f"/studies/{stored.study_id}/read", headers=headers).text
    if SEES[role]:
        assert all(value in page for value in (name, study.patient_id, study.accession_number, "1961-12-31"))
        assert name in reading and study.patient_id in reading
    else:
        for text in (page, reading):
            assert [value for value in identity if value in text] == []
            assert visibility.patient_pseudonym(study) in text


# What a condition shows, and what several pending conditions on one case allow together ----------------------

K = visibility.ConditionKind


def _allow(kind: K, method: str | None = None) -> visibility.Allowance:
    return visibility.Allowance.of(kind, method, "study")


def test_each_condition_kind_shows_only_its_pieces():
    similar, concepts, text = _allow(K.prediction_similar), _allow(K.prediction_concepts), _allow(
        K.prediction_justification
    )
    assert (similar.prediction, similar.similar_cases, similar.concepts, similar.justification) == (
        True, True, False, False)
    assert (concepts.similar_cases, concepts.concepts, concepts.justification) == (False, True, False)
    assert (text.similar_cases, text.concepts, text.justification) == (False, False, True)
    assert not any(piece.heatmap("gradcam") for piece in (similar, concepts, text))
    assert not _allow(K.unassisted).prediction


def test_the_meet_of_pending_conditions_shows_what_all_of_them_allow():
    gradcam = _allow(K.prediction_heatmap, "gradcam")
    assert gradcam.meet(_allow(K.unassisted)).kind == K.unassisted
    assert gradcam.meet(_allow(K.prediction_heatmap, "saliency")).kind == K.prediction  # neither map
    assert gradcam.meet(gradcam) == gradcam
    both = _allow(K.prediction_similar).meet(_allow(K.prediction_concepts))
    assert both.kind == K.prediction and not both.similar_cases and not both.concepts
    assert _allow(K.prediction_similar).meet(_allow(K.prediction)).kind == K.prediction
