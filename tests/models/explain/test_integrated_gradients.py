from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import LayerIntegratedGradients
from torch import nn

from models.explain.integrated_gradients import (
    ExpressiveGradients,
    IntegratedGradients,
    gaussian_blur,
    make_baseline,
    path_weights,
)
from tests.models.explain.nets import NETS, no_hooks_left, random_input, relative_l2, tiny_densenet

TARGET = torch.tensor([0, 2, 3])


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_trapezoid"])
def test_equal_to_captum_with_the_same_steps(net, method):
    model, x = NETS[net](), random_input(3)
    baseline = torch.full_like(x, 0.2)
    ig = IntegratedGradients(model, n_steps=12, method=method, baseline=0.2, max_rows=7)  # 36 rows in 6 batches
    ours = ig.explain_channels(x, TARGET)
    reference, delta = CaptumIntegratedGradients(model).attribute(x, baseline, TARGET, n_steps=12, method=method,
                                                                 return_convergence_delta=True)
    if method == "riemann_trapezoid":
        reference = reference * 12 / 11  # Captum's trapezoid weights sum to (n - 1) / n (path_weights)
    else:
        assert torch.allclose(ig.last_delta, delta, atol=1e-5)
    assert relative_l2(ours, reference) < 1e-4


def test_completeness_on_a_linear_model_and_the_delta():
    # Known value: for a linear model IG is exactly (x - b) * w, and the delta is 0 for every rule.
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()
    x = torch.randn(2, 3, 2, 2)
    for method in ("gausslegendre", "riemann_trapezoid", "riemann_left"):
        ig = IntegratedGradients(model, n_steps=5, method=method)
        maps = ig.explain_channels(x, torch.tensor([1, 0]))
        expected = x * model[1].weight.detach()[torch.tensor([1, 0])].view(2, 3, 2, 2)
        assert torch.allclose(maps, expected, atol=1e-6)
        assert ig.last_delta.abs().max() < 1e-5
    assert path_weights("riemann_trapezoid", 5)[1] == [0.125, 0.25, 0.25, 0.25, 0.125]


def test_baselines():
    x = random_input(2)
    assert torch.equal(make_baseline(x, "zeros"), torch.zeros_like(x))
    assert torch.equal(make_baseline(x, 0.5), torch.full_like(x, 0.5))
    assert torch.equal(make_baseline(x, torch.ones(1, 3, 1, 1)), torch.ones_like(x))
    blurred = make_baseline(x, "blur", sigma=1.0)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    assert torch.allclose(gaussian_blur(torch.ones(1, 1, 5, 6, 7), 2.0), torch.ones(1, 1, 5, 6, 7))
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline(x, "mean")


def test_blur_baseline_delta_small_with_many_steps():
    model, x = tiny_densenet(), random_input(3)
    ig = IntegratedGradients(model, n_steps=64, baseline="blur")
    ig.explain(x, TARGET)
    assert ig.last_delta.abs().max() < 0.02


@pytest.mark.parametrize("net", sorted(NETS))
def test_expressive_gradients_parts(net):
    model, x = NETS[net](), random_input(3)
    eg = ExpressiveGradients(model, model.target_layer, n_steps=10, layer_weight=0.25)
    maps = eg.explain(x, TARGET)
    input_ig = IntegratedGradients(model, n_steps=10).explain(x, TARGET)
    layer = model.get_submodule(model.target_layer)
    layer_ig = LayerIntegratedGradients(model, layer).attribute(x, target=TARGET, n_steps=10).sum(1, keepdim=True)
    assert relative_l2(eg.last_layer_map, layer_ig) < 1e-4
    # Both parts carry the same total (f(x) - f(b) up to the delta), so EG does too.
    assert torch.allclose(maps.flatten(1).sum(1), input_ig.flatten(1).sum(1), rtol=0.05, atol=0.02)
    assert relative_l2(maps, input_ig) > 0.01 and no_hooks_left(model)


def test_3d_shapes():
    model, x = NETS["resnet"](spatial_dims=3), random_input(2, spatial_dims=3, size=8)
    assert IntegratedGradients(model, n_steps=4).explain(x, TARGET[:2]).shape == (2, 1, 8, 8, 8)
    assert ExpressiveGradients(model, model.target_layer, n_steps=4).explain(x, TARGET[:2]).shape == (2, 1, 8, 8, 8)


@pytest.mark.parametrize("layer", ["features.block1", "features.stem_relu"])
def test_expressive_gradients_layer_map_adds_up_with_nonlinear_layers_after_it(layer):
    # Nonlinear blocks follow these layers: the layer's path must run between A(b) and A(x) in its own space
    # (Captum's LayerIntegratedGradients) for the map to add up to f(x) - f(b). Taking the gradient at
    # A(b + a (x - b)) instead was off by 0.05-0.45.
    model, x = NETS["resnet"]().double(), random_input(3).double()
    eg = ExpressiveGradients(model, layer, n_steps=64)
    eg.explain(x, TARGET)
    module = model.get_submodule(layer)
    expected, captum_delta = LayerIntegratedGradients(model, module).attribute(
        x, target=TARGET, n_steps=64, return_convergence_delta=True)
    assert relative_l2(eg.last_layer_map, expected.sum(1, keepdim=True)) < 1e-6
    # What is left is quadrature error over the ReLU kinks: Captum's own delta, and small against f(x) - f(b).
    assert torch.allclose(eg.last_layer_delta, captum_delta, atol=1e-9)
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, TARGET.view(-1, 1))[:, 0]
    assert eg.last_layer_delta.abs().max() < 0.01 * delta.abs().max()
    assert no_hooks_left(model)
