"""FSR-FER over face images of any size: the path the registered `fsrfer` model serves.

One face image (pre-cropped, no alignment: grayscale, RGB or RGBA, any size) ->
convert to the teacher's channels -> centre square (as the prepare stage crops) -> MATLAB
bicubic to the HR size the teacher was trained at (components.data.degrade) -> the path the
validation split chose for the face's scale (`served_scale`: hr / side, rounded to the nearest
trained scale; the evaluate stage chose each scale's path on valid, components/metrics.py:fsr_routes):
frozen extractor F -> G (`applies_g`: a scale of the serving config's `g_scales`) -> frozen
classifier C; or C(F) alone; or, at the config's `teacher_scales`, the HR teacher (a second
CovPoolFER, trained on HR faces only) -> class probabilities.

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

import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch

from components.data.degrade import lr_size, upscale_to
from components.data.records import convert_channels
from components.io import BadInput
from components.models.covpool import load_covpool
from components.models.rrdb import load_generator
from components.runtime import images_to_tensor
from components.serving.scene import SceneFaces

MAX_PIXELS = 50_000_000  # a decoded image above this (or upsampled above it for detection) is a row error


@dataclass(frozen=True)
class ServingConfig:
    """What the served model needs besides its weights (read from the prepared store's meta).

    face_crop: how training faces were cut ("warp" | "box", components/serving/scene.py).
    scales: the LR scales the model was trained and evaluated at (the store's).
    g_scales: the scales (1 = HR) at which FSR-FER applies G, chosen on valid by the evaluate
    stage; None (a config written before the rule existed): every face below the HR size.
    teacher_scales: the scales at which the HR teacher serves instead (chosen on valid too).
    """

    hr_size: int
    channels: int
    classes: tuple[str, ...]
    face_crop: str = "warp"
    g_scales: tuple[float, ...] | None = None
    scales: tuple[float, ...] = ()
    teacher_scales: tuple[float, ...] = ()


# EXIF orientation (tag 0x0112) -> the numpy view that shows the photo upright (as PIL's exif_transpose)
_UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
            5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
            8: lambda a: np.rot90(a, 1)}


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation of encoded bytes (1 = upright, also when there is none or PIL cannot tell)."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(0x0112, 1))
    except Exception:  # no PIL, or a format PIL does not read: OpenCV decoded it, so it has no EXIF to honour
        return 1


def decode_image(data: bytes, channels: int, source: str) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, channels), upright by its EXIF orientation; BadInput naming
    `source` when they do not decode or are over MAX_PIXELS."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise BadInput(f"{source}: expected encoded image bytes, got {type(data).__name__} of length "
                       f"{len(data) if hasattr(data, '__len__') else '?'}")
    raw = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED)  # keeps alpha; ignores EXIF
    if raw is None:
        raise BadInput(f"{source}: not a decodable image ({len(data)} bytes)")
    if raw.shape[0] * raw.shape[1] > MAX_PIXELS:
        raise BadInput(f"{source}: image is {raw.shape[1]}x{raw.shape[0]}, over the {MAX_PIXELS:,}-pixel limit")
    if raw.dtype != np.uint8:  # 16-bit PNGs and the like
        raw = np.clip(raw.astype(np.float64) / np.iinfo(raw.dtype).max * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = convert_channels(raw, channels, source)
    orientation = exif_orientation(bytes(data))
    return np.ascontiguousarray(_UPRIGHT[orientation](image)) if orientation in _UPRIGHT else image


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


def served_scale(side: int, cfg: ServingConfig) -> float:
    """The trained scale a face of `side` px counts as: 1 at or above the HR size, else the scale (1 or
    a trained one) whose faces (lr_size(hr, s) px, as prepare made them) are nearest in size, ties to the nearer ratio
    hr / side (FER+ at 48 px: x7 and x8 faces are both 6 px, and a 6-px face counts as x8)."""
    if side >= cfg.hr_size:
        return 1.0
    if not cfg.scales:
        return cfg.hr_size / side
    return min((1.0, *cfg.scales), key=lambda s: (abs(lr_size(cfg.hr_size, s) - side), abs(s - cfg.hr_size / side)))


def served_at(side: int, cfg: ServingConfig, scales: tuple[float, ...]) -> bool:
    """Whether a face of `side` px has its served scale among `scales`."""
    scale = served_scale(side, cfg)
    return any(abs(scale - s) < 1e-9 for s in scales)


def applies_g(side: int, cfg: ServingConfig) -> bool:
    """Whether FSR-FER lifts a face of `side` px with G: its served scale is one valid chose."""
    if cfg.g_scales is None:
        return side < cfg.hr_size
    return served_at(side, cfg, cfg.g_scales)


def uses_hr_teacher(side: int, cfg: ServingConfig) -> bool:
    """Whether the HR teacher serves a face of `side` px: its served scale is one of the config's teacher_scales."""
    return served_at(side, cfg, cfg.teacher_scales)


class FSRFERPredictor:
    """The frozen model (extractor + classifier), G and, where valid chose it at some scale, the HR
    teacher, frozen, on one device."""

    def __init__(self, teacher_path: str | Path, generator_path: str | Path, cfg: ServingConfig,
                 device: str | torch.device = "cpu", batch_size: int = 64, hr_teacher_path: str | Path | None = None):

        self.cfg = cfg
        self.device = torch.device(device)
        self.teacher = load_covpool(teacher_path, map_location=self.device)
        self.generator = load_generator(generator_path, map_location=self.device)
        self.generator_path = Path(generator_path)
        self.batch_size = batch_size
        if cfg.teacher_scales and not hr_teacher_path:
            raise BadInput(f"the serving config sends scales {list(cfg.teacher_scales)} to the HR teacher, "
                           f"and no HR teacher file was given")
        self.hr_teacher = load_covpool(hr_teacher_path, map_location=self.device) if cfg.teacher_scales else None
        for path, model in ((teacher_path, self.teacher), (hr_teacher_path, self.hr_teacher)):
            if model is not None and model.cfg.in_channels != cfg.channels:
                raise BadInput(f"{path}: teacher expects {model.cfg.in_channels} channels, "
                               f"the serving config says {cfg.channels}")
            if model is not None and model.cfg.num_classes != len(cfg.classes):
                raise BadInput(f"{path}: teacher has {model.cfg.num_classes} classes, "
                               f"the serving config {len(cfg.classes)}")

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
            sides = [min(face.shape[:2]) for face in faces[start : start + self.batch_size]]
            by_teacher = [i for i, side in enumerate(sides) if uses_hr_teacher(side, self.cfg)]
            frozen = sorted(set(range(len(sides))) - set(by_teacher))  # each face runs one model only
            probs = torch.empty(len(sides), len(self.cfg.classes), device=self.device)
            if frozen:
                features = self.teacher.extractor(images[frozen])  # (b, d, d) LogEig
                lifted = torch.tensor([applies_g(sides[i], self.cfg) for i in frozen], device=self.device)
                if lifted.any():
                    features = torch.where(lifted[:, None, None], self.generator(features), features)
                probs[frozen] = torch.softmax(self.teacher.classifier(features), dim=1)
            if by_teacher:
                probs[by_teacher] = torch.softmax(self.hr_teacher(images[by_teacher]), dim=1)
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


@dataclass(frozen=True)
class SceneParams:
    """The pyfunc's inference params (its signature's params schema); the per-face path is the default.

    detect: each row is a photo, every face in it is found and classified; min_face_size: the
    smallest face MTCNN looks for (>= its 12-px window); upsample: detect on the photo enlarged
    by this factor (1..8), which finds faces under 12 px; min_confidence: the detector's score
    below which a face is ignored. MLflow drops param names the schema does not have (with a
    warning) before the model sees them.
    """

    detect: bool = False
    min_face_size: int = 12
    upsample: float = 1.0
    min_confidence: float = 0.9

    @classmethod
    def parse(cls, params: dict | None) -> SceneParams:
        """Params from a request, defaults filled; BadInput naming an unknown or bad one."""
        params = dict(params or {})
        names = {f.name for f in fields(cls)}
        if set(params) - names:
            raise BadInput(f"params: unknown {sorted(set(params) - names)}; the model takes {sorted(names)}")
        values = asdict(cls()) | params
        if not isinstance(values["detect"], (bool, np.bool_)):
            raise BadInput(f"params.detect: expected true or false, got {values['detect']!r}")
        for key, kind in (("min_face_size", int), ("upsample", float), ("min_confidence", float)):
            try:
                values[key] = kind(values[key])
            except (TypeError, ValueError):
                raise BadInput(f"params.{key}: expected a number, got {values[key]!r}") from None
        if values["min_face_size"] < 12:
            raise BadInput(f"params.min_face_size: {values['min_face_size']} px is below MTCNN's 12-px window "
                           f"(upsample finds smaller faces)")
        if not 1.0 <= values["upsample"] <= 8.0:
            raise BadInput(f"params.upsample: {values['upsample']} must lie in [1, 8]")
        if not 0.0 <= values["min_confidence"] <= 1.0:
            raise BadInput(f"params.min_confidence: {values['min_confidence']} must lie in [0, 1]")
        return cls(bool(values["detect"]), values["min_face_size"], values["upsample"], values["min_confidence"])


DEFAULT_PARAMS = asdict(SceneParams())
SCENE_COLUMNS = ["row", "face", "box_x", "box_y", "box_w", "box_h", "confidence", "landmarks", "native_size", "scale"]
FINDERS_KEPT = 4  # face finders (three ONNX nets each) kept for the last distinct detection params


def to_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    """An RGB uint8 (H, W, 3) face as the model's channels."""
    return rgb if channels == 3 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]


try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # serving code imported without MLflow (plain predictor use)
    PythonModel = object


class FacePyfunc(PythonModel):
    """MLflow pyfunc: DataFrame[`image`: encoded bytes] -> DataFrame[classes..., label, error].

    With params {"detect": true} each row is a photo: the output has one row per face found,
    with SCENE_COLUMNS (the input row, the face's index, box, landmarks, native size in px and
    the scale it is served at) before the class columns; a row with no face (or that does not
    decode) gives one row with face -1 and the reason in `error`. Faces are found on the photo
    in colour (MTCNN was trained on colour) and then converted to the model's channels.

    Subclasses say which predictor (an object with predict_proba(list of faces)) serves."""

    # MLflow's type-hint input validation is off: `predict` checks its DataFrame itself (a bad row becomes
    # an `error` cell, not a failed call) and the logged signature documents it (MLflow's own switch, the
    # one its ChatModel uses; without it every import warns that `predict` has no type hints)
    _skip_type_hint_validation = True

    def make_predictor(self, artifacts: dict, cfg: ServingConfig, device: str):
        raise NotImplementedError

    def load_context(self, context) -> None:
        cfg = json.loads(Path(context.artifacts["serving_config"]).read_text())
        g_scales = cfg.get("g_scales")
        self.cfg = ServingConfig(cfg["hr_size"], cfg["channels"], tuple(cfg["classes"]), cfg.get("face_crop", "warp"),
                                 None if g_scales is None else tuple(g_scales), tuple(cfg.get("scales", ())),
                                 tuple(cfg.get("teacher_scales", ())))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.predictor = self.make_predictor(context.artifacts, self.cfg, device)
        self._finders: dict[tuple, SceneFaces] = {}

    def predict(self, context, model_input, params: dict | None = None):
        try:
            scene = SceneParams.parse(params)
        except BadInput as err:  # the scoring server answers 400 with this message
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        column = model_input["image"] if hasattr(model_input, "columns") else model_input
        channels = 3 if scene.detect else self.cfg.channels
        images, errors = {}, []
        for i, data in enumerate(list(column)):
            try:
                images[i] = decode_image(data, channels, f"row {i}")
                errors.append("")
            except BadInput as err:
                errors.append(str(err))
        if scene.detect:
            return self.predict_scenes(images, errors, scene)
        probs = np.full((len(errors), len(self.cfg.classes)), np.nan)
        if images:
            probs[list(images)] = self.predictor.predict_proba(list(images.values()))
        return probabilities_frame(probs, self.cfg.classes, errors)

    def scene_faces(self, scene: SceneParams) -> SceneFaces:
        """The face finder for these params (kept for the last FINDERS_KEPT: loading MTCNN is not free)."""
        key = (scene.min_face_size, scene.upsample, scene.min_confidence)
        if key not in self._finders:
            if len(self._finders) >= FINDERS_KEPT:
                self._finders.pop(next(iter(self._finders)))
            self._finders[key] = SceneFaces(self.cfg.face_crop, self.cfg.hr_size, min_face_size=scene.min_face_size,
                                            min_confidence=scene.min_confidence, upsample=scene.upsample)
        return self._finders[key]

    def predict_scenes(self, images: dict[int, np.ndarray], errors: list[str], scene: SceneParams):
        """One output row per face of each decoded RGB photo in `images` (row -> image), one per failed row."""
        import pandas as pd

        finder = self.scene_faces(scene)
        meta, faces, face_errors = [], [], []
        for i, error in enumerate(errors):
            if not error and images[i].shape[0] * images[i].shape[1] * scene.upsample**2 > MAX_PIXELS:
                h, w = images[i].shape[:2]
                error = f"row {i}: image is {w}x{h}, over the {MAX_PIXELS:,}-pixel limit once upsampled x{scene.upsample:g}"
            crops = finder(images[i]) if not error else []
            if not crops:
                meta.append({"row": i, "face": -1, "box_x": -1, "box_y": -1, "box_w": 0, "box_h": 0, "confidence": 0.0,
                             "landmarks": [], "native_size": 0, "scale": 0.0})
                face_errors.append(error or f"row {i}: no face found")
                faces.append(None)
                continue
            for k, crop in enumerate(crops):
                x, y, w, h = crop.detection.box
                marks = crop.detection.landmarks
                meta.append({"row": i, "face": k, "box_x": x, "box_y": y, "box_w": w, "box_h": h,
                             "confidence": crop.detection.confidence,
                             "landmarks": [] if marks is None else np.round(marks, 2).tolist(),
                             "native_size": crop.native_size, "scale": served_scale(crop.native_size, self.cfg)})
                face_errors.append("")
                faces.append(to_channels(crop.face, self.cfg.channels))
        probs = np.full((len(faces), len(self.cfg.classes)), np.nan)
        found = [j for j, face in enumerate(faces) if face is not None]
        if found:
            probs[found] = self.predictor.predict_proba([faces[j] for j in found])
        frame = pd.DataFrame(meta, columns=SCENE_COLUMNS)
        return pd.concat([frame, probabilities_frame(probs, self.cfg.classes, face_errors)], axis=1)


class FSRFERPyfunc(FacePyfunc):
    """The `fsrfer` registered model: artifacts teacher, generator, serving_config, and hr_teacher where the
    serving config sends some scale to it."""

    def make_predictor(self, artifacts: dict, cfg: ServingConfig, device: str) -> FSRFERPredictor:
        return FSRFERPredictor(artifacts["teacher"], artifacts["generator"], cfg, device=device,
                               hr_teacher_path=artifacts.get("hr_teacher"))


def write_serving_config(cfg: ServingConfig, path: Path) -> Path:
    g_scales = None if cfg.g_scales is None else list(cfg.g_scales)
    path.write_text(json.dumps(asdict(cfg) | {"classes": list(cfg.classes), "g_scales": g_scales,
                                              "scales": list(cfg.scales), "teacher_scales": list(cfg.teacher_scales)},
                               indent=2) + "\n")
    return path
