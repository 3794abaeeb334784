"""RAF-DB basic: Image/aligned (100x100), Image/original, EmoLabel/list_patition_label.txt.

The label file (the misspelling "patition" is RAF-DB's own) has one line per image:
"train_00001.jpg 5". Labels 1..7 = surprise, fear, disgust, happiness, sadness, anger,
neutral. Aligned files are named "<stem>_aligned.jpg". Splits: train_ and test_ by name.
"""

from __future__ import annotations

from pathlib import Path

from components.data.records import FaceRecord, Reject, resolve_inside
from components.io import BadInput

RAFDB_CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"


def read_rafdb(root: str | Path, aligned: bool = True) -> tuple[list[FaceRecord], list[Reject]]:
    """Records for every labelled image; aligned=False reads Image/original (needs alignment)."""
    root = Path(root)
    label_path = root / LABEL_FILE
    if not label_path.is_file():
        raise BadInput(f"{label_path}: RAF-DB label file not found (is {root} a RAF-DB basic folder?)")
    image_dir = root / "Image" / ("aligned" if aligned else "original")
    records, rejects = [], []
    for lineno, line in enumerate(label_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{label_path}:{lineno}"
        parts = line.split()
        if len(parts) != 2:
            rejects.append(Reject(where, f"expected '<name> <label>', got {line!r}"))
            continue
        name, label_text = parts
        if not label_text.isdecimal() or not 1 <= int(label_text) <= len(RAFDB_CLASSES):
            rejects.append(Reject(where, f"unknown label {label_text!r} (RAF-DB labels are 1..7)"))
            continue
        if name.startswith("train_"):
            split = "train"
        elif name.startswith("test_"):
            split = "test"
        else:
            rejects.append(Reject(where, f"name {name!r} starts with neither train_ nor test_"))
            continue
        # Keep any folder part of the listed name, so a name escaping the root is caught
        # below in aligned mode too (Path.stem alone would silently drop "../").
        listed = Path(name)
        file_name = str(listed.with_name(f"{listed.stem}_aligned{listed.suffix}")) if aligned else name
        try:
            path = resolve_inside(image_dir, file_name, where)
        except BadInput as err:
            rejects.append(Reject(where, str(err)))
            continue
        if not path.is_file():
            rejects.append(Reject(str(path), f"listed in {where} but the file is missing"))
            continue
        records.append(FaceRecord(source=str(path), label=int(label_text) - 1, split=split))
    return records, rejects
