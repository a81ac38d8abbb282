"""Explanations beyond heatmaps from a real job: the served DR model's nearest reference cases and concept
evidence are stored with its prediction, served by the API with their thumbnails, and told in the reading
room's justification. Real model, real photograph, real Postgres."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from app.ai_models import sync as models_sync
from app.db import session_scope
from app.tables import Job, Prediction
from models.concepts import load_bank
from models.reference import ReferenceLibrary
from tests.e2e.helpers import FUNDUS_IN_DOMAIN, fresh_jpeg
from tests.workers.jobs import fundus_model_id, queued_photo_job
from workers import evidence, pipeline

STRENGTHS = {"strong", "moderate", "weak", "none"}


def _run_fundus_job() -> tuple[int, int]:
    model_id = fundus_model_id()
    job_id = queued_photo_job(fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=384), model_id=model_id, methods=["gradcam"])
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
    with session_scope() as session:
        [prediction] = session.query(Prediction).filter_by(job_id=job_id).all()
        return job_id, prediction.id


def test_a_job_stores_the_nearest_reference_cases_and_concepts(app_client, auth_headers):
    job_id, prediction_id = _run_fundus_job()
    with session_scope() as session:
        job, prediction = session.get(Job, job_id), session.get(Prediction, prediction_id)
        assert "evidence_s" in job.timings
        card_folder = models_sync.model_folder(prediction.model.name, prediction.model.version)
        assert card_folder is not None
        library = ReferenceLibrary.load(card_folder / "reference.npz")
        similar = prediction.similar_cases
        assert [case["rank"] for case in similar] == [1, 2, 3, 4, 5]
        similarities = [case["similarity"] for case in similar]
        assert similarities == sorted(similarities, reverse=True) and all(-1 <= s <= 1 for s in similarities)
        for case in similar:  # each one a real library row, with its confirmed grade
            assert library.case_ids[case["index"]] == case["case_id"] and "/test/" not in case["case_id"]
            assert case["label_indices"] == [int(library.labels[case["index"]])]
        concepts = prediction.concepts
        bank = load_bank(card_folder)
        assert bank is not None, "the served DR model ships a concept bank"
        assert {item["concept"] for item in concepts} == {name.replace("_", " ") for name in bank.concepts}
        assert {item["strength"] for item in concepts} <= STRENGTHS
        for item in concepts:  # told as evidence only where the vector beat chance on held-out photographs
            held_out = bank.accuracy[item["concept"].replace(" ", "_")]
            assert item["validated"] == (held_out.p_value < 0.05)
            assert item["accuracy"] == round(held_out.accuracy, 4)
        instance_id = prediction.instance_id
        thumbnail_bytes = library.thumbnails[similar[0]["index"]]

    api = app_client.get(f"/api/instances/{instance_id}/prediction", headers=auth_headers("reader")).json()
    assert [case["case_id"] for case in api["similar_cases"]] == [case["case_id"] for case in similar]
    png = app_client.get(f"/api/predictions/{prediction_id}/similar/1.png", headers=auth_headers("reader"))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content == thumbnail_bytes
    assert np.asarray(Image.open(io.BytesIO(png.content))).ndim == 3  # a colour fundus thumbnail
    missing = app_client.get(f"/api/predictions/{prediction_id}/similar/9.png", headers=auth_headers("reader"))
    assert missing.status_code == 404


def test_a_changed_reference_library_is_not_used(tmp_path):
    """The card names the library it measured by sha256: another file in its place shows no similar cases."""
    models_sync.sync_now()
    from app.config import get_settings
    from models.card import scan_cards

    card = next(card for card in scan_cards(get_settings().model_dirs).cards if card.name == "dr-grading-retinamnist")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "reference.npz").write_bytes((card.folder / "reference.npz").read_bytes() + b"\0")
    assert evidence._library(dataclasses.replace(card, folder=folder)) is None
    assert evidence._library(card) is not None  # the file the card measured


def test_evidence_that_cannot_be_computed_leaves_the_prediction_alone(caplog):
    """A concept bank naming a layer the network lacks: logged, no concepts, the similar cases still there."""
    import torch

    from app.config import get_settings
    from models.card import scan_cards
    from models.registry import load_model

    card = next(card for card in scan_cards(get_settings().model_dirs).cards if card.name == "dr-grading-retinamnist")
    model = load_model(card)
    sources = evidence.sources_of(card)
    broken = dataclasses.replace(sources.bank, layer="features.no_such_layer")
    key = (card.name, card.version, str(card.folder))
    evidence._loaded[key] = evidence.Sources(sources.library, broken)
    try:
        [result], _ = evidence.compute(model, card, torch.zeros(1, 3, 28, 28), [0])
    finally:
        evidence._loaded[key] = sources
    assert result["concepts"] is None and len(result["similar_cases"]) == 5
    assert "concept evidence not computed" in caplog.text
