from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.card import CardError, WeightsMismatchError, discover_cards, load_card, scan_cards
from models.registry import load_model

ROOT = Path(__file__).resolve().parents[2]


def test_valid_card_loads_and_round_trips(make_model_folder):
    folder = make_model_folder()
    card = load_card(folder)
    assert card.labels == ["a", "b", "c"] and card.input.size == (16, 16) and card.folder == folder
    assert card.calibration_temperature == 1.5 and card.uncertainty_threshold is None
    stored = json.loads(json.dumps(card.as_dict()))  # what the app puts in the database
    assert "folder" not in stored
    written = json.loads((folder / "card.json").read_text())
    defaults = {"training": {}, "format": "state_dict", "evaluation": {}, "serve_automatically": True, "summary": "",
                "uncertainty": {"method": "none", "samples": 1, "members": [], "flips": [[]]},
                "input": {**written["input"], "windowing": "minmax", "invert_monochrome1": False},
                "domain": None, "ood": None}  # no input-domain gate on this card: every routed image runs
    assert stored == {**written, **defaults}


@pytest.mark.parametrize("field", ["name", "labels", "input", "architecture", "weights_sha256", "metrics"])
def test_missing_field_is_named(make_model_folder, field):
    with pytest.raises(CardError, match=f"missing field '{field}'"):
        load_card(make_model_folder(**{field: ...}))


def test_optional_fields_default(make_model_folder):
    card = load_card(make_model_folder(calibration_temperature=..., intended_use=..., uncertainty_threshold=...))
    assert card.calibration_temperature == 1.0
    assert card.intended_use == "research demonstration, not for clinical use"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"labels": "a,b,c"}, "field 'labels' must be a list"),
        ({"calibration_temperature": "1"}, "field 'calibration_temperature' must be"),
        ({"task": "segmentation"}, "field 'task' must be one of"),
        ({"metrics": {"accuracy": 0.5}}, "must name the split"),
        ({"weights_sha256": "abc"}, "64 hex digits"),
        ({"weights": "../elsewhere.pt"}, "inside the model folder"),
    ],
)
def test_bad_types_and_values(make_model_folder, overrides, message):
    with pytest.raises(CardError, match=message):
        load_card(make_model_folder(**overrides))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"size": [28]}, r"input.size' must be \[H, W\]"),
        ({"size": [28, 0]}, r"input.size' must be \[H, W\]"),
        ({"channels": 1}, "colour 'rgb' has 3"),
        ({"mean": [0.5]}, "input.mean' must be a list of 3 numbers"),
        ({"std": [0.2, 0.0, 0.2]}, "input.std' must be > 0"),
        ({"colour": "cmyk"}, "input.colour' must be one of"),
    ],
)
def test_wrong_input_spec(make_model_folder, spec, message):
    base = {"size": [16, 16], "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3, "colour": "rgb"}
    with pytest.raises(CardError, match=message):
        load_card(make_model_folder(input={**base, **spec}))


def test_missing_weights_file(make_model_folder):
    folder = make_model_folder()
    (folder / "weights.pt").unlink()
    with pytest.raises(CardError, match="weights file 'weights.pt' is missing"):
        load_card(folder)


def test_wrong_sha256_is_refused_by_load_model(make_model_folder):
    card = load_card(make_model_folder(weights_sha256="0" * 64))
    with pytest.raises(WeightsMismatchError, match="the card says 0000"):
        load_model(card)


def test_load_model_is_in_eval_mode(make_model_folder):
    model = load_model(load_card(make_model_folder()))
    assert not model.training


def test_discovery_reports_invalid_folders(make_model_folder, tmp_path):
    make_model_folder("good")
    make_model_folder("bad", labels=...)
    (tmp_path / "not-a-model").mkdir()
    scan = scan_cards([tmp_path, tmp_path / "absent"])
    assert [card.folder.name for card in scan.cards] == ["good"]
    assert set(scan.invalid) == {tmp_path / "bad", tmp_path / "absent"}
    assert "missing field 'labels'" in scan.invalid[tmp_path / "bad"]
    with pytest.raises(CardError, match="2 invalid model folder"):
        discover_cards([tmp_path, tmp_path / "absent"])


def test_duplicate_name_and_version_is_invalid(make_model_folder, tmp_path):
    make_model_folder("one")
    make_model_folder("two")
    scan = scan_cards([tmp_path])
    assert len(scan.cards) == 1 and "already defined" in scan.invalid[tmp_path / "two"]


def test_card_module_does_not_import_torch():
    code = "import sys, models.card; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_shipped_zoo_is_valid():
    cards = discover_cards([ROOT / "models" / "zoo"])
    assert {"dr-grading-retinamnist", "fundus-lesions-idrid", "cxr-demo"} <= {card.name for card in cards}
    for card in cards:
        assert card.uncertainty_threshold is not None and card.uncertainty.method == "mc_dropout"
        assert (card.folder / card.evaluation["file"]).is_file() and "referral" in card.metrics
        assert card.weights_path.stat().st_size < 5 * 1024 * 1024
