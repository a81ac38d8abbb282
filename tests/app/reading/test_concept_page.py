"""A model's global concept page: what its concept bank measured, read from the bank shipped in its folder."""

from __future__ import annotations

import json

from sqlalchemy import select

from app.ai_models import sync as models_sync
from app.db import session_scope
from app.tables import AiModel


def _model_id(name: str) -> int:
    models_sync.sync_now()
    with session_scope() as session:
        return session.scalar(select(AiModel.id).where(AiModel.name == name, AiModel.is_active.is_(True)))


def test_the_page_shows_each_concept_with_its_measured_numbers(app_client, auth_headers):
    model_id = _model_id("dr-grading-retinamnist")
    with session_scope() as session:
        model = session.get(AiModel, model_id)
        folder = models_sync.model_folder(model.name, model.version)
    bank = json.loads((folder / "concepts.json").read_text())
    page = app_client.get(f"/models/{model_id}/concepts", headers=auth_headers("reader"))
    assert page.status_code == 200
    for name in bank["concepts"]:
        accuracy = bank["accuracy"][name]["accuracy"]
        assert f'data-concept="{name.replace("_", " ")}"' in page.text
        assert f"{accuracy * 100:.0f}%" in page.text
    significant = sum(result["significant"] for per_class in bank["tcav"].values() for result in per_class.values())
    assert page.text.count("<strong>*</strong>") == significant
    assert bank["layer"] in page.text


def test_a_model_without_a_bank_says_so_and_an_unknown_one_is_404(app_client, auth_headers):
    page = app_client.get(f"/models/{_model_id('cxr-demo')}/concepts", headers=auth_headers("reader"))
    assert page.status_code == 200 and 'id="no-concepts"' in page.text
    assert app_client.get("/models/999999999/concepts", headers=auth_headers("reader")).status_code == 404


def test_the_admin_model_page_links_to_it(app_client, auth_headers):
    model_id = _model_id("dr-grading-retinamnist")
    page = app_client.get(f"/admin/models/{model_id}", headers=auth_headers("admin"))
    assert page.status_code == 200 and f'href="/models/{model_id}/concepts"' in page.text
