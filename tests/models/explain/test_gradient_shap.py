from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import GradientShap as CaptumGradientShap
from torch import nn

from models.explain.gradient_shap import Draws, GradientShap
from tests.models.explain.nets import NETS, random_input, relative_l2

TARGET = torch.tensor([0, 2, 3])


@pytest.mark.parametrize("net", sorted(NETS))
def test_equal_to_captum_with_the_same_draws(net):
    model, x, baselines, samples = NETS[net](), random_input(3), random_input(5, seed=9), 6
    # Captum draws the baseline indices, then the path points, from numpy's global generator.
    np.random.seed(3)
    index, alpha = np.random.choice(5, samples * 3), np.random.uniform(0.0, 1.0, samples * 3)
    draws = Draws(index=torch.tensor(index).view(3, samples), alpha=torch.tensor(alpha).float().view(3, samples))
    ours = GradientShap(model, baselines, n_samples=samples, max_rows=5).explain_channels(x, TARGET, draws=draws)
    np.random.seed(3)
    reference = CaptumGradientShap(model).attribute(x, baselines, n_samples=samples, target=TARGET)
    assert relative_l2(ours, reference) < 1e-4


def test_linear_model_known_value_and_repeatable():
    # For a linear model every draw gives (x - b) * w: the mean over baselines.
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()
    x, baselines = torch.randn(1, 3, 2, 2), torch.randn(4, 3, 2, 2)
    explainer = GradientShap(model, baselines, n_samples=8, seed=1)
    maps = explainer.explain_channels(x, torch.tensor([1]))
    generator = torch.Generator().manual_seed(1)
    chosen = baselines[explainer.draw(x, 4, generator).index[0]]
    expected = ((x - chosen) * model[1].weight.detach()[1].view(3, 2, 2)).mean(0, keepdim=True)
    assert torch.allclose(maps, expected, atol=1e-6)
    assert torch.equal(maps, explainer.explain_channels(x, torch.tensor([1])))


def test_default_baselines_3d():
    model = NETS["densenet"](spatial_dims=3)
    x = random_input(2, spatial_dims=3, size=8)
    assert GradientShap(model, n_samples=3).explain(x, TARGET[:2]).shape == (2, 1, 8, 8, 8)
