"""Routing by domain (app/ai_models/routing.py) on real Postgres rows: modality and body part, automatic or asked
for by name, and the refusals that name what does not fit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from app.ai_models import routing
from app.db import session_scope
from app.errors import Invalid
from app.tables import AiModel, Instance, Series, Study


def _model(session, *, modalities: list[str], body_parts: list[str] | None, automatic: bool) -> AiModel:
    card = {"serve_automatically": automatic}
    if body_parts is not None:
        card["domain"] = {"body_part": "test", "body_parts": body_parts}
    model = AiModel(name=f"route-{uuid.uuid4().hex[:8]}", version="1", task="classification", labels=["a", "b"],
                    modalities=modalities, input_spec={}, weights_sha256="0" * 64, card=card)
    session.add(model)
    session.flush()
    return model


def _instance(session, *, modality: str, body_part: str) -> Instance:
    study = Study(study_instance_uid=f"2.25.{uuid.uuid4().int}", modality=modality)
    series = Series(study=study, series_instance_uid=f"2.25.{uuid.uuid4().int}", modality=modality,
                    body_part=body_part)
    instance = Instance(series=series, sop_instance_uid=f"2.25.{uuid.uuid4().int}", source_format="png",
                        modality=modality, rows=8, columns=8, storage_key="x", sha256=uuid.uuid4().hex, size_bytes=1)
    session.add(instance)
    session.flush()
    return instance


@pytest.fixture
def session() -> Iterator:
    with session_scope() as session:
        # Only this test's models are active: the shipped ones would take CR and OP images too.
        active = [model for model in session.query(AiModel).filter(AiModel.is_active.is_(True))]
        for model in active:
            model.is_active = False
        yield session
        session.rollback()


def test_a_model_runs_only_on_its_modality_and_body_part(session) -> None:
    chest = _model(session, modalities=["CR", "DX"], body_parts=["CHEST"], automatic=True)
    assert routing.automatic_model(session, modality="CR", body_part="CHEST") is chest
    assert routing.automatic_model(session, modality="DX", body_part="chest") is chest
    assert routing.automatic_model(session, modality="CR", body_part="KNEE") is None
    assert routing.automatic_model(session, modality="OP", body_part="EYE") is None
    # A DICOM header without BodyPartExamined routes by modality; the model's input-domain gate decides then.
    assert routing.automatic_model(session, modality="CR", body_part="") is chest


def test_a_model_not_served_automatically_runs_when_asked_for(session) -> None:
    on_request = _model(session, modalities=["CR"], body_parts=["CHEST"], automatic=False)
    instance = _instance(session, modality="CR", body_part="CHEST")
    assert routing.automatic_model(session, modality="CR", body_part="CHEST") is None
    assert routing.model_for_request(session, instance=instance, model_name=on_request.name) is on_request
    # Without a name, an explicit request takes the newest model whose domain fits, automatic or not.
    assert routing.model_for_request(session, instance=instance, model_name=None) is on_request


def test_a_request_outside_the_models_domain_is_refused_with_the_reason(session) -> None:
    fundus = _model(session, modalities=["OP"], body_parts=["EYE"], automatic=True)
    mr = _instance(session, modality="MR", body_part="HEAD")
    with pytest.raises(Invalid, match=rf"{fundus.name} is for OP eye images; this image is MR head"):
        routing.model_for_request(session, instance=mr, model_name=fundus.name)
    with pytest.raises(Invalid, match="no installed model takes MR head images"):
        routing.model_for_request(session, instance=mr, model_name=None)
    with pytest.raises(Invalid, match="no installed model 'nope'"):
        routing.model_for_request(session, instance=mr, model_name="nope")
