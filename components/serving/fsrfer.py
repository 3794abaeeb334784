"""FSR-FER over face images of any size: the path the registered `fsrfer` model serves.

One face image (pre-cropped, no alignment: grayscale, RGB or RGBA, any size) ->
convert to the teacher's channels -> MATLAB bicubic to the HR size the teacher was
trained at (components.data.degrade) -> frozen extractor F -> G (only when the face was
smaller than the HR size: G was trained to lift LR features, and at x1 it only costs
accuracy) -> frozen classifier C -> class probabilities.

`FSRFERPredictor` is plain PyTorch and testable alone; `FSRFERPyfunc` wraps it as an
MLflow PythonModel (through `FacePyfunc`, shared with GME-Net's, components/serving/gmenet.py)
whose input is a DataFrame with one column `image` of encoded image bytes (PNG, JPEG, ...;
any size) and whose output has one probability column per class, `label` (the most probable
class) and `error` ("" when the row was fine; a row whose bytes do not decode gets NaN
probabilities and the reason, the other rows go on).
The weights are loaded with torch.load(weights_only=True): no pickled code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from components.data.degrade import upscale_to
from components.data.records import convert_channels
from components.io import BadInput
from components.models.covpool import load_covpool
from components.models.rrdb import load_generator
from components.runtime import images_to_tensor


@dataclass(frozen=True)
class ServingConfig:
    """What the served model needs besides its weights (read from the prepared store's meta)."""

    hr_size: int
    channels: int
    classes: tuple[str, ...]


def decode_image(data: bytes, channels: int, source: str) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, channels); BadInput naming `source` when they do not decode."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise BadInput(f"{source}: expected encoded image bytes, got {type(data).__name__} of length "
                       f"{len(data) if hasattr(data, '__len__') else '?'}")
    raw = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise BadInput(f"{source}: not a decodable image ({len(data)} bytes)")
    if raw.dtype != np.uint8:  # 16-bit PNGs and the like
        raw = np.clip(raw.astype(np.float64) / np.iinfo(raw.dtype).max * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return convert_channels(raw, channels, source)


def to_hr(face: np.ndarray, hr_size: int) -> tuple[np.ndarray, float]:
    """uint8 (h, w, C) -> (uint8 (hr, hr, C), scale = hr / min(h, w)); MATLAB bicubic, identity at HR size."""
    h, w = face.shape[:2]
    if (h, w) == (hr_size, hr_size):
        return face, 1.0
    return upscale_to(face[None], (hr_size, hr_size))[0], hr_size / min(h, w)


class FSRFERPredictor:
    """Teacher (extractor + classifier) and G, frozen, on one device."""

    def __init__(self, teacher_path: str | Path, generator_path: str | Path, cfg: ServingConfig,
                 device: str | torch.device = "cpu", batch_size: int = 64):

        self.cfg = cfg
        self.device = torch.device(device)
        self.teacher = load_covpool(teacher_path, map_location=self.device)
        self.generator = load_generator(generator_path, map_location=self.device)
        self.batch_size = batch_size
        if self.teacher.cfg.in_channels != cfg.channels:
            raise BadInput(f"{teacher_path}: teacher expects {self.teacher.cfg.in_channels} channels, "
                           f"the serving config says {cfg.channels}")

    @torch.no_grad()
    def predict_proba(self, faces: list[np.ndarray]) -> np.ndarray:
        """uint8 faces (h, w, channels), any sizes -> class probabilities (N, K) float64."""
        if not faces:
            return np.zeros((0, len(self.cfg.classes)))
        prepared = [to_hr(face, self.cfg.hr_size) for face in faces]
        out = np.zeros((len(faces), len(self.cfg.classes)))
        for start in range(0, len(faces), self.batch_size):
            chunk = prepared[start : start + self.batch_size]
            images = images_to_tensor(np.stack([hr for hr, _ in chunk]), self.device)  # (B, C, H, W)
            features = self.teacher.extractor(images)  # (B, d, d) LogEig
            lifted = torch.tensor([scale > 1.0 + 1e-6 for _, scale in chunk], device=self.device)
            if lifted.any():
                features = torch.where(lifted[:, None, None], self.generator(features), features)
            probs = torch.softmax(self.teacher.classifier(features), dim=1)
            out[start : start + len(chunk)] = probs.double().cpu().numpy()
        return out


def probabilities_frame(probs: np.ndarray, classes: tuple[str, ...], errors: list[str]):
    """The pyfunc's output: one column per class, `label`, `error`."""
    import pandas as pd

    frame = pd.DataFrame(probs, columns=list(classes))
    labels = [classes[i] for i in np.nan_to_num(probs, nan=-1.0).argmax(1)]
    frame["label"] = [label if not error else "" for label, error in zip(labels, errors)]
    frame["error"] = errors
    return frame


try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # serving code imported without MLflow (plain predictor use)
    PythonModel = object


class FacePyfunc(PythonModel):
    """MLflow pyfunc: DataFrame[`image`: encoded bytes] -> DataFrame[classes..., label, error].

    Subclasses say which predictor (an object with predict_proba(list of faces)) serves."""

    def make_predictor(self, artifacts: dict, cfg: ServingConfig, device: str):
        raise NotImplementedError

    def load_context(self, context) -> None:
        cfg = json.loads(Path(context.artifacts["serving_config"]).read_text())
        self.cfg = ServingConfig(cfg["hr_size"], cfg["channels"], tuple(cfg["classes"]))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.predictor = self.make_predictor(context.artifacts, self.cfg, device)

    def predict(self, context, model_input, params=None):
        column = model_input["image"] if hasattr(model_input, "columns") else model_input
        faces, rows, errors = [], [], []
        for i, data in enumerate(list(column)):
            try:
                faces.append(decode_image(data, self.cfg.channels, f"row {i}"))
                rows.append(i)
                errors.append("")
            except BadInput as err:
                errors.append(str(err))
        probs = np.full((len(errors), len(self.cfg.classes)), np.nan)
        if faces:
            probs[rows] = self.predictor.predict_proba(faces)
        return probabilities_frame(probs, self.cfg.classes, errors)


class FSRFERPyfunc(FacePyfunc):
    """The `fsrfer` registered model: artifacts teacher, generator, serving_config."""

    def make_predictor(self, artifacts: dict, cfg: ServingConfig, device: str) -> FSRFERPredictor:
        return FSRFERPredictor(artifacts["teacher"], artifacts["generator"], cfg, device=device)


def write_serving_config(cfg: ServingConfig, path: Path) -> Path:
    path.write_text(json.dumps(asdict(cfg) | {"classes": list(cfg.classes)}, indent=2) + "\n")
    return path
