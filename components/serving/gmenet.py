"""GME-Net over face images of any size: the path the registered `gmenet` model serves.

One face image (pre-cropped: grayscale, RGB or RGBA, any size) -> the model's channels ->
MATLAB bicubic to its input size (how its LR training faces were made) -> GME-Net ->
class probabilities. The pyfunc's input and output are FSR-FER's (components/serving/fsrfer.py:
a DataFrame with an `image` column of encoded bytes; one probability column per class,
`label`, `error`). Weights load with torch.load(weights_only=True).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from components.io import BadInput
from components.models.gmenet import load_gmenet
from components.runtime import predict_proba
from components.serving.fsrfer import FacePyfunc, ServingConfig, to_hr


class GMENetPredictor:
    """GME-Net (the LR student), frozen, on one device."""

    def __init__(self, model_path: str | Path, cfg: ServingConfig, device: str | torch.device = "cpu",
                 batch_size: int = 64):

        self.cfg = cfg
        self.device = torch.device(device)
        self.model = load_gmenet(model_path, map_location=self.device)
        self.batch_size = batch_size
        if (self.model.cfg.in_channels, self.model.cfg.input_size) != (cfg.channels, cfg.hr_size):
            raise BadInput(f"{model_path}: GME-Net takes {self.model.cfg.input_size}px x {self.model.cfg.in_channels}"
                           f" channels, the serving config says {cfg.hr_size}px x {cfg.channels}")

    def predict_proba(self, faces: list[np.ndarray]) -> np.ndarray:
        """uint8 faces (h, w, channels), any sizes -> class probabilities (N, K) float64."""
        if not faces:
            return np.zeros((0, len(self.cfg.classes)))
        resized = np.stack([to_hr(face, self.cfg.hr_size)[0] for face in faces])
        return predict_proba(self.model, resized, self.device, self.batch_size).astype(np.float64)


class GMENetPyfunc(FacePyfunc):
    """The `gmenet` registered model: artifacts model, serving_config."""

    def make_predictor(self, artifacts: dict, cfg: ServingConfig, device: str) -> GMENetPredictor:
        return GMENetPredictor(artifacts["model"], cfg, device=device)
