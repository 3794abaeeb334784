"""The prepared store: packed arrays per split, a manifest, a rejects report and meta.json.

    <out>/meta.json            dataset, classes, hr_size, channels, scales, counts per split and class
    <out>/manifest.csv         split, index, source, label, sha1 (of the stored HR face)
    <out>/rejects.csv          source, reason (every file or row left out, and why)
    <out>/<split>/hr.npy       uint8 (N, H, W, C)
    <out>/<split>/x<s>.npy     uint8 (N, H // s, W // s, C), MATLAB-bicubic LR at native size
    <out>/<split>/labels.npy   int64 (N,)
    <out>/<split>/votes.npy    float32 (N, K) label distribution (one-hot without votes)

Written atomically: everything goes to a sibling temp folder that replaces <out> in one
rename at the end, so an interrupted stage never leaves a store a rerun would trust.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.data.degrade import upscale_to
from components.data.records import Reject
from components.io import atomic_directory


@dataclass
class SplitArrays:
    """One split's arrays: hr (N, H, W, C), lr {scale key: (N, h, w, C)}, labels (N,), votes (N, K)."""

    hr: np.ndarray
    lr: dict[str, np.ndarray]
    labels: np.ndarray
    votes: np.ndarray


def write_store(
    out: str | Path,
    splits: dict[str, SplitArrays],
    manifest: list[dict],
    rejects: list[Reject],
    meta: dict,
) -> None:
    """Write the whole store to a temp folder beside `out`, then swap it in."""
    with atomic_directory(out) as tmp:
        for split, arrays in splits.items():
            d = tmp / split
            d.mkdir()
            np.save(d / "hr.npy", arrays.hr)
            for key, lr in arrays.lr.items():
                np.save(d / f"{key}.npy", lr)
            np.save(d / "labels.npy", arrays.labels.astype(np.int64))
            np.save(d / "votes.npy", arrays.votes.astype(np.float32))
        with open(tmp / "manifest.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["split", "index", "source", "label", "sha1"])
            writer.writeheader()
            writer.writerows(manifest)
        write_rejects(tmp / "rejects.csv", rejects)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "reason"])
        writer.writerows((r.source, r.reason) for r in rejects)


class PreparedStore:
    """Read access to a prepared store; arrays are memory-mapped."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.root}: not a prepared store (no meta.json); run `fsrfer prepare`")
        self.meta = json.loads(meta_path.read_text())

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def splits(self) -> list[str]:
        return list(self.meta["counts"])

    @property
    def scale_keys(self) -> list[str]:
        return self.meta["scale_keys"]

    def array(self, split: str, name: str) -> np.ndarray:
        """name: 'hr', a scale key such as 'x4', 'labels' or 'votes'."""
        path = self.root / split / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such array in the prepared store")
        return np.load(path, mmap_mode="r")

    def split_sha256(self, split: str) -> str:
        """Hex sha256 over one split's arrays (every .npy file of it, in name order: HR, each LR scale,
        labels, votes): two stores with the same value hold the same faces, scales and labels there."""
        import hashlib

        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no {split} split in the prepared store")
        h = hashlib.sha256()
        for path in sorted(folder.glob("*.npy")):
            h.update(path.name.encode() + b"\0")
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()

    def manifest(self) -> list[dict]:
        with open(self.root / "manifest.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    def rejects(self) -> list[dict]:
        with open(self.root / "rejects.csv", newline="") as fh:
            return list(csv.DictReader(fh))


class ScaledFaces:
    """One split's faces at the input size: HR as stored, every LR scale upscaled back (MATLAB bicubic)."""

    def __init__(self, prepared: str, split: str, keys: list[str], rows: np.ndarray | None = None):
        store = PreparedStore(prepared)
        hr = store.array(split, "hr")
        rows = np.arange(len(hr)) if rows is None else rows
        self.hr = np.asarray(hr[rows])
        self.labels = np.asarray(store.array(split, "labels")[rows])
        size = self.hr.shape[1:3]
        self.faces = {k: self.hr if k == "x1" else upscale_to(np.asarray(store.array(split, k)[rows]), size)
                      for k in keys}
