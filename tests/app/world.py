"""A small world with one real row of every kind a route takes an id of: a clinical study with its job, prediction
and heatmap, a fundus study that is the case of an open reader study, the reader's assignment there, a read of the
reader's own, a spare account for the admin's user routes, and a model onboarding waiting for its confirmation.
The access matrix and the CSP browser test use it.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.auth import service as auth_service
from app.config import get_settings
from app.db import session_scope
from app.tables import Instance, Job, JobState, ModelOnboarding, OnboardingState, Prediction, Role, Study, User
from tests.app.reader_studies.conftest import Case, next_assignment, open_study
from tests.app.reading.conftest import add_heatmap, fundus_jpeg
from tests.app.viewer import factories

# The path parameters the routes take, each with a real value in World.ids.
ID_NAMES = ("study_id", "instance_id", "job_id", "heatmap_id", "model_id", "client_id", "reader_study_id",
            "assignment_id", "user_id", "onboarding_id", "study", "series", "instance", "frames", "prediction_id",
            "rank")


@dataclass(frozen=True)
class World:
    users: dict[str, Any]  # role -> user row (expunged); password tests.app.auth.helpers.PASSWORD
    ids: dict[str, Any]  # path parameter -> a real value


def bearer(user_id: int) -> dict[str, str]:
    """A fresh bearer token of a user: a call may revoke the one it was sent with (sign-out)."""
    with session_scope() as session:
        user = session.get(User, user_id)
        assert user is not None
        token, _ = auth_service.issue_token(session, user=user, kind="bearer", hours=1)
    return {"Authorization": f"Bearer {token}"}


def fundus_case() -> Case:
    """A fundus photograph with a done job, a prediction, a GradCAM and an integrated-gradients map."""
    with session_scope() as session:
        stored = factories.insert_study(
            session, data=fundus_jpeg(), source_format="jpeg", rows=64, columns=96, modality="OP",
            photometric="RGB", description="Fundus", patient_name=f"World^{secrets.token_hex(3)}",
        )
        job = factories.add_job(session, stored, state=JobState.done, progress=100)
        prediction, gradcam = factories.add_prediction(session, job)
        signed = np.linspace(-1, 2, 16 * 24, dtype=np.float32).reshape(16, 24)
        ig = add_heatmap(session, prediction.id, method="integrated_gradients", array=signed)
        study = session.get(Study, stored.study_id)
        assert study is not None
        return Case(stored.study_id, stored.instance_id, study.study_instance_uid, study.patient_name,
                    study.patient_id, {"gradcam": gradcam.id, "integrated_gradients": ig.id})


def proposed_onboarding() -> int:
    """An onboarding waiting for its confirmation, with a preview on disk (the worker's part is not run here)."""
    with session_scope() as session:
        row = ModelOnboarding(name=f"world-{secrets.token_hex(3)}", version="1", filename="model.ts",
                              state=OnboardingState.proposed, proposal={"candidates": [["features", [1, 8, 4, 4]]]})
        session.add(row)
        session.flush()
        folder = get_settings().onboarding_dir / str(row.id)
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(folder / "preview.png")
        row.folder = str(folder)
        return row.id


def dicom_uids(instance_id: int) -> dict[str, str]:
    """The DICOMweb path parameters of a stored DICOM instance: its study, series and SOP instance UIDs, frame 1."""
    with session_scope() as session:
        instance = session.get(Instance, instance_id)
        assert instance is not None and instance.source_format == "dicom"
        return {"study": instance.series.study.study_instance_uid, "series": instance.series.series_instance_uid,
                "instance": instance.sop_instance_uid, "frames": "1"}


def build(client: TestClient, make_user) -> World:  # type: ignore[no-untyped-def]
    users = {role.value: make_user(role.value)[0] for role in Role}
    spare, _ = make_user(Role.reader.value)
    with session_scope() as session:
        clinical = factories.done_study(session)
        # Its two nearest reference cases, with their thumbnails (what workers/evidence.py stores).
        prediction = session.get(Prediction, clinical.prediction_id)
        prediction.similar_cases = [{"rank": 1, "index": 0, "case_id": "reference/0", "label_indices": [1],
                                     "similarity": 0.9}]
        prediction.similar_thumbnails = [base64.b64encode(factories.png_bytes(width=8, height=8)).decode()]
        job = session.get(Job, clinical.job_id)
        assert job is not None
        model_id = job.model_id
    coordinator = bearer(users["coordinator"].id)
    reader = bearer(users["reader"].id)
    cases = [fundus_case() for _ in range(3)]  # the default scheme wants a case per condition
    detail = open_study(client, coordinator, cases=cases, reader_users=[users["reader"]])
    assignment = next_assignment(client, reader, detail["id"])
    assert assignment is not None
    read_id = str(uuid.uuid4())
    body = {"study_id": clinical.study_id, "instance_id": clinical.instance_id, "answers": {}}
    saved = client.put(f"/api/reads/{read_id}", json=body, headers=reader)
    assert saved.status_code == 201, saved.text
    ids = {
        "study_id": clinical.study_id,
        "instance_id": clinical.instance_id,
        "job_id": clinical.job_id,
        "heatmap_id": clinical.heatmap_id,
        "model_id": model_id,
        "client_id": read_id,
        "reader_study_id": detail["id"],
        "assignment_id": assignment["id"],
        "user_id": spare.id,
        "onboarding_id": proposed_onboarding(),
        **dicom_uids(clinical.instance_id),
        "prediction_id": clinical.prediction_id,
        "rank": 1,  # of a similar case
    }
    assert set(ids) == set(ID_NAMES)
    return World(users=users, ids=ids)
