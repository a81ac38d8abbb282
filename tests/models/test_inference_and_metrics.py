from __future__ import annotations

import numpy as np
import pytest
import torch

from models import evaluation
from models.calibration import fit_temperature
from models.inference import predict


def test_predict_probabilities_and_temperature():
    model = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    probs = predict(model, x)
    assert probs.shape == (5, 3) and not probs.requires_grad
    assert torch.allclose(probs.sum(1), torch.ones(5))
    hot = predict(model, x, temperature=2.0)
    assert torch.allclose(hot, torch.softmax(model(x).detach() / 2.0, 1))
    with pytest.raises(ValueError):
        predict(model, x, temperature=0.0)


def test_fit_temperature_recovers_a_known_scale():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 5, generator=generator) * 2
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator).squeeze(1)
    assert fit_temperature(true_logits * 3, labels) == pytest.approx(3.0, rel=0.1)


def test_metrics_on_known_values():
    labels = np.array([0, 0, 1, 1])
    assert evaluation.binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), labels == 1) == pytest.approx(0.75)
    assert evaluation.binary_auc(np.array([0.5, 0.5, 0.5, 0.5]), labels == 1) == pytest.approx(0.5)
    assert evaluation.quadratic_kappa(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]), 4) == pytest.approx(1.0)
    # Observed [[1,1],[0,2]], expected [[0.5,1.5],[0.5,1.5]]: kappa = 1 - 1 / 2.
    assert evaluation.quadratic_kappa(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), 2) == pytest.approx(0.5)
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    # Bins: 0.9 (right), 0.6 (wrong), 0.8 (right), 0.7 (right): each its own bin.
    assert evaluation.expected_calibration_error(probs, np.array([0, 1, 1, 1])) == pytest.approx(
        (0.1 + 0.6 + 0.2 + 0.3) / 4)
    assert evaluation.accuracy(probs, np.array([0, 1, 1, 1])) == 0.75
