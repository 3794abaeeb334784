"""The image super-resolution yardstick of the `isr_fer` column: EDSR-style residual blocks at the HR size.

The papers' comparison is image SR followed by the frozen FER model. One network serves every
scale, as FSR-FER's G does, so it works on the LR face already bicubic-upscaled back to the HR
size (VDSR's pre-upsampling) and learns the residual to the HR face:

    x (B, C, H, W) in [0, 1] -> head 3x3 conv -> `blocks` x [conv 3x3, ReLU, conv 3x3, x res_scale, + skip]
      -> body 3x3 conv (+ head's output) -> tail 3x3 conv -> + x

No BatchNorm (EDSR: it hurts SR), residual scale 1 (EDSR-baseline), and the tail conv starts at zero,
so the untrained network is the bicubic face and training only ever moves away from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from components.models.saved import load_model, save_model
from components.runtime import images_to_tensor


@dataclass(frozen=True)
class ISRNetConfig:
    in_channels: int = 3
    channels: int = 32
    blocks: int = 4
    res_scale: float = 1.0


class ResBlock(nn.Module):
    def __init__(self, channels: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class ISRNet(nn.Module):
    """Upscaled LR faces (B, C, H, W) in [0, 1] -> super-resolved faces of the same shape (not clamped)."""

    def __init__(self, cfg: ISRNetConfig = ISRNetConfig()):
        super().__init__()
        self.cfg = cfg
        self.head = nn.Conv2d(cfg.in_channels, cfg.channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(cfg.channels, cfg.res_scale) for _ in range(cfg.blocks)])
        self.body = nn.Conv2d(cfg.channels, cfg.channels, 3, padding=1)
        self.tail = nn.Conv2d(cfg.channels, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts as the identity: the bicubic face
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        return x + self.tail(self.body(self.blocks(f)) + f)


@torch.no_grad()
def super_resolve(model: ISRNet, faces: np.ndarray, device: torch.device | str = "cpu",
                  batch_size: int = 64) -> np.ndarray:
    """uint8 upscaled LR faces (N, H, W, C) -> uint8 super-resolved faces (N, H, W, C), rounded and
    clipped as an SR image written to disk would be."""
    model.eval()
    out = []
    for i in range(0, len(faces), batch_size):
        y = model(images_to_tensor(faces[i : i + batch_size], device)).clamp_(0, 1)
        out.append(torch.round(y * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros_like(faces)


def save_isr(model: ISRNet, path, extra: dict | None = None) -> None:
    save_model(model, path, extra)


def load_isr(path, map_location: str | torch.device = "cpu", frozen: bool = True) -> ISRNet:
    return load_model(ISRNet, ISRNetConfig, path, map_location, frozen)
