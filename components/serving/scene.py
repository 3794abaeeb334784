"""Faces in a scene: detect every face, crop it the way the model's training faces were made,
and measure its native size (the size in pixels the face really has in the photo).

Two crop rules, one per kind of training face (the prepared store's meta names it, as
`face_crop`, and the registered model's serving config carries it):
- "warp": the 5-point similarity warp of the prepare stage (RAF-DB aligned faces, the embedded
  default, ExpW): the landmarks go onto the template (components/data/align.py). The warp is
  made at the face's native size n = hr / s, where s is the scale the warp onto the HR-size
  template would apply, so a 20-px face stays a 20-px face (the model then upscales it by
  MATLAB bicubic, as its LR training faces were).
- "box": a square around the detector's box (FER2013 / FER+ faces are square crops, not
  warps). Measured on the first 300 FER+ Valid faces, each pasted into a flat 96-px frame
  (MTCNN, upsample 3; 274 found): the 48-px face's side is 0.94x the box's longer side
  (median; 10-90%: 0.77-1.20) and its centre lies 0.03 side above the box centre
  (BOX_SIDE, BOX_DY).

The face is cut from the image itself (replicating the border where the square leaves it),
never from the upsampled copy the detector may have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.data.align import TEMPLATE_100, Detection, FaceDetector, similarity_transform, warp
from components.io import BadInput

FACE_CROPS = ("warp", "box")
BOX_SIDE, BOX_DY = 0.94, -0.03  # FER2013-style square: side / box's longer side, centre shift / side


@dataclass(frozen=True)
class FaceCrop:
    """One face of a scene: the detection, the face cut as training faces were, its native size."""

    detection: Detection
    face: np.ndarray  # uint8 (n, n, C)
    native_size: int  # n


def face_crop_of(meta: dict) -> str:
    """The crop rule of a prepared store's faces, from its meta: FER2013 / FER+ and pre-cropped
    folders are boxes; RAF-DB aligned faces and every face the prepare stage aligned are warps."""
    if meta.get("dataset") in ("ferplus", "fer2013"):
        return "box"
    if meta.get("dataset") == "folders" and meta.get("aligned_input", True):
        return "box"
    return "warp"


def crop_face(image: np.ndarray, detection: Detection, rule: str, hr_size: int) -> FaceCrop:
    """Cut one detected face out of `image` (uint8 (H, W, C)) by `rule` ("warp" | "box")."""
    if rule == "warp":
        if detection.landmarks is None:
            raise BadInput("face crop 'warp' needs the detector's 5 landmarks")
        to_hr = similarity_transform(detection.landmarks, TEMPLATE_100 * (hr_size / 100.0))
        scale = float(np.sqrt(abs(np.linalg.det(to_hr[:, :2]))))  # HR px per image px
        n = max(1, int(round(hr_size / scale)))
        matrix = similarity_transform(detection.landmarks, TEMPLATE_100 * (n / 100.0))
        return FaceCrop(detection, warp(image, matrix, n), n)
    if rule == "box":
        x, y, w, h = detection.box
        n = max(1, int(round(BOX_SIDE * max(w, h))))
        cx, cy = x + w / 2.0, y + h / 2.0 + BOX_DY * n
        matrix = np.array([[1.0, 0.0, n / 2.0 - cx], [0.0, 1.0, n / 2.0 - cy]])  # a pure shift: pixels copied
        return FaceCrop(detection, warp_nearest(image, matrix, n), n)
    raise BadInput(f"face crop {rule!r}: expected one of {FACE_CROPS}")


def warp_nearest(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """A whole-pixel shift of a uint8 (H, W, C) image to (size, size, C), border replicated."""
    dx, dy = int(round(matrix[0, 2])), int(round(matrix[1, 2]))
    h, w = image.shape[:2]
    rows = np.clip(np.arange(size) - dy, 0, h - 1)
    cols = np.clip(np.arange(size) - dx, 0, w - 1)
    return image[rows][:, cols]


class SceneFaces:
    """Every face of a scene image, cropped by one rule for one HR size."""

    def __init__(self, rule: str, hr_size: int, min_face_size: int = 12, min_confidence: float = 0.9,
                 upsample: float = 1.0):
        if rule not in FACE_CROPS:
            raise BadInput(f"face crop {rule!r}: expected one of {FACE_CROPS}")
        self.rule, self.hr_size = rule, hr_size
        self.detector = FaceDetector(min_face_size, min_confidence, upsample)

    def __call__(self, image: np.ndarray) -> list[FaceCrop]:
        """uint8 (H, W, 1|3) -> one FaceCrop per detected face, largest first."""
        rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
        return [crop_face(image, d, self.rule, self.hr_size) for d in self.detector.detect(rgb)]

