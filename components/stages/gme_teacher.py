"""Stage `gme_teacher`: GME-Net on the HR training faces (cross-entropy), on Ray Train.

The network is components/models/gmenet.py; the step and the worker loop
components/training/gme.py, shared with the `gme_train` student.
"""

from __future__ import annotations

from components.config import GMETrainConfig
from components.io import BadInput
from components.training.gme import train_gme


def train_gme_teacher(cfg: GMETrainConfig, runner: str = "ray") -> dict:
    """GME-Net's HR teacher (cfg.teacher must be empty); returns the summary."""
    if cfg.teacher:
        raise BadInput("gme_teacher.teacher must be empty: the teacher is trained on HR faces without distillation")
    return train_gme(cfg, runner)
