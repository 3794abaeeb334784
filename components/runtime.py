"""Run-time pieces shared by training, evaluation and serving: device, seeding, image batches, inference."""

from __future__ import annotations

import contextlib
import functools
import random
from pathlib import Path

import numpy as np
import torch


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' -> the first CUDA device when one is present, else the CPU; or the device named."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bfloat16 in hardware (Intel AMX or AVX512-BF16, read from
    /proc/cpuinfo): there oneDNN's bf16 convolutions are faster than fp32 (benchmarks/README.md,
    "The teacher in bf16"); elsewhere bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether a training step runs under bf16 autocast: 'bf16' always, 'fp32' never, 'auto' where
    the device has native bf16 (a CUDA GPU that supports it, a CPU with AMX / AVX512-BF16)."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return device.type == "cpu" and cpu_has_native_bf16()
    return precision == "bf16"


def training_autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a training forward pass (see uses_bf16); a no-op for fp32.
    Models keep their own float32/float64 islands (the SPD head: components/models/covpool.py)."""
    if not uses_bf16(precision, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


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


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: np.ndarray, device: torch.device | str = "cpu",
                  batch_size: int = 128) -> np.ndarray:
    """Class probabilities (N, K) of an image classifier in eval mode on uint8 faces (N, H, W, C);
    the model's training mode is restored afterwards."""
    was_training = model.training
    model.eval()
    out = [torch.softmax(model(images_to_tensor(images[i : i + batch_size], device)), dim=1).cpu().numpy()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.cfg.num_classes), np.float32)
