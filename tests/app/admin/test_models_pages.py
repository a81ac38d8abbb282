"""/admin/models, /admin/models/{id} and GET /api/admin/models on the committed zoo models."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from app.tables import AiModel

ZOO = Path(__file__).resolve().parents[3] / "models" / "zoo"
CARDS = {card["name"]: card for card in (json.loads(path.read_text()) for path in sorted(ZOO.glob("*/card.json")))}


def _model_id(db_session, name: str) -> int:
    card = CARDS[name]
    row = db_session.scalar(select(AiModel).where(AiModel.name == name, AiModel.version == card["version"]))
    assert row is not None, f"{name} is not registered"
    return row.id


def test_the_zoo_holds_the_models_these_tests_expect():
    assert {"cxr-demo", "dr-grading-retinamnist", "fundus-lesions-idrid"} <= set(CARDS)


def test_models_page_lists_every_registered_model_with_its_card_facts(admin):
    response = admin.client.get("/admin/models")
    assert response.status_code == 200
    page = html.unescape(response.text)
    for name, card in CARDS.items():
        row = page[page.index(f'data-model-name="{name}"'):]
        row = row[: row.index("</tr>")]
        assert f"version {card['version']}" in row
        assert card["task"] in row and ", ".join(card["labels"]) in row
        assert card["weights_sha256"][:12] in row
        assert f"split: {card['metrics']['split']}" in row
        assert f"{card['calibration_temperature']:.4g}" in row
        assert f"{card['uncertainty_threshold']:.4g}" in row
        served = "automatically" if card.get("serve_automatically", True) else "on request"
        assert served in row
    # A headline test metric of each card, as its own number.
    dr = CARDS["dr-grading-retinamnist"]["metrics"]
    assert f"qwk</span> {dr['qwk']:.4g}" in page
    cxr = CARDS["cxr-demo"]["metrics"]
    assert f"auc</span> {cxr['auc']:.4g}" in page


def test_model_page_shows_the_whole_card_readably(admin, db_session):
    card = CARDS["fundus-lesions-idrid"]
    response = admin.client.get(f"/admin/models/{_model_id(db_session, 'fundus-lesions-idrid')}")
    assert response.status_code == 200
    page = html.unescape(response.text)
    for text in (card["intended_use"], card["training_data"], card["licence"], card["weights_sha256"],
                 f"split: {card['metrics']['split']}", card["target_layer"]):
        assert text in page
    # Nested metrics, input spec, training and evaluation, each as dotted keys with their values.
    patch_auc = card["metrics"]["patch"]["auc_hard_exudates"]
    assert f'<th scope="row">patch.auc_hard_exudates</th><td>{patch_auc:.4g}</td>' in page
    assert '<th scope="row">windowing</th><td>minmax</td>' in page
    assert f'<th scope="row">selected_epoch</th><td>{card["training"]["selected_epoch"]}</td>' in page
    assert '<th scope="row">file</th><td>evaluation.json</td>' in page


def test_unknown_model_is_a_404_page(admin):
    response = admin.client.get("/admin/models/999999")
    assert response.status_code == 404 and "Model 999999" in response.text


def test_json_models_route_returns_the_card_metrics(app_client, auth_headers):
    response = app_client.get("/api/admin/models", headers=auth_headers("admin"))
    assert response.status_code == 200
    listed = {(item["name"], item["version"]): item for item in response.json()}
    for name, card in CARDS.items():
        item = listed[(name, card["version"])]
        assert item["metrics"] == card["metrics"]
        assert item["metrics_split"] == card["metrics"]["split"]
        assert item["weights_sha256"] == card["weights_sha256"]
        assert item["calibration_temperature"] == pytest.approx(card["calibration_temperature"])
        assert item["uncertainty_threshold"] == pytest.approx(card["uncertainty_threshold"])
        assert item["serve_automatically"] == card.get("serve_automatically", True)
        assert item["intended_use"] == card["intended_use"] and item["licence"] == card["licence"]


@pytest.mark.parametrize("role", ["reader", "coordinator"])
def test_json_models_route_is_for_admins_only(app_client, auth_headers, role):
    response = app_client.get("/api/admin/models", headers=auth_headers(role))
    assert response.status_code == 403 and role in response.json()["detail"]
