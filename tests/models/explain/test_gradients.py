from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import Saliency as CaptumSaliency

from models.explain.base import gradient_pass
from models.explain.gradients import Gradient, InputXGradient, Saliency
from tests.models.explain.nets import NETS, no_hooks_left, random_input, relative_l2, tiny_densenet

TARGET = torch.tensor([0, 2, 3])


@pytest.mark.parametrize("net", sorted(NETS))
def test_equal_to_captum(net):
    model, x = NETS[net](), random_input(3)
    cases = [
        (Gradient, CaptumSaliency(model).attribute(x, TARGET, abs=False)),
        (Saliency, CaptumSaliency(model).attribute(x, TARGET)),
        (InputXGradient, CaptumInputXGradient(model).attribute(x, TARGET)),
    ]
    for cls, reference in cases:
        channels = cls(model).explain_channels(x, TARGET)
        assert channels.shape == x.shape and not channels.requires_grad
        assert relative_l2(channels, reference) < 1e-4
        assert torch.equal(cls(model).explain(x, TARGET), channels.sum(1, keepdim=True))


def test_input_x_gradient_sums_to_the_logit_of_a_linear_model():
    # Known value: for a bias-free linear model, sum(x * grad) is exactly the logit.
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2, bias=False)).eval()
    x = torch.randn(2, 3, 4, 4)
    target = torch.tensor([1, 0])
    maps = InputXGradient(model).explain(x, target)
    assert torch.allclose(maps.flatten(1).sum(1), model(x).gather(1, target.view(-1, 1)).squeeze(1), atol=1e-5)


def test_3d_shapes_and_saliency_sign():
    model, x = tiny_densenet(spatial_dims=3), random_input(2, spatial_dims=3, size=8)
    target = torch.tensor([1, 3])
    for cls in (Gradient, Saliency, InputXGradient):
        assert cls(model).explain(x, target).shape == (2, 1, 8, 8, 8)
    assert (Saliency(model).explain(x, target) >= 0).all()


def test_rows_are_independent_and_parameters_untouched():
    model, x = tiny_densenet(), random_input(3)
    together = Gradient(model).explain(x, TARGET)
    alone = Gradient(model).explain(x[1:2], TARGET[1:2])
    assert torch.allclose(together[1:2], alone, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_no_hook_left_after_an_exception():
    model = tiny_densenet()
    with pytest.raises(RuntimeError):
        gradient_pass(model, random_input(1), torch.tensor([99]), layer=model.features.relu_final)
    assert no_hooks_left(model)
    with pytest.raises(ValueError, match="target must be"):
        Gradient(model).explain(random_input(2), torch.tensor([0]))
