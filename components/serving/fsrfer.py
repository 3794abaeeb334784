"""FSR-FER over face images of any size: the path the registered `fsrfer` model serves.

One face image (pre-cropped, no alignment: grayscale, RGB or RGBA, any size) ->
convert to the teacher's channels -> centre square (as the prepare stage crops) -> MATLAB
bicubic to the HR size the teacher was trained at (components.data.degrade) -> frozen
extractor F -> G where the validation split says it pays (`applies_g`: the face's scale
hr / side, rounded to the nearest trained scale, is one of the serving config's `g_scales`,
which the evaluate stage chose on valid) -> frozen classifier C -> class probabilities.

Scenes (`params={"detect": True}`): each input row is a photo; every face is found and cut
the way the training faces were made (components/serving/scene.py), then goes the per-face
path above; the output has one row per face (or one row saying no face was found).

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
from components.serving.scene import SceneFaces

MAX_PIXELS = 50_000_000  # a decoded image above this is refused (row error), not classified


@dataclass(frozen=True)
class ServingConfig:
    """What the served model needs besides its weights (read from the prepared store's meta).

    face_crop: how training faces were cut ("warp" | "box", components/serving/scene.py).
    g_scales: the scales (1 = HR) at which FSR-FER applies G, chosen on valid by the evaluate
    stage; None (a config written before the rule existed): every scale above 1.
    """

    hr_size: int
    channels: int
    classes: tuple[str, ...]
    face_crop: str = "warp"
    g_scales: tuple[int, ...] | None = None


def decode_image(data: bytes, channels: int, source: str) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, channels); BadInput naming `source` when they do not decode."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise BadInput(f"{source}: expected encoded image bytes, got {type(data).__name__} of length "
                       f"{len(data) if hasattr(data, '__len__') else '?'}")
    raw = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise BadInput(f"{source}: not a decodable image ({len(data)} bytes)")
    if raw.shape[0] * raw.shape[1] > MAX_PIXELS:
        raise BadInput(f"{source}: image is {raw.shape[1]}x{raw.shape[0]}, over the {MAX_PIXELS:,}-pixel limit")
    if raw.dtype != np.uint8:  # 16-bit PNGs and the like
        raw = np.clip(raw.astype(np.float64) / np.iinfo(raw.dtype).max * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return convert_channels(raw, channels, source)


def to_hr(face: np.ndarray, hr_size: int) -> tuple[np.ndarray, float]:
    """uint8 (h, w, C) -> (uint8 (hr, hr, C), scale = hr / side).

    As the prepare stage does: the centre square of side min(h, w), then MATLAB bicubic to the
    HR size (identity at the HR size)."""
    h, w = face.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = face[top : top + side, left : left + side]
    if side == hr_size:
        return square, 1.0
    return upscale_to(square[None], (hr_size, hr_size))[0], hr_size / side


def applies_g(scale: float, g_scales: tuple[int, ...] | None) -> bool:
    """Whether FSR-FER lifts a face of this scale with G: its nearest whole scale is a validated one."""
    if g_scales is None:
        return scale > 1.0 + 1e-6
    if not g_scales:
        return False
    nearest = min(max(int(np.floor(scale + 0.5)), 1), max(max(g_scales), 8))
    return nearest in g_scales


class FSRFERPredictor:
    """Teacher (extractor + classifier) and G, frozen, on one device."""

    def __init__(self, teacher_path: str | Path, generator_path: str | Path, cfg: ServingConfig,
                 device: str | torch.device = "cpu", batch_size: int = 64):

        self.cfg = cfg
        self.device = torch.device(device)
        self.teacher = load_covpool(teacher_path, map_location=self.device)
        self.generator = load_generator(generator_path, map_location=self.device)
        self.generator_path = Path(generator_path)
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
            lifted = torch.tensor([applies_g(scale, self.cfg.g_scales) for _, scale in chunk], device=self.device)
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


# Inference params of the pyfunc (its signature's params schema): the per-face path is the default.
DEFAULT_PARAMS = {"detect": False, "min_face_size": 12, "upsample": 1.0, "min_confidence": 0.9}
SCENE_COLUMNS = ["row", "face", "box_x", "box_y", "box_w", "box_h", "confidence", "landmarks", "native_size", "scale"]


def check_params(params: dict | None) -> dict:
    """The inference params with defaults filled; BadInput naming an unknown or bad one."""
    params = dict(params or {})
    unknown = set(params) - set(DEFAULT_PARAMS)
    if unknown:
        raise BadInput(f"params: unknown {sorted(unknown)}; the model takes {sorted(DEFAULT_PARAMS)}")
    out = DEFAULT_PARAMS | params
    if not isinstance(out["detect"], (bool, np.bool_)):
        raise BadInput(f"params.detect: expected true or false, got {out['detect']!r}")
    for key, kind in (("min_face_size", int), ("upsample", float), ("min_confidence", float)):
        try:
            out[key] = kind(out[key])
        except (TypeError, ValueError):
            raise BadInput(f"params.{key}: expected a number, got {out[key]!r}") from None
    return out


try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # serving code imported without MLflow (plain predictor use)
    PythonModel = object


class FacePyfunc(PythonModel):
    """MLflow pyfunc: DataFrame[`image`: encoded bytes] -> DataFrame[classes..., label, error].

    With params {"detect": true} each row is a scene: the output has one row per face found,
    with SCENE_COLUMNS (the input row, the face's index, box, landmarks, native size in px and
    scale) before the class columns; a row with no face (or that does not decode) gives one row
    with face -1 and the reason in `error`.

    Subclasses say which predictor (an object with predict_proba(list of faces)) serves."""

    def make_predictor(self, artifacts: dict, cfg: ServingConfig, device: str):
        raise NotImplementedError

    def load_context(self, context) -> None:
        cfg = json.loads(Path(context.artifacts["serving_config"]).read_text())
        g_scales = cfg.get("g_scales")
        self.cfg = ServingConfig(cfg["hr_size"], cfg["channels"], tuple(cfg["classes"]), cfg.get("face_crop", "warp"),
                                 None if g_scales is None else tuple(g_scales))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.predictor = self.make_predictor(context.artifacts, self.cfg, device)
        self._finders: dict[tuple, object] = {}

    def predict(self, context, model_input, params=None):
        params = check_params(params)
        column = model_input["image"] if hasattr(model_input, "columns") else model_input
        images, rows, errors = [], [], []
        for i, data in enumerate(list(column)):
            try:
                images.append(decode_image(data, self.cfg.channels, f"row {i}"))
                rows.append(i)
                errors.append("")
            except BadInput as err:
                errors.append(str(err))
        if params["detect"]:
            return self.predict_scenes(dict(zip(rows, images)), errors, params)
        probs = np.full((len(errors), len(self.cfg.classes)), np.nan)
        if images:
            probs[rows] = self.predictor.predict_proba(images)
        return probabilities_frame(probs, self.cfg.classes, errors)

    def scene_faces(self, params: dict):
        """The face finder for these params (kept: loading MTCNN's three nets is not free)."""
        key = (params["min_face_size"], params["upsample"], params["min_confidence"])
        if key not in self._finders:
            self._finders[key] = SceneFaces(self.cfg.face_crop, self.cfg.hr_size, min_face_size=key[0], upsample=key[1],
                                            min_confidence=key[2])
        return self._finders[key]

    def predict_scenes(self, images: dict[int, np.ndarray], errors: list[str], params: dict):
        import pandas as pd

        finder = self.scene_faces(params)
        meta, faces, face_errors = [], [], []
        for i, error in enumerate(errors):
            crops = finder(images[i]) if not error else []
            if not crops:
                meta.append({"row": i, "face": -1, "box_x": -1, "box_y": -1, "box_w": 0, "box_h": 0, "confidence": 0.0,
                             "landmarks": [], "native_size": 0, "scale": 0.0})
                face_errors.append(error or f"row {i}: no face found")
                faces.append(None)
                continue
            for k, crop in enumerate(crops):
                x, y, w, h = crop.detection.box
                meta.append({"row": i, "face": k, "box_x": x, "box_y": y, "box_w": w, "box_h": h,
                             "confidence": crop.detection.confidence,
                             "landmarks": [] if crop.detection.landmarks is None
                             else np.round(crop.detection.landmarks, 2).tolist(),
                             "native_size": crop.native_size, "scale": self.cfg.hr_size / crop.native_size})
                face_errors.append("")
                faces.append(crop.face)
        probs = np.full((len(faces), len(self.cfg.classes)), np.nan)
        found = [j for j, face in enumerate(faces) if face is not None]
        if found:
            probs[found] = self.predictor.predict_proba([faces[j] for j in found])
        frame = pd.DataFrame(meta, columns=SCENE_COLUMNS)
        return pd.concat([frame, probabilities_frame(probs, self.cfg.classes, face_errors)], axis=1)


class FSRFERPyfunc(FacePyfunc):
    """The `fsrfer` registered model: artifacts teacher, generator, serving_config."""

    def make_predictor(self, artifacts: dict, cfg: ServingConfig, device: str) -> FSRFERPredictor:
        return FSRFERPredictor(artifacts["teacher"], artifacts["generator"], cfg, device=device)


def write_serving_config(cfg: ServingConfig, path: Path) -> Path:
    g_scales = None if cfg.g_scales is None else list(cfg.g_scales)
    path.write_text(json.dumps(asdict(cfg) | {"classes": list(cfg.classes), "g_scales": g_scales}, indent=2) + "\n")
    return path
