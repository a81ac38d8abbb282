from __future__ import annotations

import numpy as np
import pytest
import torch

from models import evaluation
from models.calibration import fit_temperature
from models.datasets import window_grayscale


def _overconfident(seed: int, n: int = 3000) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, 4, generator=generator) * 1.5
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator).squeeze(1)
    return true_logits * 2.5, labels  # the model is 2.5x too sure


def _nll_ece(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    probs, y = torch.softmax(logits, 1).numpy(), labels.numpy()
    return evaluation.negative_log_likelihood(probs, y), evaluation.expected_calibration_error(probs, y)


def test_temperature_fitted_on_val_lowers_nll_and_ece_on_val_and_on_new_data():
    val_logits, val_labels = _overconfident(0)
    temperature = fit_temperature(val_logits, val_labels)
    assert temperature == pytest.approx(2.5, rel=0.15)
    for logits, labels in (_overconfident(0), _overconfident(1)):
        nll, ece = _nll_ece(logits, labels)
        nll_t, ece_t = _nll_ece(logits / temperature, labels)
        assert nll_t < nll and ece_t < ece / 2


def test_multilabel_temperature_recovers_a_known_scale():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(5000, 3, generator=generator) * 2
    labels = torch.bernoulli(torch.sigmoid(true_logits), generator=generator)
    assert fit_temperature(true_logits * 2, labels, multilabel=True) == pytest.approx(2.0, rel=0.1)


def test_risk_coverage_on_known_values():
    curve = evaluation.risk_coverage(np.array([0.4, 0.1, 0.3, 0.2]), np.array([1, 0, 1, 0]))
    assert curve["coverage"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve["risk"] == pytest.approx([0.0, 0.0, 0.0, 1 / 3, 0.5], abs=1e-6)
    assert curve["referred"] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert curve["aurc"] == pytest.approx(0.25 * (1 / 6) + 0.25 * (5 / 12), abs=1e-6)
    assert evaluation.risk_at_coverage(curve, 0.75) == pytest.approx(1 / 3, abs=1e-6)


def test_multilabel_report_skips_labels_with_one_class():
    probs = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.9]])
    labels = np.array([[1, 1], [0, 1], [1, 1]])
    report = evaluation.multilabel_report(probs, labels, ["ex", "he"])
    assert report == {"auc_ex": 1.0, "auc_he": None, "auc_macro": 1.0}


def test_window_grayscale_fixed_percentile_and_monochrome1():
    ramp = np.tile(np.arange(101, dtype=np.float32), (3, 1))
    fixed = window_grayscale(ramp, {"center": 50, "width": 20})
    assert fixed[0, 40] == 0.0 and fixed[0, 50] == pytest.approx(0.5) and fixed[0, 60] == 1.0
    spiky = ramp.copy()
    spiky[0, 0] = -1e6  # a dead pixel does not stretch a percentile window
    assert window_grayscale(spiky, "percentile")[1, 50] == pytest.approx(0.5, abs=0.02)
    inverted = window_grayscale(ramp, "minmax", photometric="MONOCHROME1", invert_monochrome1=True)
    assert inverted[0, 0] == 1.0 and inverted[0, 100] == 0.0
    assert window_grayscale(ramp, "minmax", photometric="MONOCHROME1")[0, 0] == 0.0
