"""DeepLabv3+ with an Xception-style encoder in PyTorch (DeepCAM, REFERENCE.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from validation.config import ClimateConfig


class SeparableConv(nn.Module):
    """Depthwise 3x3 (optionally dilated/strided) + pointwise 1x1, each with BN; then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            cin, cin, 3, stride=stride, padding=dilation, dilation=dilation, groups=cin, bias=False
        )
        self.bn1 = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the separable convolution."""
        x = self.bn1(self.depthwise(x))
        return F.relu(self.bn2(self.pointwise(x)))


class XceptionBlock(nn.Module):
    """Three separable convs with a (projected) residual; the last one may stride."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            SeparableConv(cin, cout, dilation=dilation),
            SeparableConv(cout, cout, dilation=dilation),
            SeparableConv(cout, cout, stride=stride, dilation=dilation),
        )
        self.skip: nn.Module = nn.Identity()
        if cin != cout or stride != 1:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual Xception block."""
        return self.convs(x) + self.skip(x)


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1) -> nn.Module:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, dilated 3x3 branches, and image pooling."""

    def __init__(self, cin: int, cout: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(cin, cout, 1)]
            + [_conv_bn_relu(cin, cout, 3, dilation=d) for d in dilations]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU())
        self.project = _conv_bn_relu(cout * (len(dilations) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate all branches and project."""
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="nearest")
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabV3Plus(nn.Module):
    """Encoder to `output_stride`, ASPP, decoder with stride-4 skip, logits at full size."""

    def __init__(self, config: ClimateConfig) -> None:
        super().__init__()
        f = config.entry_filters
        self.stem = nn.Sequential(
            _conv_bn_relu(config.channels, f[0], 3, stride=2), _conv_bn_relu(f[0], f[1], 3)
        )
        stride, dilation, cin = 2, 1, f[1]
        blocks: list[nn.Module] = []
        for filters in f[2:]:
            step = 2 if stride < config.output_stride else 1
            if step == 1:
                dilation *= 2
            blocks.append(
                XceptionBlock(cin, filters, stride=step, dilation=dilation if step == 1 else 1)
            )
            stride, cin = stride * step, filters
        self.low_level = blocks[0]
        self.entry = nn.Sequential(*blocks[1:])
        self.middle = nn.Sequential(
            *[XceptionBlock(cin, cin, dilation=dilation) for _ in range(config.middle_blocks)]
        )
        self.exit = nn.Sequential(
            XceptionBlock(cin, config.exit_filters, dilation=dilation),
            SeparableConv(config.exit_filters, config.exit_filters, dilation=dilation),
        )
        self.aspp = ASPP(config.exit_filters, config.aspp_filters, config.aspp_dilations)
        self.reduce = _conv_bn_relu(f[2], config.low_level_filters, 1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(
                config.aspp_filters + config.low_level_filters, config.decoder_filters, 3
            ),
            _conv_bn_relu(config.decoder_filters, config.decoder_filters, 3),
            nn.Conv2d(config.decoder_filters, config.n_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, n_classes, H, W)."""
        size = x.shape[-2:]
        low = self.low_level(self.stem(x))
        deep = self.aspp(self.exit(self.middle(self.entry(low))))
        deep = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.decoder(torch.cat([deep, self.reduce(low)], dim=1))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
