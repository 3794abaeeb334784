"""The common image-folder layout: <root>/<split>/<class>/<image>, as FER2013 exports and SFEW 2.0.

Split folder names: train/Train, val/valid/validation/Val, test/Test. Class folders are
matched case-insensitively against the configured class names (aliases such as
"happy" -> "happiness" are accepted); any other folder is reported as a reject.
"""

from __future__ import annotations

from pathlib import Path

from components.data.records import FaceRecord, Reject
from components.io import BadInput

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "valid", "valid": "valid", "validation": "valid", "publictest": "valid",
    "test": "test", "privatetest": "test",
}
CLASS_ALIASES = {
    "angry": "anger", "disgusted": "disgust", "fearful": "fear", "happy": "happiness",
    "sad": "sadness", "surprised": "surprise", "surprise": "surprise",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_image_folders(root: str | Path, classes: tuple[str, ...]) -> tuple[list[FaceRecord], list[Reject]]:
    """Records for every image under <root>/<split>/<class>/; labels index into `classes`."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"{root}: dataset folder not found")
    index = {name.lower(): i for i, name in enumerate(classes)}
    records, rejects = [], []
    split_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in SPLIT_ALIASES]
    if not split_dirs:
        raise BadInput(f"{root}: no split folders (expected some of train/, val/, test/)")
    for split_dir in split_dirs:
        split = SPLIT_ALIASES[split_dir.name.lower()]
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            name = class_dir.name.lower()
            label = index.get(CLASS_ALIASES.get(name, name))
            if label is None:
                rejects.append(Reject(str(class_dir), f"unknown class folder {class_dir.name!r} (classes: {', '.join(classes)})"))
                continue
            for path in sorted(class_dir.iterdir()):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    records.append(FaceRecord(source=str(path), label=label, split=split))
                elif path.is_file():
                    rejects.append(Reject(str(path), f"not an image file (suffix {path.suffix!r})"))
    return records, rejects
