from __future__ import annotations

import copy

import pytest
import torch

from models.explain.gradients import Gradient
from models.explain.noise_tunnel import SmoothGrad
from models.explain.replicas import average_map, replica_repeatability
from tests.models.explain.nets import random_input, tiny_resnet


def test_identical_replicas_explain_identically():
    model = tiny_resnet(seed=0)
    x, target = random_input(3, size=12), torch.tensor([0, 1, 2])
    same = replica_repeatability(Gradient, [model, copy.deepcopy(model)], x, target)
    assert same == pytest.approx({"replica_l2_per_image": 0.0, "replica_l2_average_map": 0.0}, abs=1e-6)


def test_differently_seeded_replicas_are_further_apart_than_a_slightly_perturbed_copy():
    model, other = tiny_resnet(seed=0), tiny_resnet(seed=1)
    nudged = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in nudged.parameters():
            parameter.add_(1e-3 * torch.randn_like(parameter))
    x, target = random_input(4, size=12), torch.tensor([0, 1, 2, 3])
    close = replica_repeatability(Gradient, [model, nudged], x, target)
    far = replica_repeatability(Gradient, [model, other], x, target)
    assert 0 < close["replica_l2_per_image"] < far["replica_l2_per_image"] <= 2
    assert 0 < close["replica_l2_average_map"] < far["replica_l2_average_map"] <= 2


def test_a_stochastic_method_is_seeded_alike_so_only_the_models_differ():
    model = tiny_resnet(seed=0)
    x, target = random_input(2, size=12), torch.tensor([1, 2])

    def smoothgrad(m):
        return SmoothGrad(m, n_samples=4, seed=7)

    assert replica_repeatability(smoothgrad, [model, copy.deepcopy(model)], x, target)["replica_l2_per_image"] < 1e-6


def test_average_map_weighs_every_image_alike_and_ignores_sign():
    maps = torch.zeros(2, 1, 2, 2)
    maps[0, 0, 0, 0] = -100.0  # a strong negative map ...
    maps[1, 0, 1, 1] = 0.01  # ... and a weak positive one count the same
    assert torch.allclose(average_map(maps)[0, 0], torch.tensor([[0.5, 0.0], [0.0, 0.5]]))


def test_one_model_is_refused():
    with pytest.raises(ValueError, match="two replicas"):
        replica_repeatability(Gradient, [tiny_resnet()], random_input(1), torch.tensor([0]))
