"""ExpW (Expression in-the-Wild): origin/<image> and label/label.lst.

label.lst, one face per line: "image_name face_id top left right bottom confidence label",
label 0..6 = angry, disgust, fear, happy, sad, surprise, neutral. The face box is
cropped from the photo (records carry it as (x, y, w, h)); faces are then aligned by the
prepare stage like any in-the-wild photo.
"""

from __future__ import annotations

from pathlib import Path

from components.data.records import FaceRecord, Reject, resolve_inside
from components.io import BadInput

EXPW_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def read_expw(root: str | Path) -> tuple[list[FaceRecord], list[Reject]]:
    """Records (all in split "train": ExpW has no official partition) with face boxes."""
    root = Path(root)
    label_path = root / "label" / "label.lst"
    if not label_path.is_file():
        raise BadInput(f"{label_path}: ExpW label file not found")
    records, rejects = [], []
    for lineno, line in enumerate(label_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{label_path}:{lineno}"
        parts = line.split()
        if len(parts) != 8:
            rejects.append(Reject(where, f"expected 8 fields, got {len(parts)}"))
            continue
        name, _face_id, top, left, right, bottom, _conf, label = parts
        try:
            top_i, left_i, right_i, bottom_i = (int(float(v)) for v in (top, left, right, bottom))
        except (ValueError, OverflowError):  # OverflowError: int(float('inf'))
            rejects.append(Reject(where, "face box is not numeric"))
            continue
        if not label.isdecimal() or int(label) >= len(EXPW_CLASSES):
            rejects.append(Reject(where, f"unknown label {label!r} (expected 0..6)"))
            continue
        if right_i <= left_i or bottom_i <= top_i or min(top_i, left_i) < 0:
            rejects.append(Reject(where, f"empty or negative face box top={top} left={left} right={right} bottom={bottom}"))
            continue
        try:
            path = resolve_inside(root / "origin", name, where)
        except BadInput as err:
            rejects.append(Reject(where, str(err)))
            continue
        if not path.is_file():
            rejects.append(Reject(str(path), f"listed in {where} but the file is missing"))
            continue
        box = (left_i, top_i, right_i - left_i, bottom_i - top_i)
        records.append(FaceRecord(source=str(path), label=int(label), split="train", box=box))
    return records, rejects
