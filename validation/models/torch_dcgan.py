"""CosmoGAN-style DCGAN in PyTorch (REFERENCE.md, GANs for science)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from validation.config import GANConfig


def base_size(config: GANConfig) -> int:
    """Spatial size after the generator's dense layer (4 stride-2 layers follow)."""
    return config.image_size // 2 ** len(config.gen_filters)


def same_padding(kernel: int) -> int:
    """Padding that makes a stride-2 (transposed) convolution halve (double) the size, as
    Keras' padding="same" does, for odd and even kernels."""
    return (kernel - 1) // 2


class Generator(nn.Module):
    """z -> dense -> 4 x [ConvTranspose 5x5 stride 2, BN, ReLU] (last: tanh)."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.base, self.c0 = base_size(config), config.gen_filters[0]
        k, pad = config.kernel, same_padding(config.kernel)
        self.dense = nn.Linear(config.latent_dim, self.c0 * self.base**2)
        self.bn0 = nn.BatchNorm2d(self.c0)
        layers: list[nn.Module] = []
        channels = [*config.gen_filters, 1]
        for i, (cin, cout) in enumerate(itertools.pairwise(channels)):
            layers.append(
                nn.ConvTranspose2d(
                    cin, cout, k, stride=2, padding=pad, output_padding=2 + 2 * pad - k
                )
            )
            last = i == len(channels) - 2
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(cout), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent) -> (B, 1, S, S) in (-1, 1)."""
        x = self.dense(z).view(-1, self.c0, self.base, self.base)
        return self.net(torch.relu(self.bn0(x)))


class Discriminator(nn.Module):
    """4 x [Conv 5x5 stride 2, BN (not first), LeakyReLU 0.2] -> linear logit."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        k, pad = config.kernel, same_padding(config.kernel)
        layers: list[nn.Module] = []
        cin = 1
        for i, cout in enumerate(config.disc_filters):
            layers.append(nn.Conv2d(cin, cout, k, stride=2, padding=pad))
            if i > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        layers.append(nn.Flatten())
        side = config.image_size // 2 ** len(config.disc_filters)
        layers.append(nn.Linear(cin * side * side, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) -> (B, 1) logits."""
        return self.net(x)
