"""A small DenseNet (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017) for 2D and 3D.

The same code builds both: convolution, batch norm and pooling are chosen by `spatial_dims`, as MONAI does.
Shapes: input (B, in_channels, *spatial) with spatial (H, W) or (D, H, W); output logits (B, num_classes).

Two rules that attribution methods depend on:
- one `nn.ReLU` module per call site, never reused and never a functional `F.relu`: guided backprop,
  deconvnet and DeepLift hook ReLU modules, and a reused or functional ReLU silently changes their maps;
- dropout only in the head (`head.dropout`), so MC dropout can run the backbone once and the head many times.

Module paths (for `target_layer`): `features.stem`, `features.block{i}`, `features.transition{i}`,
`features.norm_final`, `features.relu_final` (the last feature map, the usual GradCAM layer), and
`head.pool`, `head.flatten`, `head.dropout`, `head.classifier`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

# Typed as classes (not as the constructors mypy would join them to), so that isinstance narrows by them.
_CONV: dict[int, type[nn.Conv1d | nn.Conv2d | nn.Conv3d]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_NORM: dict[int, type[nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d]] = {
    1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d
}
_AVG_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_GLOBAL_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


_GLOBAL_MAX_POOL = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}


def global_pool(spatial_dims: int, pool: str) -> nn.Module:
    """Global "avg" or "max" pooling to (B, C, 1, ...); max suits a lesion that may sit anywhere."""
    pools: dict[str, Mapping[int, Callable[[int], nn.Module]]] = {"avg": _GLOBAL_POOL, "max": _GLOBAL_MAX_POOL}
    if pool not in pools:
        raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
    return pools[pool][spatial_dims](1)


def classifier_head(spatial_dims: int, channels: int, num_classes: int, *, dropout: float, pool: str) -> nn.Sequential:
    """pool -> flatten -> dropout -> linear: the head both builders share. Dropout sits only here, so MC
    dropout can run the features once and sample the head (models/uncertainty.py)."""
    head = nn.Sequential()
    head.add_module("pool", global_pool(spatial_dims, pool))
    head.add_module("flatten", nn.Flatten(1))
    head.add_module("dropout", nn.Dropout(dropout))
    head.add_module("classifier", nn.Linear(channels, num_classes))
    return head


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 (bottleneck) then BN-ReLU-Conv3x3; returns the input concatenated with the
    `growth_rate` new channels: (B, C, *S) -> (B, C + growth_rate, *S)."""

    def __init__(self, spatial_dims: int, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        conv, norm = _CONV[spatial_dims], _NORM[spatial_dims]
        inner = bn_size * growth_rate
        self.norm1 = norm(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = conv(in_channels, inner, kernel_size=1, bias=False)
        self.norm2 = norm(inner)
        self.relu2 = nn.ReLU()
        self.conv2 = conv(inner, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv1(self.relu1(self.norm1(x)))
        new = self.conv2(self.relu2(self.norm2(new)))
        return torch.cat([x, new], dim=1)


class DenseBlock(nn.Sequential):
    """`num_layers` dense layers: (B, C, *S) -> (B, C + num_layers * growth_rate, *S)."""

    def __init__(self, spatial_dims: int, num_layers: int, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(spatial_dims, in_channels + i * growth_rate, growth_rate, bn_size)
            self.add_module(f"layer{i + 1}", layer)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1-AvgPool2: (B, C, *S) -> (B, out_channels, *S / 2)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = _NORM[spatial_dims](in_channels)
        self.relu = nn.ReLU()
        self.conv = _CONV[spatial_dims](in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = _AVG_POOL[spatial_dims](kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """DenseNet-BC classifier for small 2D or 3D images.

    Args:
        spatial_dims: 2 for (H, W) images, 3 for (D, H, W) volumes.
        in_channels: C of the input (3 for RGB, 1 for grayscale).
        num_classes: K, the number of logits.
        growth_rate: channels each dense layer adds.
        block_layers: dense layers per block; a transition (halving the spatial size) follows every block
            but the last.
        init_features: channels of the stem convolution.
        bn_size: bottleneck width as a multiple of `growth_rate`.
        compression: fraction of channels a transition keeps.
        stem_stride: stride of the 3x3 stem convolution (1 for 28-px images; 2 for larger inputs).
        dropout: dropout probability before the classifier (the only dropout, for MC dropout).
        pool: global "avg" (default) or "max" pooling in the head.

    Shapes: forward (B, in_channels, *spatial) -> (B, num_classes) logits; `features(x)` ->
    (B, num_features, *spatial'); `head(features)` -> logits (MC dropout samples the head only).
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 2,
        growth_rate: int = 12,
        block_layers: Sequence[int] = (4, 4, 4),
        init_features: int = 24,
        bn_size: int = 4,
        compression: float = 0.5,
        stem_stride: int = 1,
        dropout: float = 0.2,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        self.spatial_dims = spatial_dims
        self.features = nn.Sequential()
        self.features.add_module(
            "stem", _CONV[spatial_dims](in_channels, init_features, 3, stride=stem_stride, padding=1, bias=False)
        )
        channels = init_features
        for i, num_layers in enumerate(block_layers, start=1):
            self.features.add_module(f"block{i}", DenseBlock(spatial_dims, num_layers, channels, growth_rate, bn_size))
            channels += num_layers * growth_rate
            if i < len(block_layers):
                out = int(channels * compression)
                self.features.add_module(f"transition{i}", Transition(spatial_dims, channels, out))
                channels = out
        self.features.add_module("norm_final", _NORM[spatial_dims](channels))
        self.features.add_module("relu_final", nn.ReLU())
        self.head = classifier_head(spatial_dims, channels, num_classes, dropout=dropout, pool=pool)
        self.num_features = channels
        self._init_weights()

    def _init_weights(self) -> None:
        # Named first: inside isinstance(...), mypy types `tuple(...)` as isinstance's argument and does not narrow.
        convs, norms = tuple(_CONV.values()), tuple(_NORM.values())
        for module in self.modules():
            if isinstance(module, convs):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, norms):
                # torch declares no weight or bias on its norms (they are None when affine=False); these are affine.
                assert isinstance(module.weight, torch.Tensor) and isinstance(module.bias, torch.Tensor)
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
