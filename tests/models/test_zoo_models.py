"""The shipped IDRiD lesion and synthetic CXR models: weights match their cards, and re-evaluating them on
their held-out test sets reproduces the cards' metrics to 3 decimals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import uncertainty
from models.card import load_card
from models.datasets import IDRID_DIR, IDRID_HELDOUT, load_medmnist
from models.recipes.common import sampled_statistics
from models.registry import load_model
from models.training import normalise, to_tensor

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"
DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.skipif(not (IDRID_DIR / "IDRiD_17.jpg").is_file(), reason="data/idrid is not in this checkout")
def test_idrid_lesion_model_reproduces_its_test_metrics():
    from models.datasets import load_idrid
    from models.recipes import idrid

    card = load_card(ZOO / "fundus-lesions-idrid")
    assert card.task == "multilabel" and card.evaluation["localisation"] == "models.datasets:idrid_heldout"
    assert card.metrics["split"].startswith("test") and "IDRiD" in card.training_data and "CC BY 4.0" in card.licence
    assert card.training["images"]["train"][-1] == "IDRiD_12" and card.training["images"]["val"][-1] == "IDRiD_16"
    model = load_model(card)
    test = load_idrid(IDRID_HELDOUT, size=idrid.IMAGE)
    patch = idrid.patch_auc(model, idrid.grid_patches(test), list(card.input.mean), list(card.input.std))
    image = idrid.image_level(model, test, card)
    for lesion in idrid.LESIONS:
        for report, stored in ((patch, card.metrics["patch"]), (image, card.metrics["image"])):
            key = f"auc_{lesion}"
            assert (report[key] is None) == (stored[key] is None)
            if stored[key] is not None:
                assert round(report[key], 3) == round(stored[key], 3)
        assert round(image[f"mean_prob_{lesion}"], 3) == round(card.metrics["image"][f"mean_prob_{lesion}"], 3)
    assert round(patch["auc_macro"], 3) == round(card.metrics["auc_macro"], 3)


@pytest.mark.skipif(not (DATA / "cxr" / "00027426_000.png").is_file(), reason="data/cxr is not in this checkout")
def test_cxr_demo_reproduces_its_synthetic_test_metrics():
    from models.evaluation import accuracy, binary_auc
    from models.recipes import cxr

    card = load_card(ZOO / "cxr-demo")
    assert card.modalities == ["CR", "DX"] and card.input.windowing == "percentile" and card.input.invert_monochrome1
    assert "SYNTHETIC" in card.training_data and "DEMONSTRATION" in card.intended_use
    model = load_model(card)
    x, y = cxr.test_set(DATA / "cxr", card.metrics["n"])
    with torch.no_grad():
        probs = torch.softmax(model(normalise(x, list(card.input.mean), list(card.input.std))), 1).numpy()
    assert round(binary_auc(probs[:, 1], y.numpy() == 1), 3) == round(card.metrics["auc"], 3)
    assert round(accuracy(probs, y.numpy()), 3) == round(card.metrics["accuracy"], 3)


@pytest.mark.skipif(not (DATA / "retinamnist.npz").is_file(), reason="data/retinamnist.npz is not in this checkout")
def test_dr_referral_threshold_follows_the_stated_rule_on_val():
    card = load_card(ZOO / "dr-grading-retinamnist")
    model = load_model(card)
    val = load_medmnist(DATA / "retinamnist.npz", num_classes=5)["val"]
    x = normalise(to_tensor(val.images), list(card.input.mean), list(card.input.std))
    entropy = sampled_statistics(model, x, card)["predictive_entropy"]  # batched as the recipe does
    assert round(uncertainty.referral_threshold(entropy, 0.2), 3) == round(card.uncertainty_threshold, 3)
    assert np.mean(entropy.numpy() > card.uncertainty_threshold) == pytest.approx(0.2, abs=0.01)
    assert "80th percentile" in card.metrics["referral"]["rule"]
