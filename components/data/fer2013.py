"""FER2013 as its original CSV: columns emotion, pixels, Usage.

emotion 0..6 = angry, disgust, fear, happy, sad, surprise, neutral; pixels = 2304
space-separated grey levels (48x48); Usage: Training -> train, PublicTest -> valid,
PrivateTest -> test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from components.data.records import FaceRecord, Reject
from components.io import BadInput

FER2013_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
FER2013_SIDE = 48


def read_fer2013_csv(csv_path: str | Path) -> tuple[list[FaceRecord], list[Reject]]:
    """Records with inline 48x48 grey pixels; bad rows become rejects naming the row."""
    csv_path = Path(csv_path)
    if csv_path.is_dir():
        csv_path = csv_path / "fer2013.csv"
    if not csv_path.is_file():
        raise BadInput(f"{csv_path}: FER2013 CSV not found")
    records, rejects = [], []
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
        if missing:
            raise BadInput(f"{csv_path}: missing columns {sorted(missing)} (header: {reader.fieldnames})")
        for lineno, row in enumerate(reader, start=2):
            where = f"{csv_path}:{lineno}"
            emotion = (row["emotion"] or "").strip()
            if not emotion.isdecimal() or int(emotion) >= len(FER2013_CLASSES):
                rejects.append(Reject(where, f"unknown emotion label {emotion!r} (expected 0..6)"))
                continue
            split = USAGE_TO_SPLIT.get((row["Usage"] or "").strip())
            if split is None:
                rejects.append(Reject(where, f"unknown Usage {row['Usage']!r}"))
                continue
            try:
                values = np.array((row["pixels"] or "").split(), dtype=np.float64)
            except ValueError:
                rejects.append(Reject(where, "pixels are not numbers"))
                continue
            if values.size != FER2013_SIDE * FER2013_SIDE:
                rejects.append(Reject(where, f"expected {FER2013_SIDE * FER2013_SIDE} grey levels in 0..255, got {values.size}"))
                continue
            if not np.isfinite(values).all() or values.min() < 0 or values.max() > 255:  # "nan" parses as a float
                rejects.append(Reject(where, "grey levels must be finite numbers in 0..255"))
                continue
            pixels = values.astype(np.uint8).reshape(FER2013_SIDE, FER2013_SIDE, 1)
            records.append(FaceRecord(source=where, label=int(emotion), split=split, pixels=pixels))
    return records, rejects
