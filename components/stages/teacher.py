"""Stage `teacher`: train the CovPoolFER FER model on the prepared HR training split.

The frozen model of FSR-FER (components/models/covpool.py), trained on HR faces only by the
classifier loop of components/training/classifier.py (epoch selected on validation accuracy;
the recipe's levers: class balance, soft vote targets, one-cycle schedule, label smoothing,
random erasing). Logs params, per-epoch loss and accuracy and the final model to MLflow;
writes the model file (config + state_dict) as the DVC out.
"""

from __future__ import annotations

from components.config import TeacherConfig
from components.training.classifier import train_covpool_classifier


def train_teacher(cfg: TeacherConfig, progress: bool = True) -> dict:
    """Train on HR faces, select on validation accuracy, save the model; the summary with per-epoch history."""
    return train_covpool_classifier(cfg, ("x1",), "teacher", progress)
