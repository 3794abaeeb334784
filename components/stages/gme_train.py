"""Stage `gme_train`: the GME-Net LR student, CE + attention-similarity distillation from the
frozen HR teacher (`gme_teacher`), on Ray Train (components/training/gme.py).
"""

from __future__ import annotations

from pathlib import Path

from components.config import GMETrainConfig
from components.io import BadInput
from components.training.gme import train_gme


def train_gmenet(cfg: GMETrainConfig, runner: str = "ray") -> dict:
    """The LR student distilled from the frozen HR teacher cfg.teacher; returns the summary."""
    if not cfg.teacher or not Path(cfg.teacher).is_file():
        raise BadInput(f"gme_train.teacher: {cfg.teacher or '(empty)'}: no GME-Net teacher file; run gme_teacher")
    return train_gme(cfg, runner)
