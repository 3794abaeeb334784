"""FSR-FER's discriminator D: ESRGAN's VGG-style discriminator without BatchNorm.

Sized to the d x d feature matrix (reference code: 8 base channels; 128 -> 4x4x64 ->
FC 100 -> FC 1, LeakyReLU 0.2): pairs of a 3x3 stride-1 and a 4x4 stride-2 conv, channels
doubling (capped at 8x base) until the map is at most 4x4, then adaptive pooling to 4x4
(for sizes that are not powers of two), FC 100, FC 1. No BatchNorm: WGAN-div's gradient
penalty is per sample, which batch statistics would break.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.models.rrdb import matrix_maps


@dataclass(frozen=True)
class DiscriminatorConfig:
    base_channels: int = 8
    fc_dim: int = 100


class FeatureDiscriminator(nn.Module):
    """D: feature matrices (B, d, d) -> critic scores (B,)."""

    def __init__(self, feature_size: int, cfg: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        layers: list[nn.Module] = []
        prev, ch, size = 1, cfg.base_channels, feature_size
        while True:
            layers += [nn.Conv2d(prev, ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
            prev = ch
            if size <= 4:
                break
            layers += [nn.Conv2d(ch, ch, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            size //= 2
            ch = min(ch * 2, cfg.base_channels * 8)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(prev * 16, cfg.fc_dim), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(cfg.fc_dim, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(matrix_maps(f))).squeeze(1)
