"""Bounded compute (app/jobs/limits.py): readers may queue only single-pass methods; a coordinator or an admin
at most LUMEN_MAX_EXPENSIVE_JOBS_PER_USER expensive jobs at once (429 with Retry-After beyond), counted per user
and only while queued or running. The cost classes cover exactly the methods of models/explain/names.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import update

from app.db import session_scope
from app.jobs import limits
from app.tables import AiModel, Instance, Job, JobState, Series, Study
from models.explain.names import METHOD_NAMES
from tests.settings import settings_env


def test_every_method_is_either_cheap_or_expensive() -> None:
    assert set(METHOD_NAMES) == limits.CHEAP_METHODS | limits.EXPENSIVE_METHODS
    assert not limits.CHEAP_METHODS & limits.EXPENSIVE_METHODS
    # The perturbation methods of the issue (one lime job held the only worker for two minutes) are expensive.
    assert {"lime", "kernel_shap", "shapley_sampling", "occlusion", "feature_ablation"} <= limits.EXPENSIVE_METHODS
    assert limits.expensive(["gradcam", "lime", "occlusion", "lime"]) == ["lime", "occlusion"]


@pytest.fixture
def instance_id() -> Iterator[int]:
    """An image of a made-up modality, with an active model that takes it (no other test's upload picks it)."""
    modality = "L" + secrets.token_hex(3).upper()
    with session_scope() as session:
        model = AiModel(name=f"limits-{modality}", version="1", task="classification", labels=["a", "b"],
                        modalities=[modality], input_spec={}, weights_sha256="0" * 64, card={})
        study = Study(study_instance_uid=generate_uid(), modality=modality)
        series = Series(study=study, series_instance_uid=generate_uid(), modality=modality)
        instance = Instance(series=series, sop_instance_uid=generate_uid(), source_format="dicom", modality=modality,
                            rows=4, columns=4, storage_key="none", sha256=secrets.token_hex(32), size_bytes=1)
        session.add_all([model, study])
        session.flush()
        model_id, created = model.id, instance.id
    yield created
    with session_scope() as session:
        session.execute(update(AiModel).where(AiModel.id == model_id).values(is_active=False))


def _ask(client, headers: dict[str, str], instance_id: int, *methods: str):
    return client.post("/api/jobs", json={"instance_id": instance_id, "methods": list(methods)}, headers=headers)


def test_a_reader_may_queue_only_single_pass_methods(app_client, make_user, instance_id) -> None:
    reader, token = make_user("reader")
    headers = {"Authorization": f"Bearer {token}"}
    cheap = _ask(app_client, headers, instance_id, "gradcam", "saliency")
    assert cheap.status_code == 201, cheap.text
    with session_scope() as session:
        assert session.get(Job, cheap.json()["id"]).requested_by_id == reader.id
    for methods in (("lime",), ("gradcam", "occlusion"), ("integrated_gradients",)):
        refused = _ask(app_client, headers, instance_id, *methods)
        assert refused.status_code == 403, methods
        detail = refused.json()["detail"]
        assert ", ".join(limits.expensive(list(methods))) in detail and "gradcam" in detail, detail


def test_expensive_jobs_are_capped_per_user_while_queued_or_running(app_client, make_user, instance_id) -> None:
    _, token = make_user("coordinator")
    _, other_token = make_user("admin")
    headers, other = {"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {other_token}"}
    with settings_env({"LUMEN_MAX_EXPENSIVE_JOBS_PER_USER": "2"}):
        first = _ask(app_client, headers, instance_id, "lime")
        second = _ask(app_client, headers, instance_id, "kernel_shap", "gradcam")
        assert (first.status_code, second.status_code) == (201, 201)
        third = _ask(app_client, headers, instance_id, "occlusion")
        assert third.status_code == 429
        assert third.headers["Retry-After"] == str(limits.RETRY_AFTER_SECONDS)
        assert "2 expensive explanation jobs" in third.json()["detail"]
        # Cheap methods are not capped, and the quota is the caller's own.
        assert _ask(app_client, headers, instance_id, "gradcam").status_code == 201
        assert _ask(app_client, other, instance_id, "occlusion").status_code == 201
        # A running job still counts; a finished one frees its place.
        with session_scope() as session:
            session.execute(update(Job).where(Job.id == first.json()["id"]).values(state=JobState.running))
        assert _ask(app_client, headers, instance_id, "occlusion").status_code == 429
        with session_scope() as session:
            session.execute(update(Job).where(Job.id == first.json()["id"]).values(state=JobState.done))
        assert _ask(app_client, headers, instance_id, "occlusion").status_code == 201
        assert _ask(app_client, headers, instance_id, "lime").status_code == 429
    with settings_env({"LUMEN_MAX_EXPENSIVE_JOBS_PER_USER": "0"}):
        assert _ask(app_client, other, instance_id, "lime").status_code == 429
