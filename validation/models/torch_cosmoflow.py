"""CosmoFlow 3D CNN in PyTorch (MLPerf HPC reference layer list, REFERENCE.md)."""

from __future__ import annotations

import torch
from torch import nn

from validation.config import CosmoFlowConfig


class CosmoFlowNet(nn.Module):
    """Conv3D blocks, dense head, tanh output scaled by 1.2."""

    def __init__(self, config: CosmoFlowConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, size = config.channels, config.size
        for filters in config.filters:
            layers += [
                nn.Conv3d(in_channels, filters, kernel_size=3, padding=1),
                nn.LeakyReLU(0.3),
                nn.MaxPool3d(2),
            ]
            in_channels, size = filters, size // 2
        layers.append(nn.Flatten())
        width = in_channels * size**3
        for units in config.dense:
            layers += [nn.Linear(width, units), nn.LeakyReLU(0.3)]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = units
        layers.append(nn.Linear(width, config.n_targets))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S, S) -> (B, n_targets) in [-1.2, 1.2]."""
        return 1.2 * torch.tanh(self.net(x))
