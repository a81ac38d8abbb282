"""Cases for reader-study tests: fundus studies with a prediction and gradcam + integrated-gradients maps,
and a coordinator who designs studies through the real API."""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app.tables import JobState
from tests.app.reading.conftest import add_heatmap, fundus_jpeg
from tests.app.viewer import factories


@dataclass(frozen=True)
class Case:
    study_id: int
    instance_id: int
    uid: str
    patient_name: str
    patient_id: str
    heatmaps: dict[str, int]  # method -> heatmap id


@pytest.fixture
def make_cases(db_session) -> Callable[[int], list[Case]]:
    """n fundus studies (modality OP), each with a prediction, a gradcam and an integrated-gradients map."""
    from app.tables import Study

    def _make(n: int, *, heatmaps: bool = True) -> list[Case]:
        cases = []
        for _ in range(n):
            name = f"Patient^{secrets.token_hex(4)}"
            stored = factories.insert_study(
                db_session, data=fundus_jpeg(), source_format="jpeg", rows=64, columns=96, modality="OP",
                photometric="RGB", description="Fundus", patient_name=name,
            )
            job = factories.add_job(db_session, stored, state=JobState.done, progress=100)
            maps: dict[str, int] = {}
            if heatmaps:
                prediction, gradcam = factories.add_prediction(db_session, job)
                signed = np.linspace(-1, 2, 16 * 24, dtype=np.float32).reshape(16, 24)
                ig = add_heatmap(db_session, prediction.id, method="integrated_gradients", array=signed)
                maps = {"gradcam": gradcam.id, "integrated_gradients": ig.id}
            study = db_session.get(Study, stored.study_id)
            cases.append(Case(stored.study_id, stored.instance_id, study.study_instance_uid, name, study.patient_id,
                              maps))
        db_session.commit()
        return cases

    return _make


CHEST_LABELS = ["effusion", "emphysema"]  # cxr-nih14's labels


def chest_case(session, *, probabilities: list[float], data: bytes | None = None, size: tuple[int, int] = (32, 32),
               heatmaps: bool = True) -> Case:
    """A DX chest radiograph (a PNG, `data` or a grey square) with a multilabel prediction of a model reporting
    CHEST_LABELS, as cxr-nih14 would store it (label: the most probable finding), and an integrated-gradients map
    of that label. The model is inactive: no upload is routed to it."""
    from app.tables import AiModel, Job, Prediction, Series, Study

    rows, columns = size
    if data is None:
        buffer = io.BytesIO()
        Image.fromarray(np.full((rows, columns), 90, dtype=np.uint8)).save(buffer, "PNG")
        data = buffer.getvalue()
    name = f"Chest^{secrets.token_hex(4)}"
    stored = factories.insert_study(session, data=data, source_format="png", rows=rows, columns=columns,
                                    modality="DX", description="PA chest", patient_name=name)
    session.scalar(select(Series).where(Series.study_id == stored.study_id)).body_part = "CHEST"
    model = AiModel(name=f"chest-net-{secrets.token_hex(3)}", version="1.0.0", task="multilabel", labels=CHEST_LABELS,
                    modalities=["ZZ"], input_spec={}, weights_sha256="0" * 64, card={}, is_active=False)
    session.add(model)
    session.flush()
    job = Job(study_id=stored.study_id, instance_id=stored.instance_id, model_id=model.id,
              methods=["integrated_gradients"], state=JobState.done, progress=100)
    session.add(job)
    session.flush()
    top = int(np.argmax(probabilities))
    prediction = Prediction(job_id=job.id, instance_id=stored.instance_id, model_id=model.id,
                            probabilities=probabilities, label=CHEST_LABELS[top], label_index=top,
                            predictive_entropy=0.5, referral=False)
    session.add(prediction)
    session.flush()
    maps: dict[str, int] = {}
    if heatmaps:
        signed = np.linspace(-1, 2, 16 * 16, dtype=np.float32).reshape(16, 16)
        maps["integrated_gradients"] = add_heatmap(
            session, prediction.id, method="integrated_gradients", array=signed, target_class=top
        ).id
    study = session.get(Study, stored.study_id)
    return Case(stored.study_id, stored.instance_id, study.study_instance_uid, name, study.patient_id, maps)


@pytest.fixture
def make_chest_cases(db_session) -> Callable[..., list[Case]]:
    """A chest case (chest_case) per list of probabilities (effusion, emphysema), committed."""

    def _make(*probabilities: list[float], heatmaps: bool = True) -> list[Case]:
        cases = [chest_case(db_session, probabilities=list(p), heatmaps=heatmaps) for p in probabilities]
        db_session.commit()
        return cases

    return _make


@pytest.fixture
def coordinator(auth_headers) -> dict[str, str]:
    return auth_headers("coordinator")


@pytest.fixture
def readers(make_user) -> Callable[[int], list[tuple[object, dict[str, str]]]]:
    """n reader users with their bearer headers."""

    def _make(n: int) -> list[tuple[object, dict[str, str]]]:
        made = [make_user("reader") for _ in range(n)]
        return [(user, {"Authorization": f"Bearer {token}"}) for user, token in made]

    return _make


def create_study(client, headers, **fields) -> dict:
    body = {"name": f"study-{secrets.token_hex(4)}", **fields}
    response = client.post("/api/reader-studies", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def reference_csv(cases: list[Case], grades: list[int]) -> str:
    lines = ["study_instance_uid,dr_grade,dme"]
    lines += [f"{case.uid},{grade},{'yes' if grade >= 3 else 'no'}" for case, grade in zip(cases, grades, strict=True)]
    return "\n".join(lines) + "\n"


def open_study(client, headers, *, cases: list[Case], reader_users, grades: list[int] | None = None, **fields) -> dict:
    """Create, fill (reference CSV adds the cases), enrol readers and open a study; returns its detail."""
    study = create_study(client, headers, **fields)
    sid = study["id"]
    grades = grades if grades is not None else [i % 5 for i in range(len(cases))]
    upload = client.post(f"/api/reader-studies/{sid}/reference", content=reference_csv(cases, grades),
                         headers={**headers, "Content-Type": "text/csv"})
    assert upload.status_code == 200, upload.text
    emails = [user.email for user in reader_users]
    enrolled = client.post(f"/api/reader-studies/{sid}/readers", json={"emails": emails}, headers=headers)
    assert enrolled.status_code == 200, enrolled.text
    opened = client.post(f"/api/reader-studies/{sid}/open", json={}, headers=headers)
    assert opened.status_code == 200, opened.text
    return client.get(f"/api/reader-studies/{sid}", headers=headers).json()


def next_assignment(client, headers, study_id: int) -> dict | None:
    queue = client.get(f"/api/reader-studies/{study_id}/queue", headers=headers).json()
    return next((item for item in queue["assignments"] if item["available"]), None)
