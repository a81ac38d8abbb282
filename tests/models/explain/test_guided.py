from __future__ import annotations

import pytest
import torch
from captum.attr import Deconvolution, GuidedGradCam
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from torch import nn

from models.explain.base import ReLURule, gradient_pass, relu_rules
from models.explain.guided import Deconvnet, GuidedBackprop, GuidedGradCAM
from tests.models.explain.nets import NETS, no_hooks_left, random_input, relative_l2, tiny_resnet

TARGET = torch.tensor([0, 2, 3])


@pytest.mark.parametrize("net", sorted(NETS))
def test_equal_to_captum(net):
    model, x = NETS[net](), random_input(3)
    layer = model.get_submodule(model.target_layer)
    cases = [
        (GuidedBackprop(model), CaptumGuidedBackprop(model).attribute(x, TARGET)),
        (Deconvnet(model), Deconvolution(model).attribute(x, TARGET)),
        (GuidedGradCAM(model, model.target_layer),
         GuidedGradCam(model, layer).attribute(x, TARGET, interpolate_mode="bilinear")),
    ]
    for explainer, reference in cases:
        assert relative_l2(explainer.explain_channels(x, TARGET), reference) < 1e-4
    assert no_hooks_left(model)


def test_guided_gradcam_on_a_layer_with_relus_after_it_equals_captum():
    # ReLUs after the layer change its gradient under the guided rule: Grad-CAM then needs its own pass.
    model, x = tiny_resnet(), random_input(3)
    reference = GuidedGradCam(model, model.features.block1).attribute(x, TARGET, interpolate_mode="bilinear")
    assert relative_l2(GuidedGradCAM(model, "features.block1").explain_channels(x, TARGET), reference) < 1e-4
    assert no_hooks_left(model)


def test_rules_differ_from_the_gradient_and_from_each_other():
    model, x = tiny_resnet(), random_input(3)
    plain = gradient_pass(model, x, TARGET).input_grad
    guided, deconv = GuidedBackprop(model).explain_channels(x, TARGET), Deconvnet(model).explain_channels(x, TARGET)
    assert relative_l2(guided, plain) > 0.1 and relative_l2(deconv, guided) > 0.1


def test_one_batch_with_a_rule_per_row_equals_separate_passes():
    model, x = tiny_resnet(), random_input(3)
    rules = torch.tensor([ReLURule.NORMAL] * 3 + [ReLURule.GUIDED] * 3 + [ReLURule.DECONV] * 3)
    mixed = gradient_pass(model, x.repeat(3, 1, 1, 1), TARGET.repeat(3), rules=rules).input_grad
    for i, rule in enumerate(ReLURule):
        alone = gradient_pass(model, x, TARGET, rules=int(rule)).input_grad
        assert torch.allclose(mixed[3 * i:3 * i + 3], alone, rtol=1e-5, atol=1e-7)


def test_interleaved_rules_equal_separate_passes_and_normal_rows_are_exact():
    model, x = tiny_resnet(), random_input(3)
    rules = torch.tensor([ReLURule.GUIDED, ReLURule.NORMAL, ReLURule.DECONV] * 3)
    rows = x.repeat_interleave(3, dim=0)
    mixed = gradient_pass(model, rows, TARGET.repeat_interleave(3), rules=rules).input_grad
    plain = gradient_pass(model, rows, TARGET.repeat_interleave(3)).input_grad
    assert torch.equal(mixed[1::3], plain[1::3])  # autograd's own ReLU backward for the normal rows
    for i, rule in enumerate((ReLURule.GUIDED, ReLURule.NORMAL, ReLURule.DECONV)):
        alone = gradient_pass(model, x, TARGET, rules=int(rule)).input_grad
        assert torch.allclose(mixed[i::3], alone, rtol=1e-5, atol=1e-7)


def test_guided_backprop_on_one_relu_known_values():
    # y = sum(w * relu(x)): the gradient is w * [x > 0]; guided keeps its positive part; deconv is relu(w).
    weight = torch.tensor([[1.0, -2.0, 3.0, -4.0]])
    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(4, 1, bias=False)).eval()
    model[2].weight.data = weight
    x = torch.tensor([[[[1.0, 1.0], [-1.0, -1.0]]]])
    target = torch.tensor([0])
    assert GuidedBackprop(model).explain_channels(x, target).flatten().tolist() == [1.0, 0.0, 0.0, 0.0]
    assert Deconvnet(model).explain_channels(x, target).flatten().tolist() == [1.0, 0.0, 3.0, 0.0]


def test_in_place_relus_are_restored_and_hooks_released_after_an_exception():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    Deconvnet(model).explain(random_input(2), torch.tensor([0, 1]))
    assert model[1].inplace and no_hooks_left(model)
    with pytest.raises(RuntimeError), relu_rules(model, int(ReLURule.GUIDED)):
        model(torch.randn(1, 5, 8, 8))  # wrong channel count
    assert model[1].inplace and no_hooks_left(model)
    with pytest.raises(ValueError, match="no nn.ReLU"):
        GuidedBackprop(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)).eval()).explain(torch.randn(1, 3, 1), TARGET[:1])


def test_3d_shapes():
    model = NETS["densenet"](spatial_dims=3)
    x = random_input(2, spatial_dims=3, size=8)
    target = torch.tensor([1, 2])
    for explainer in (GuidedBackprop(model), Deconvnet(model), GuidedGradCAM(model, model.target_layer)):
        assert explainer.explain(x, target).shape == (2, 1, 8, 8, 8)
    reference = GuidedGradCam(model, model.get_submodule(model.target_layer)).attribute(
        x, target, interpolate_mode="trilinear")
    assert relative_l2(GuidedGradCAM(model, model.target_layer).explain_channels(x, target), reference) < 1e-4
