"""Small random test nets for the explainer tests, 2D and 3D, in eval mode.

Both follow the rules attribution methods depend on: one `nn.ReLU` module per call site (never reused, no
functional `F.relu`), and a head of global average pooling + `nn.Linear` (so CAM applies). Batch-norm
statistics are made non-trivial, so eval mode is not the identity. Each net has a `target_layer` attribute,
the dotted path of its last feature map (the usual GradCAM layer).

API (stable, imported by other explainer tests):
    tiny_densenet(spatial_dims=2, in_channels=3, num_classes=4, seed=0, stem_stride=1) -> nn.Module
    tiny_resnet(spatial_dims=2, in_channels=3, num_classes=4, seed=0) -> nn.Module
    NETS = {"densenet": tiny_densenet, "resnet": tiny_resnet}
    random_input(batch, in_channels=3, spatial_dims=2, size=12, seed=1) -> (B, C, *spatial) tensor
    relative_l2(ours, reference) -> float;  no_hooks_left(model) -> bool
Shapes: forward (B, in_channels, *spatial) -> (B, num_classes); spatial sizes >= 8 work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from models.networks.densenet import DenseNet

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_GLOBAL_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + shortcut, then ReLU (a module of its own): (B, C, *S) -> (B, out, *S / stride)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        conv, norm = _CONV[spatial_dims], _NORM[spatial_dims]
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(conv(in_channels, out_channels, 1, stride=stride, bias=False),
                                          norm(out_channels))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.relu1(self.norm1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """stem conv-BN-ReLU, two residual blocks (the second halves the size), global average pool, linear.

    Module paths: `features.stem`, `features.stem_norm`, `features.stem_relu`, `features.block1`,
    `features.block2` (its `relu2` is the last feature map), `head.pool`, `head.flatten`, `head.classifier`.
    """

    def __init__(self, *, spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 4,
                 width: int = 8) -> None:
        super().__init__()
        conv, norm = _CONV[spatial_dims], _NORM[spatial_dims]
        self.features = nn.Sequential()
        self.features.add_module("stem", conv(in_channels, width, 3, padding=1, bias=False))
        self.features.add_module("stem_norm", norm(width))
        self.features.add_module("stem_relu", nn.ReLU())
        self.features.add_module("block1", BasicBlock(spatial_dims, width, width))
        self.features.add_module("block2", BasicBlock(spatial_dims, width, 2 * width, stride=2))
        self.head = nn.Sequential()
        self.head.add_module("pool", _GLOBAL_POOL[spatial_dims](1))
        self.head.add_module("flatten", nn.Flatten(1))
        self.head.add_module("classifier", nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _settle(model: nn.Module, spatial_dims: int, in_channels: int) -> nn.Module:
    # A few training-mode batches give batch norm non-trivial running statistics.
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(6, in_channels, *([10] * spatial_dims)) * 1.5 + 0.3)
    return model.eval()


def tiny_densenet(spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 4, seed: int = 0,
                  stem_stride: int = 1) -> nn.Module:
    """A random two-block DenseNet (models.networks.densenet) in eval mode; `target_layer` =
    "features.relu_final". `stem_stride` 4 makes large images (1024 px) cheap enough for a test."""
    torch.manual_seed(seed)
    model = DenseNet(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, growth_rate=4,
                     block_layers=(2, 2), init_features=8, dropout=0.0, stem_stride=stem_stride)
    with torch.no_grad():  # a non-zero bias, so logits are not plain linear in the features' mean
        model.head.classifier.bias.normal_(0.0, 0.1)
    model = _settle(model, spatial_dims, in_channels)
    model.target_layer = "features.relu_final"
    return model


def tiny_resnet(spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 4, seed: int = 0) -> nn.Module:
    """A random two-block residual net (`TinyResNet`) in eval mode; `target_layer` = "features.block2"."""
    torch.manual_seed(seed)
    model = _settle(TinyResNet(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes),
                    spatial_dims, in_channels)
    model.target_layer = "features.block2"
    return model


NETS: dict[str, Callable[..., nn.Module]] = {"densenet": tiny_densenet, "resnet": tiny_resnet}


def random_input(batch: int, in_channels: int = 3, spatial_dims: int = 2, size: int = 12,
                 seed: int = 1) -> torch.Tensor:
    """A seeded (B, C, *[size] * spatial_dims) standard-normal input."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, in_channels, *([size] * spatial_dims), generator=generator)


def relative_l2(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """||ours - reference|| / ||reference||; fails if the reference is all zeros (a vacuous comparison)."""
    assert reference.norm() > 0, "the reference map is all zeros"
    return float((ours.detach() - reference.detach()).norm() / reference.detach().norm())


def no_hooks_left(model: nn.Module) -> bool:
    """True if no module of `model` holds a forward, pre-forward or backward hook."""
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
