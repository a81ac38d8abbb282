"""The shipped DR grading model: its weights match the card, and re-evaluating them on the RetinaMNIST test
split reproduces the card's metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.card import load_card
from models.datasets import load_medmnist
from models.evaluation import accuracy, macro_auc_ovr
from models.inference import predict
from models.registry import load_model
from models.training import normalise, to_tensor

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "models" / "zoo" / "dr-grading-retinamnist"
DATA = ROOT / "data" / "retinamnist.npz"


def test_card_describes_the_model():
    card = load_card(FOLDER)
    assert card.labels == ["none", "mild", "moderate", "severe NPDR", "PDR"]
    assert card.modalities == ["OP"] and card.input.size == (28, 28) and card.input.crop == "fundus"
    assert card.metrics["split"] == "test" and card.metrics["n"] == 400
    assert "RetinaMNIST" in card.training_data and "CC BY 4.0" in card.training_data
    assert card.weights_path.stat().st_size < 2 * 1024 * 1024


@pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} (a copy of RetinaMNIST) is not in this checkout")
def test_weights_reproduce_the_cards_test_metrics():
    card = load_card(FOLDER)
    model = load_model(card)  # verifies the sha256
    test = load_medmnist(DATA, num_classes=5)["test"]
    x = normalise(to_tensor(test.images), list(card.input.mean), list(card.input.std))
    probs = predict(model, x).numpy()
    assert len(test) == 400
    assert round(accuracy(probs, test.labels), 3) == round(card.metrics["accuracy"], 3)
    assert round(macro_auc_ovr(probs, test.labels), 3) == round(card.metrics["auc_macro_ovr"], 3)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} (a copy of RetinaMNIST) is not in this checkout")
def test_served_pipeline_beats_the_majority_class_on_test():
    """A minimum-quality floor through the served pipeline (prepare with the fundus crop, then the card's MC
    dropout, as the worker calls them): test accuracy above always answering the most frequent grade by more
    than two binomial standard errors, and within noise of the card's accuracy."""
    from models import uncertainty
    from models.preprocessing import prepare

    card = load_card(FOLDER)
    model = load_model(card)
    test = load_medmnist(DATA, num_classes=5)["test"]
    x = torch.cat([prepare(image, card) for image in test.images])
    probs = torch.stack([r.probabilities for r in uncertainty.estimate_batch(model, x, card)]).numpy()
    served = accuracy(probs, test.labels)
    majority = np.bincount(test.labels).max() / len(test)
    standard_error = np.sqrt(majority * (1 - majority) / len(test))
    assert served > majority + 2 * standard_error
    assert abs(served - card.metrics["accuracy"]) <= 2 * standard_error


@pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} (a copy of RetinaMNIST) is not in this checkout")
def test_the_cards_served_metrics_are_what_the_served_pipeline_measures():
    """metrics.served (what the reading room quotes) equals a fresh measurement through prepare + MC dropout,
    and its reliability table covers every test image once."""
    from models.recipes.retinamnist import served_metrics

    card = load_card(FOLDER)
    served = served_metrics(load_model(card), card, load_medmnist(DATA, num_classes=5)["test"])
    assert served == card.metrics["served"]
    assert sum(band["n"] for band in served["reliability"]) == served["n"] == 400
    # The most confident answers are right far more often than the least: the probabilities mean something.
    assert served["reliability"][-1]["accuracy"] > served["reliability"][0]["accuracy"] + 0.3
