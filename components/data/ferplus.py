"""FER+ (FER2013 images with Microsoft's FER+ votes), in the standard FER+ layout.

    FER2013Train/ label.csv + images;  FER2013Valid/ ...;  FER2013Test/ ... (if present)

label.csv, no header: image name, face box "(x, y, w, h)", 10 vote counts in the order
neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF.

Majority protocol of the FER+ reference code (FERPlus/src/ferplus.py, _process_data):
votes of 1 are zeroed (outlier removal); the top class is kept if it holds more than
half of the remaining votes, otherwise the image is "unknown"; images whose result is
unknown or not-a-face are left out. The vote distribution over the 8 emotions (after
outlier removal, normalised) is kept on the record for probability-label training.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from components.data.records import FaceRecord, Reject, resolve_inside
from components.io import BadInput

FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
FERPLUS_FOLDERS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
N_VOTE_COLUMNS = 10  # 8 emotions + unknown + not-a-face


def majority_label(votes: np.ndarray) -> int | None:
    """FER+ majority label of 10 vote counts, or None for unknown / not-a-face."""
    cleaned = np.where(votes <= 1, 0.0, votes.astype(np.float64))
    total = cleaned.sum()
    top = int(np.argmax(cleaned))
    if total == 0 or cleaned[top] <= 0.5 * total:
        return None
    return top if top < len(FERPLUS_CLASSES) else None


def read_ferplus(root: str | Path) -> tuple[list[FaceRecord], list[Reject]]:
    """Records of every split folder present under root (at least FER2013Train)."""
    root = Path(root)
    if not (root / FERPLUS_FOLDERS["train"] / "label.csv").is_file():
        raise BadInput(f"{root}: no {FERPLUS_FOLDERS['train']}/label.csv (is this a FER+ folder?)")
    records, rejects = [], []
    for split, folder in FERPLUS_FOLDERS.items():
        label_path = root / folder / "label.csv"
        if not label_path.is_file():
            continue
        with open(label_path, newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh), start=1):
                where = f"{label_path}:{lineno}"
                if not row:
                    continue
                if len(row) != 2 + N_VOTE_COLUMNS:
                    rejects.append(Reject(where, f"expected {2 + N_VOTE_COLUMNS} columns, got {len(row)}"))
                    continue
                try:
                    votes = np.array([float(v) for v in row[2:]])
                except ValueError:
                    rejects.append(Reject(where, f"vote counts are not numbers: {row[2:]}"))
                    continue
                if not np.isfinite(votes).all():
                    rejects.append(Reject(where, f"vote counts are not finite numbers: {row[2:]}"))
                    continue
                if (votes < 0).any():
                    rejects.append(Reject(where, "negative vote count"))
                    continue
                label = majority_label(votes)
                if label is None:
                    continue  # unknown / not-a-face by the protocol: left out, not an error
                try:
                    path = resolve_inside(root / folder, row[0], where)
                except BadInput as err:
                    rejects.append(Reject(where, str(err)))
                    continue
                if not path.is_file():
                    rejects.append(Reject(str(path), f"listed in {where} but the file is missing"))
                    continue
                kept = np.where(votes[: len(FERPLUS_CLASSES)] <= 1, 0.0, votes[: len(FERPLUS_CLASSES)])
                records.append(
                    FaceRecord(source=str(path), label=label, split=split, votes=(kept / kept.sum()).astype(np.float32))
                )
    return records, rejects
