"""Stage `multiscale_cnn`: the practitioner's first try at low resolution, as a yardstick.

The teacher's own network and recipe (CovPoolFER, components/training/classifier.py), trained on
HR faces and on the MATLAB-bicubic LR faces of every prepared scale, upscaled back to the input
size: each training face is drawn at x1 or one of the LR scales, uniformly, per face and step.
From scratch, or from the teacher's weights (`init`: fine-tuning, what a practitioner with an HR
model tries first; the small CovPoolFER of the embedded default barely leaves chance in 15
epochs from scratch when most of its faces are blurred, benchmarks/README.md).
The epoch is selected on the mean validation accuracy over x1 and every scale. The compare
stage scores it beside the other paths: column `multiscale_cnn`. Registered nowhere.
"""

from __future__ import annotations

from components.config import MultiscaleCNNConfig
from components.data.store import PreparedStore
from components.training.classifier import train_covpool_classifier


def train_multiscale_cnn(cfg: MultiscaleCNNConfig, progress: bool = True) -> dict:
    """Train on x1 and every prepared scale, select on mean valid accuracy, save the model."""
    keys = ("x1", *PreparedStore(cfg.prepared).scale_keys)
    return train_covpool_classifier(cfg, keys, "multiscale_cnn", progress, init=cfg.init)
