"""MC dropout, ensembles and TTA on tiny nets with known answers (models.uncertainty)."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch
from torch import nn

from models import uncertainty
from models.card import UncertaintySpec, load_card
from models.networks import build_network
from models.registry import load_model

SMALL = {"growth_rate": 4, "block_layers": [2, 2], "init_features": 8, "num_classes": 3}


def test_statistics_of_two_confident_samples_that_disagree():
    # p1 = [1, 0], p2 = [0, 1]: the mean is uniform (H = ln 2), each sample is certain (H = 0), so all
    # the uncertainty is epistemic: MI = ln 2; the top class's probability is 1 or 0: spread 0.5.
    samples = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    stats = uncertainty.statistics(samples)
    assert stats["probabilities"].tolist() == [[0.5, 0.5]]
    assert stats["predictive_entropy"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert stats["mutual_information"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert stats["mc_spread"].item() == pytest.approx(0.5)


def test_statistics_of_agreeing_samples_have_no_epistemic_part():
    samples = torch.tensor([[[0.25, 0.25, 0.5]]] * 5)
    stats = uncertainty.statistics(samples)
    expected = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    assert stats["predictive_entropy"].item() == pytest.approx(expected, abs=1e-6)
    assert stats["mutual_information"].item() == pytest.approx(0.0, abs=1e-6)
    assert stats["mc_spread"].item() == 0.0


def test_multilabel_statistics_sum_binary_entropies():
    # Two labels; label 0 flips between 0.9 and 0.1 (mean 0.5), label 1 stays at 0.5.
    samples = torch.tensor([[[0.9, 0.5]], [[0.1, 0.5]]])
    stats = uncertainty.statistics(samples, multilabel=True)
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    assert stats["predictive_entropy"].item() == pytest.approx(2 * math.log(2), abs=1e-5)
    assert stats["mutual_information"].item() == pytest.approx(math.log(2) - h(0.9), abs=1e-5)


def test_zero_dropout_gives_zero_mutual_information():
    model = build_network("densenet", **SMALL, dropout=0.0).eval()
    logits = uncertainty.mc_dropout_logits(model, torch.randn(2, 3, 16, 16), 8)
    stats = uncertainty.statistics(torch.softmax(logits, -1))
    assert torch.equal(logits[0], logits[-1])
    assert torch.all(stats["mutual_information"] < 1e-12) and torch.all(stats["mc_spread"] < 1e-12)


@pytest.mark.parametrize(
    ("name", "params"), [("densenet", SMALL), ("resnet", {"num_classes": 3, "widths": [8, 16], "blocks": [1, 2]})]
)
@pytest.mark.parametrize("spatial", [(16, 16), (6, 8, 8)])
def test_head_only_mc_equals_full_passes_with_the_same_masks(name, params, spatial):
    model = build_network(name, spatial_dims=len(spatial), in_channels=1, dropout=0.5, **{**params}).eval()
    x = torch.randn(3, 1, *spatial)
    assert uncertainty.has_head_split(model)
    head_only = uncertainty.mc_dropout_logits(model, x, 10, seed=7, head_only=True)
    full = uncertainty.mc_dropout_logits(model, x, 10, seed=7, head_only=False)
    assert torch.allclose(head_only, full, atol=1e-6)
    assert not torch.allclose(head_only[0], head_only[1])  # dropout was on
    assert not model.training and not model.head.dropout.training  # and is off again


def test_head_only_mc_is_much_cheaper():
    model = build_network("densenet", growth_rate=12, block_layers=[6, 6, 6], num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    uncertainty.mc_dropout_logits(model, x, 2)  # warm up

    def best(head_only: bool) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            uncertainty.mc_dropout_logits(model, x, 20, head_only=head_only)
            times.append(time.perf_counter() - start)
        return min(times)

    assert best(False) / best(True) > 4  # about 15-20x alone; machines here are shared


def _card(make_model_folder, **overrides):
    return load_card(make_model_folder(**overrides))


def test_estimate_mc_dropout_is_seeded_calibrated_and_refers(make_model_folder):
    card = _card(make_model_folder, uncertainty={"method": "mc_dropout", "samples": 12}, uncertainty_threshold=0.0)
    model = load_model(card)
    x = torch.randn(1, 3, 16, 16)
    first, second = uncertainty.estimate(model, x, card), uncertainty.estimate(model, x, card)
    assert torch.equal(first.probabilities, second.probabilities)
    assert first.mutual_information == second.mutual_information
    assert first.probabilities.shape == (3,) and first.probabilities.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert first.n_samples == 12 and first.method == "mc_dropout" and first.referral
    assert 0 <= first.mutual_information <= first.predictive_entropy <= math.log(3) + 1e-6
    hot = uncertainty.estimate(model, x, dataclasses.replace(card, calibration_temperature=1e4))
    assert hot.predictive_entropy == pytest.approx(math.log(3), abs=1e-4)
    assert not uncertainty.estimate(model, x, dataclasses.replace(card, uncertainty_threshold=None)).referral
    with pytest.raises(ValueError, match="one input"):
        uncertainty.estimate(model, torch.randn(2, 3, 16, 16), card)


def test_estimate_none_is_one_plain_pass(make_model_folder):
    card = _card(make_model_folder)
    model = load_model(card)
    x = torch.randn(1, 3, 16, 16)
    result = uncertainty.estimate(model, x, card)
    with torch.no_grad():
        expected = torch.softmax(model(x) / card.calibration_temperature, 1)[0]
    assert torch.allclose(result.probabilities, expected, atol=1e-6)
    assert result.n_samples == 1 and result.mutual_information == 0.0 and result.mc_spread == 0.0


class _Symmetric(nn.Module):
    """Logits from the mean and the left-right difference of the image: flip-invariant only in class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        half = spatial[-1] // 2
        diff = x[..., :half].mean(dim=tuple(range(1, x.dim()))) - x[..., half:].mean(dim=tuple(range(1, x.dim())))
        return torch.stack([x.mean(dim=tuple(range(1, x.dim()))), 10 * diff], 1)


def test_tta_disagreement_on_a_net_that_flips_see(make_model_folder):
    card = dataclasses.replace(
        _card(make_model_folder, labels=["a", "b"]), uncertainty=UncertaintySpec(method="tta", flips=((), (-1,)))
    )
    symmetric = torch.ones(1, 3, 4, 4)
    result = uncertainty.estimate(_Symmetric(), symmetric, card)
    assert result.mutual_information == pytest.approx(0.0, abs=1e-6) and result.n_samples == 2
    lopsided = torch.zeros(1, 3, 4, 4)
    lopsided[..., :2] = 1.0
    assert uncertainty.estimate(_Symmetric(), lopsided, card).mutual_information > 0.1


def test_ensemble_of_identical_members_has_no_disagreement(make_model_folder):
    card = _card(make_model_folder)
    model = load_model(card)
    ensemble = dataclasses.replace(card, uncertainty=UncertaintySpec(method="ensemble", members=("a", "b")))
    x = torch.randn(1, 3, 16, 16)
    result = uncertainty.estimate(model, x, ensemble, members=[model, model])
    assert result.n_samples == 2 and result.mutual_information == pytest.approx(0.0, abs=1e-6)
    other = build_network("densenet", **{**SMALL, "dropout": 0.0}).eval()
    assert uncertainty.estimate(model, x, ensemble, members=[model, other]).mutual_information > 0
    with pytest.raises(ValueError, match="load_members"):
        uncertainty.estimate(model, x, ensemble)


@pytest.mark.parametrize("head_only", [True, False])
def test_per_row_mc_dropout_gives_each_row_its_own_masks_as_if_alone(head_only):
    model = build_network("densenet", **SMALL, dropout=0.5).eval()
    x = torch.randn(3, 3, 16, 16)
    rows = uncertainty.mc_dropout_logits(model, x, 10, seed=3, head_only=head_only, per_row=True)
    alone = torch.cat(
        [uncertainty.mc_dropout_logits(model, x[i : i + 1], 10, seed=3, head_only=head_only) for i in range(3)], dim=1
    )
    # Same masks; only the backbone's batched convolutions may round differently from batch-1 ones.
    assert rows.shape == (10, 3, 3) and torch.allclose(rows, alone, rtol=1e-5, atol=1e-6)
    # Without per_row, a batch draws one set of masks for all rows: not what each row alone gets (why
    # estimate_batch, which the worker uses for a batch of jobs, samples per row).
    batched = uncertainty.mc_dropout_logits(model, x, 10, seed=3, head_only=head_only)
    assert not torch.allclose(batched, alone, rtol=1e-3, atol=1e-4)


def test_estimate_batch_equals_estimate_of_each_input_alone(make_model_folder):
    card = _card(make_model_folder, uncertainty={"method": "mc_dropout", "samples": 12}, uncertainty_threshold=0.9)
    model = load_model(card)
    x = torch.randn(4, 3, 16, 16)
    batch = uncertainty.estimate_batch(model, x, card)
    for i, result in enumerate(batch):
        alone = uncertainty.estimate(model, x[i : i + 1], card)
        assert torch.allclose(result.probabilities, alone.probabilities, rtol=1e-5, atol=1e-7)
        for field in ("predictive_entropy", "mutual_information", "mc_spread"):
            assert getattr(result, field) == pytest.approx(getattr(alone, field), rel=1e-4, abs=1e-7)
        assert (result.referral, result.n_samples) == (alone.referral, 12)
    assert batch[0].mutual_information > 0  # dropout was on: the comparison is not between plain passes


def test_mc_dropout_on_a_torchscript_model(make_model_folder):
    card = _card(make_model_folder, uncertainty={"method": "mc_dropout", "samples": 6})
    eager = load_model(card)
    scripted = torch.jit.script(eager)
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(
        uncertainty.estimate(scripted, x, card).probabilities,
        uncertainty.estimate(eager, x, card).probabilities,
        atol=1e-5,
    )


def test_referral_threshold_refers_the_requested_fraction():
    entropies = torch.arange(100, dtype=torch.float32)
    threshold = uncertainty.referral_threshold(entropies, 0.2)
    assert int((entropies > threshold).sum()) == 20
    with pytest.raises(ValueError):
        uncertainty.referral_threshold(entropies, 1.0)
