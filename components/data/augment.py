"""Training-time augmentation with albumentations 2.0.8 (the last MIT release).

Flip, small rotation/scale/shift, random resized crop close to the full face, and
photometric jitter, on uint8 (H, W, C) faces; the output keeps the input's size.
Argument names follow albumentations 2.x (old names are only warned about and then
silently ignored, so they are checked here by building the transform once).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    rotate_limit: float = 10.0  # degrees
    scale_limit: float = 0.05
    shift_limit: float = 0.05
    crop_scale: tuple[float, float] = (0.85, 1.0)  # RandomResizedCrop area range
    brightness: float = 0.2
    contrast: float = 0.2
    p_photometric: float = 0.5


def build_train_transform(size: int, cfg: AugmentConfig = AugmentConfig(), seed: int | None = None):
    """An albumentations Compose for HR training faces of side `size`; seeded when seed is given."""
    import albumentations as A

    transforms = []
    if cfg.flip:
        transforms.append(A.HorizontalFlip(p=0.5))
    transforms += [
        A.Affine(rotate=(-cfg.rotate_limit, cfg.rotate_limit), scale=(1 - cfg.scale_limit, 1 + cfg.scale_limit),
                 translate_percent=(-cfg.shift_limit, cfg.shift_limit), border_mode=1, p=0.7),  # 1 = replicate
        A.RandomResizedCrop(size=(size, size), scale=cfg.crop_scale, ratio=(0.95, 1.05), p=0.5),
        A.RandomBrightnessContrast(brightness_limit=cfg.brightness, contrast_limit=cfg.contrast, p=cfg.p_photometric),
    ]
    return A.Compose(transforms, seed=seed)


def augment_batch(transform, images: np.ndarray) -> np.ndarray:
    """Apply the transform to each uint8 face of a batch (B, H, W, C)."""
    out = [transform(image=img)["image"] for img in images]
    return np.stack([o if o.ndim == 3 else o[:, :, None] for o in out])
