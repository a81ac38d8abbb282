"""Metrics of attribution maps on tiny nets and a linear model with known answers, 2D and 3D."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.explain import metrics
from models.explain.batching import bytes_per_row, memory_budget
from models.explain.deeplift import DeepLift
from tests.models.explain.nets import NETS, random_input


def _linear(channels: int = 1, pixels: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * pixels, 2)).double().eval()


def test_completeness_and_sensitivity_n_of_the_exact_linear_attribution() -> None:
    model = _linear()
    x, target = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 1])
    exact = model[1].weight.detach()[target].view(3, 1, 4, 4) * x
    delta = metrics.completeness_delta(model, x, target, exact)
    assert torch.allclose(delta, torch.zeros(3, dtype=torch.float64), atol=1e-12)
    # Removing any subset drops the logit by exactly the map's sum over it: correlation 1 for every n.
    for n in (1, 5):
        assert torch.allclose(metrics.sensitivity_n(model, x, target, exact, n), torch.ones(3, dtype=torch.float64))
    assert metrics.completeness_delta(model, x, target, exact * 2).abs().min() > 0


def test_deletion_and_insertion_curves() -> None:
    model = _linear()
    x, target = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1])
    exact = model[1].weight.detach()[target].view(2, 1, 4, 4) * x
    good, curve = metrics.deletion_auc(model, x, target, exact, steps=4)
    bad, _ = metrics.deletion_auc(model, x, target, -exact, steps=4)
    assert curve.shape == (2, 5) and torch.all(good < bad)
    with torch.no_grad():
        assert torch.allclose(curve[:, 0], model(x).softmax(1).gather(1, target.view(-1, 1))[:, 0])
    good_in, curve_in = metrics.insertion_auc(model, x, target, exact, steps=4, substrate=0.0)
    bad_in, _ = metrics.insertion_auc(model, x, target, -exact, steps=4, substrate=0.0)
    assert torch.all(good_in > bad_in) and torch.allclose(curve_in[:, -1], curve[:, 0])
    assert torch.allclose(metrics.auc(torch.tensor([[0.0, 1.0]])), torch.tensor([0.5]))


def test_localisation_scores() -> None:
    maps = torch.full((2, 1, 4, 4), -1.0)
    maps[0, 0, 0, 0], maps[0, 0, 3, 3], maps[0, 0, 3, 2], maps[0, 0, 2, 3] = 3.0, 1.0, 2.0, 2.0
    maps[1, 0, 2, 2] = 1.0
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[:, 0, :2, :2] = True
    assert metrics.pointing_game(maps, mask).tolist() == [1.0, 0.0]
    assert metrics.pointing_game(maps, mask, tolerance=1).tolist() == [1.0, 1.0]
    assert metrics.relevance_mass(maps, mask).tolist() == [0.375, 0.0]
    # top 4 (mask size): row 0 holds 1 mask pixel; row 1 ties at -1 break by position: (0,0), (0,1) in the mask
    assert metrics.relevance_rank_accuracy(maps, mask).tolist() == [0.25, 0.5]


def test_repeatability_sparsity_and_spearman() -> None:
    a = torch.randn(2, 1, 3, 3, 3)
    assert torch.allclose(metrics.repeatability([a, 2 * a]), torch.zeros(2), atol=1e-6)
    assert torch.allclose(metrics.repeatability([a, -a]), torch.full((2,), 2.0))
    one_hot = torch.zeros(1, 1, 10)
    one_hot[0, 0, 3] = 1.0
    assert metrics.sparsity(one_hot).item() == pytest.approx(0.9)
    assert metrics.sparsity(torch.ones(1, 1, 10)).item() == pytest.approx(0.0)
    assert torch.allclose(metrics.spearman(a, a.exp()), torch.ones(2, dtype=torch.float64))


def test_randomisation_lowers_the_rank_correlation() -> None:
    model = NETS["resnet"]()
    x, target = random_input(2, size=10), torch.tensor([0, 1])
    whole = metrics.randomisation_rank_correlation(DeepLift, model, x, target)
    assert set(whole) == {"all"} and whole["all"].shape == (2,) and torch.all(whole["all"] < 0.99)
    cascade = metrics.randomisation_rank_correlation(DeepLift, model, x, target, cascading=True)
    assert next(iter(cascade)) == "head.classifier" and len(cascade) > 3
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_cheap_scores_in_sixteen_forwards_and_fast() -> None:
    model = NETS["densenet"](spatial_dims=3)
    x, target = random_input(1, spatial_dims=3, size=8), torch.tensor([2])
    maps = DeepLift(model).explain(x, target)
    bytes_per_row(model, x, backward=False)  # the batch planner's one-row probe, cached from here on
    calls = []
    handle = model.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    try:
        scores = metrics.cheap_scores(model, x, target, maps, method="deeplift")
    finally:
        handle.remove()
    assert calls == [16]
    assert scores["completeness_delta"] < 1e-4
    assert set(scores) == {"deletion_auc", "insertion_auc", "sparsity_gini", "target_probability", "completeness_delta"}
    assert "completeness_delta" not in metrics.cheap_scores(model, x, target, maps, method="occlusion")


def test_cheap_scores_split_into_the_batches_memory_allows_and_agree() -> None:
    # A 1024 px image's 16 perturbed copies must not go through at once when memory is short.
    model = NETS["densenet"](spatial_dims=2)
    x, target = random_input(2, spatial_dims=2, size=16), torch.tensor([1, 0])
    maps = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    whole = metrics.cheap_scores(model, x, target, maps)
    calls = []
    handle = model.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    try:
        with memory_budget(5 * bytes_per_row(model, x[:1], backward=False)):
            split = metrics.cheap_scores(model, x, target, maps)
    finally:
        handle.remove()
    assert max(calls) <= 5 and sum(calls) == 2 * 16
    assert split == pytest.approx(whole, rel=1e-5, abs=1e-7)


def test_the_scores_of_several_maps_share_one_set_of_forwards_and_equal_each_maps_own() -> None:
    model = NETS["densenet"](spatial_dims=2)
    x, target = random_input(1, spatial_dims=2, size=16), torch.tensor([1])
    generator = torch.Generator().manual_seed(1)
    maps = {name: torch.randn(1, 1, 16, 16, generator=generator)
            for name in ("gradient", "integrated_gradients", "gradcam")}
    alone = {name: metrics.cheap_scores(model, x, target, a, method=name) for name, a in maps.items()}
    calls = []
    handle = model.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    try:
        together = metrics.cheap_scores_of_maps(model, x, target, dict(maps))
    finally:
        handle.remove()
    assert sum(calls) == 2 + 3 * 2 * 7  # x and the baseline once, 14 perturbed rows per map
    for name in maps:
        assert together[name] == pytest.approx(alone[name], rel=1e-5, abs=1e-7)
    assert "completeness_delta" in together["integrated_gradients"] and "completeness_delta" not in together["gradcam"]
