"""Run-time choices shared by the training stages: device and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' -> the first CUDA device when one is present, else the CPU; or the device named."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch Generator seeded the same way for samplers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def images_to_tensor(images: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float (B, C, H, W) in [0, 1], always in channels-last memory.

    The copy is C-ordered whatever the input's strides (memmap slices are, the upscaled LR
    batches of components/data/degrade.py are not), so every batch reaches the convolutions
    in the same memory format: a permuted non-contiguous batch took a path 1.5x slower on CPU
    (benchmarks/README.md, feature cache).
    """
    t = torch.from_numpy(np.array(images, dtype=np.uint8, order="C"))  # a copy: memmaps are read-only
    t = t.permute(0, 3, 1, 2).float().div_(255.0)
    return t.to(device) if device is not None else t
