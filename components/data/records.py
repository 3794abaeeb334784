"""The one record type every dataset reader produces, the reject type, and image loading.

A reader turns a dataset in its native layout into `FaceRecord`s (one per labelled face)
plus `Reject`s (one per row or file it could not use, with the reason). Pixels are read
later by `load_image`, except where the dataset stores them inline (FER2013 CSV).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from components.io import BadInput

SPLITS = ("train", "valid", "test")


@dataclass
class FaceRecord:
    """One labelled face: where it comes from and which split it belongs to.

    source: path of the image file (or "<csv>:<row>" for inline pixels).
    label: class index into the dataset's class list.
    box: optional face box (x, y, w, h) in source pixels to crop before use (ExpW).
    votes: optional per-class vote counts (FER+), kept for probability-label training.
    pixels: inline image (FER2013 CSV) or None to read `source` from disk.
    """

    source: str
    label: int
    split: str
    box: tuple[int, int, int, int] | None = None
    votes: np.ndarray | None = None
    pixels: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Reject:
    """A file or row left out, with the reason (written to the rejects report)."""

    source: str
    reason: str


def _to_uint8(image: np.ndarray, path: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:  # 16-bit PNG/TIFF: keep the top 8 bits' worth of range
        return np.round(image.astype(np.float64) / 257.0).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    raise BadInput(f"{path}: unsupported pixel type {image.dtype}")


def load_image(path: str | Path, channels: int) -> np.ndarray:
    """Read an image file as uint8 (H, W, channels), RGB order for 3 channels.

    Accepts grayscale, RGB, RGBA (alpha dropped, composited on black), palette and
    16-bit files. Raises BadInput naming the file for missing, empty, truncated,
    corrupt or non-image files.
    """
    path = str(path)
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{path}: file not found")
    if p.stat().st_size == 0:
        raise BadInput(f"{path}: empty file (0 bytes)")
    raw = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadInput(f"{path}: not a readable image (corrupt, truncated or not an image format)")
    if _looks_truncated(raw, path):
        raise BadInput(f"{path}: truncated image file")
    image = _to_uint8(image, path)
    return convert_channels(image, channels, path)


def _looks_truncated(raw: np.ndarray, path: str) -> bool:
    """JPEG and PNG decoders may return a partly grey image for a cut file; check the end marker."""
    head = raw[:8].tobytes()
    tail = raw[-12:].tobytes()
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" not in raw[-64:].tobytes()
    if head.startswith(b"\x89PNG"):
        return b"IEND" not in tail
    return False


def convert_channels(image: np.ndarray, channels: int, source: str = "<array>") -> np.ndarray:
    """uint8 image (H, W[, 1|3|4]) in OpenCV order -> (H, W, channels), RGB for 3 channels."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise BadInput(f"{source}: unsupported image shape {image.shape}")
    if image.shape[2] == 4:  # BGRA: composite on black so transparent areas do not leak colour
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = np.round(image[:, :, :3].astype(np.float32) * alpha).astype(np.uint8)
    if image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 3:
        return image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    if channels == 1:
        if image.shape[2] == 1:
            return image
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    raise BadInput(f"channels must be 1 or 3, got {channels}")


def resolve_inside(root: Path, name: str, source: str) -> Path:
    """root / name, refusing names that escape the dataset root (../, absolute paths)."""
    root = root.resolve()
    path = (root / name).resolve()
    if root != path and root not in path.parents:
        raise BadInput(f"{source}: path {name!r} points outside the dataset root {root}")
    return path
