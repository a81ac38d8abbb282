"""A small ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) for 2D and 3D.

The same code builds both: convolution, batch norm and pooling are chosen by `spatial_dims`, as MONAI does,
and nothing depends on the number of spatial axes (`b, c, *spatial = x.shape`).
Shapes: input (B, in_channels, *spatial) with spatial (H, W) or (D, H, W); output logits (B, num_classes).

The rules attribution and uncertainty methods depend on, as in `models.networks.densenet`:
- one `nn.ReLU` module per call site (`relu1`, `relu2` inside each block, `relu_out` after the residual sum),
  never reused and never a functional relu;
- dropout only in the head (`head.dropout`), so MC dropout can run `features` once and `head` many times.

Module paths (for `target_layer`): `features.stem`, `features.stem_norm`, `features.stem_relu`,
`features.stage{i}.block{j}` (with `.relu_out` as each block's output), `features.stage{N}` (the last feature
map, the usual GradCAM layer), and `head.pool`, `head.flatten`, `head.dropout`, `head.classifier`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.networks.densenet import _CONV, _NORM, _check_dims, classifier_head

_MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


class BasicBlock(nn.Module):
    """Conv3x3-BN-ReLU-Conv3x3-BN, plus the input (projected by a 1x1 conv when the shape changes), then
    ReLU: (B, C_in, *S) -> (B, C_out, *S / stride)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int) -> None:
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
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu_out(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet classifier (basic blocks) for small 2D or 3D images.

    Args:
        spatial_dims: 2 for (H, W) images, 3 for (D, H, W) volumes.
        in_channels: C of the input (3 for RGB, 1 for grayscale).
        num_classes: K, the number of logits.
        widths: channels of each stage; every stage after the first halves the spatial size.
        blocks: basic blocks per stage (one number per stage).
        stem_stride: stride of the 3x3 stem convolution (1 for 28-px images; 2 for larger inputs).
        stem_pool: a 3x3 stride-2 max pool after the stem (for large inputs).
        dropout: dropout probability before the classifier (the only dropout, for MC dropout).
        pool: "avg" (global average) or "max" (global max: a lesion anywhere in a large image counts, as
            in multiple-instance learning).

    Shapes: forward (B, in_channels, *spatial) -> (B, num_classes) logits; `features(x)` ->
    (B, widths[-1], *spatial'); `head(features)` -> logits.
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 2,
        widths: Sequence[int] = (16, 32, 64),
        blocks: Sequence[int] = (1, 1, 1),
        stem_stride: int = 1,
        stem_pool: bool = False,
        dropout: float = 0.2,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths and blocks must have one entry per stage, got {widths} and {blocks}")
        self.spatial_dims = spatial_dims
        self.features = nn.Sequential()
        self.features.add_module(
            "stem", _CONV[spatial_dims](in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False))
        self.features.add_module("stem_norm", _NORM[spatial_dims](widths[0]))
        self.features.add_module("stem_relu", nn.ReLU())
        if stem_pool:
            self.features.add_module("stem_pool", _MAX_POOL[spatial_dims](3, stride=2, padding=1))
        channels = widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True), start=1):
            stage = nn.Sequential()
            for j in range(count):
                stride = 2 if i > 1 and j == 0 else 1
                stage.add_module(f"block{j + 1}", BasicBlock(spatial_dims, channels, width, stride))
                channels = width
            self.features.add_module(f"stage{i}", stage)
        self.head = classifier_head(spatial_dims, channels, num_classes, dropout=dropout, pool=pool)
        self.num_features = channels
        self._init_weights()

    def _init_weights(self) -> None:
        # Named first: inside isinstance(...), mypy types `tuple(...)` as isinstance's argument and does not narrow.
        convs, norms = tuple(_CONV.values()), tuple(_NORM.values())
        for module in self.modules():
            if isinstance(module, convs):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, norms):
                # torch declares no weight or bias on its norms (they are None when affine=False); these are affine.
                assert isinstance(module.weight, torch.Tensor) and isinstance(module.bias, torch.Tensor)
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        # Zero the last norm of each residual branch: each block starts as the identity (Goyal et al. 2017).
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.norm2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
