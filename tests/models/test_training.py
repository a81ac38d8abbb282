from __future__ import annotations

from pathlib import Path

import pytest

from models.card import load_card
from models.registry import load_model
from models.training import TrainingDataError, run_recipe

DATA = Path(__file__).resolve().parents[2] / "data" / "retinamnist.npz"


@pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} (a copy of RetinaMNIST) is not in this checkout")
def test_recipe_smoke_writes_a_loadable_model(tmp_path):
    report = run_recipe("dr-grading-retinamnist", out_dir=tmp_path / "dr", data=DATA, seed=1, epochs=1, limit=48)
    assert "test (n=48): ACC" in report and "ECE" in report
    card = load_card(tmp_path / "dr")
    assert card.training["epochs"] == 1 and card.metrics["split"] == "test" and card.calibration_temperature > 0
    assert not load_model(card).training


@pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} (a copy of RetinaMNIST) is not in this checkout")
def test_truncated_download_is_a_clear_error(tmp_path):
    truncated = tmp_path / "retinamnist.npz"
    truncated.write_bytes(DATA.read_bytes()[:100_000])
    with pytest.raises(TrainingDataError, match="not a readable .npz file.*download complete"):
        run_recipe("dr-grading-retinamnist", out_dir=tmp_path / "dr", data=truncated, seed=0)
    assert not (tmp_path / "dr").exists()


def test_missing_file_and_wrong_arrays(tmp_path):
    import numpy as np

    with pytest.raises(TrainingDataError, match="no such file"):
        run_recipe("dr-grading-retinamnist", out_dir=tmp_path, data=tmp_path / "absent.npz", seed=0)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, train_images=np.zeros((2, 28, 28, 3), np.uint8), train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(TrainingDataError, match="'val_images' is missing"):
        run_recipe("dr-grading-retinamnist", out_dir=tmp_path, data=wrong, seed=0)


def test_unknown_recipe():
    with pytest.raises(ValueError, match="unknown recipe"):
        run_recipe("nope", out_dir=None, data=None, seed=0)


@pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} (a copy of RetinaMNIST) is not in this checkout")
def test_recipe_is_deterministic(tmp_path):
    for name in ("first", "second"):
        run_recipe("dr-grading-retinamnist", out_dir=tmp_path / name, data=DATA, seed=3, epochs=1, limit=32)
    assert load_card(tmp_path / "first").weights_sha256 == load_card(tmp_path / "second").weights_sha256


@pytest.mark.parametrize("recipe", ["fundus-lesions-idrid", "cxr-demo"])
def test_new_recipes_smoke_write_loadable_models(tmp_path, recipe):
    data = {"fundus-lesions-idrid": DATA.parent / "idrid", "cxr-demo": DATA.parent / "cxr"}[recipe]
    if not data.is_dir():
        pytest.skip(f"{data} is not in this checkout")
    report = run_recipe(recipe, out_dir=tmp_path / recipe, data=data, seed=0, epochs=1, limit=2)
    assert "trained " + recipe in report
    card = load_card(tmp_path / recipe)
    assert card.uncertainty.method == "mc_dropout" and card.uncertainty_threshold is not None
    assert (card.folder / "evaluation.json").is_file() and "aurc" in card.metrics["referral"]
    assert not load_model(card).training
