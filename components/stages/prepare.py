"""Stage `prepare`: raw dataset -> HR faces (aligned) + every LR scale, packed per split.

One image's path: a reader (components/data/<dataset>.py) yields a FaceRecord ->
`load_face` reads it (inline pixels or file), crops its box, converts channels ->
`to_hr_face` aligns it (detector + 5-point warp) or passes an aligned face through at the
HR size -> per split, `degrade_bicubic` makes each LR scale -> `write_store`.
Every file or row that cannot be used is a Reject with its reason; the stage goes on.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from components.config import PrepareConfig, scale_key
from components.data.align import FaceAligner
from components.data.degrade import degrade_bicubic, imresize_uint8
from components.data.expw import EXPW_CLASSES, read_expw
from components.data.fer2013 import FER2013_CLASSES, read_fer2013_csv
from components.data.ferplus import FERPLUS_CLASSES, read_ferplus
from components.data.folders import read_image_folders
from components.data.rafdb import RAFDB_CLASSES, read_rafdb
from components.data.records import SPLITS, FaceRecord, Reject, convert_channels, load_image
from components.data.store import SplitArrays, write_store
from components.io import BadInput

log = logging.getLogger(__name__)


def read_dataset(cfg: PrepareConfig) -> tuple[tuple[str, ...], list[FaceRecord], list[Reject]]:
    """The dataset's class names, records and reader rejects."""
    if cfg.dataset == "rafdb":
        return RAFDB_CLASSES, *read_rafdb(cfg.root, aligned=cfg.aligned)
    if cfg.dataset == "ferplus":
        return FERPLUS_CLASSES, *read_ferplus(cfg.root)
    if cfg.dataset == "fer2013":
        return FER2013_CLASSES, *read_fer2013_csv(cfg.root)
    if cfg.dataset == "expw":
        return EXPW_CLASSES, *read_expw(cfg.root)
    return cfg.classes, *read_image_folders(cfg.root, cfg.classes)


def carve_validation(records: list[FaceRecord], fraction: float, seed: int) -> None:
    """Move a stratified, seeded share of train to valid when the dataset has no valid split.

    Deterministic: per class, train records sorted by source are permuted by a seeded RNG.
    """
    if fraction == 0 or any(r.split == "valid" for r in records):
        return
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[FaceRecord]] = {}
    for r in records:
        if r.split == "train":
            by_class.setdefault(r.label, []).append(r)
    for label in sorted(by_class):
        group = sorted(by_class[label], key=lambda r: r.source)
        n_valid = int(round(len(group) * fraction))
        for i in rng.permutation(len(group))[:n_valid]:
            group[i].split = "valid"


def load_face(record: FaceRecord, channels: int) -> np.ndarray:
    """The record's pixels as uint8 (H, W, channels), its box cropped when it has one."""
    if record.pixels is not None:
        image = convert_channels(record.pixels, channels, record.source)
    else:
        image = load_image(record.source, channels)
    if record.box is not None:
        x, y, w, h = record.box
        H, W = image.shape[:2]
        if x >= W or y >= H:
            raise BadInput(f"{record.source}: face box {record.box} lies outside the {W}x{H} image")
        image = image[y : min(y + h, H), x : min(x + w, W)]
    return image


def to_hr_face(image: np.ndarray, cfg: PrepareConfig, aligner, source: str) -> tuple[np.ndarray, int]:
    """HR face (hr, hr, C) and the number of faces seen (1 for pass-through)."""
    h, w = image.shape[:2]
    if aligner is not None:
        if min(h, w) < cfg.min_face_size:
            raise BadInput(f"{source}: image is {w}x{h}, smaller than the smallest detectable face ({cfg.min_face_size} px)")
        return aligner.align(image, source)
    if min(h, w) < cfg.hr_size:
        raise BadInput(f"{source}: image is {w}x{h}, smaller than the HR size {cfg.hr_size} (upscaling would invent detail)")
    if (h, w) != (cfg.hr_size, cfg.hr_size):
        side = min(h, w)  # centre square, then MATLAB-bicubic down to the HR size
        top, left = (h - side) // 2, (w - side) // 2
        image = imresize_uint8(image[top : top + side, left : left + side], output_shape=(cfg.hr_size, cfg.hr_size))
    return image, 1


def relative_source(source: str, root: str) -> str:
    """A source path relative to the dataset root, so the store does not depend on where the repo lives."""
    base = str(Path(root).resolve())
    return source[len(base) + 1 :] if source.startswith(base + "/") else source


def prepare(cfg: PrepareConfig) -> dict:
    """Run the stage; returns a summary (counts per split, rejects, duplicates across splits)."""
    classes, records, rejects = read_dataset(cfg)
    if not records:
        raise BadInput(f"{cfg.root}: no usable {cfg.dataset} records ({len(rejects)} rejected)")
    carve_validation(records, cfg.valid_fraction, cfg.seed)
    aligner = None
    if not cfg.aligned:

        aligner = FaceAligner(cfg.hr_size, cfg.min_face_size, cfg.min_confidence)

    faces: dict[str, list[tuple[FaceRecord, np.ndarray]]] = {s: [] for s in SPLITS}
    extra_faces = 0
    for record in tqdm(records, desc=f"prepare {cfg.dataset}", unit="img", mininterval=2):
        try:
            face, n_faces = to_hr_face(load_face(record, cfg.channels), cfg, aligner, record.source)
        except BadInput as err:
            rejects.append(Reject(record.source, str(err).removeprefix(f"{record.source}: ")))
            continue
        if n_faces > 1:
            extra_faces += n_faces - 1
            log.info("%s: %d faces found, kept the largest", record.source, n_faces)
        faces[record.split].append((record, face))

    splits, manifest, counts = {}, [], {}
    scale_keys = [scale_key(s) for s in cfg.scales]
    for split, items in faces.items():
        if not items:
            continue
        hr = np.stack([face for _, face in items])  # (N, H, W, C) uint8
        labels = np.array([r.label for r, _ in items], dtype=np.int64)
        votes = np.stack([r.votes if r.votes is not None else np.eye(len(classes), dtype=np.float32)[r.label] for r, _ in items])
        lr = {key: np.concatenate([degrade_bicubic(hr[i : i + cfg.batch_size], s) for i in range(0, len(hr), cfg.batch_size)])
              for key, s in zip(scale_keys, cfg.scales)}
        splits[split] = SplitArrays(hr=hr, lr=lr, labels=labels, votes=votes)
        for i, (record, face) in enumerate(items):
            manifest.append({"split": split, "index": i, "source": relative_source(record.source, cfg.root),
                             "label": record.label,
                             "sha1": hashlib.sha1(face.tobytes()).hexdigest()})
        per_class = Counter(labels.tolist())
        counts[split] = {classes[k]: per_class.get(k, 0) for k in range(len(classes))}

    hashes_by_split: dict[str, set[str]] = {}
    for row in manifest:
        hashes_by_split.setdefault(row["split"], set()).add(row["sha1"])
    split_names = list(hashes_by_split)
    duplicates = sum(len(hashes_by_split[a] & hashes_by_split[b])
                     for i, a in enumerate(split_names) for b in split_names[i + 1:])
    meta = {
        "dataset": cfg.dataset, "root": str(cfg.root), "classes": list(classes), "hr_size": cfg.hr_size,
        "channels": cfg.channels, "scales": list(cfg.scales), "scale_keys": scale_keys, "aligned_input": cfg.aligned,
        "counts": counts, "rejects": len(rejects), "extra_faces_ignored": extra_faces,
        "identical_images_across_splits": duplicates,
    }
    write_store(cfg.out, splits, manifest, rejects, meta)
    return {"counts": {s: sum(c.values()) for s, c in counts.items()}, "rejects": len(rejects),
            "identical_images_across_splits": duplicates, "out": str(Path(cfg.out))}
