"""Data tier: checks on a prepared store (the tiny synthetic run, and FER+ when present)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from components.data.degrade import lr_size
from components.data.store import PreparedStore


def test_shapes_types_and_ranges(tiny_run):
    store = PreparedStore(tiny_run.prepared)
    size, ch = store.meta["hr_size"], store.meta["channels"]
    for split in store.splits:
        hr = np.asarray(store.array(split, "hr"))
        n = len(hr)
        assert hr.dtype == np.uint8 and hr.shape == (n, size, size, ch)
        assert hr.std() > 20, "faces should not be blank"
        for key, s in zip(store.scale_keys, store.meta["scales"]):
            lr = store.array(split, key)
            assert lr.dtype == np.uint8 and lr.shape == (n, lr_size(size, s), lr_size(size, s), ch)
        labels = np.asarray(store.array(split, "labels"))
        assert labels.min() >= 0 and labels.max() < len(store.classes)
        votes = np.asarray(store.array(split, "votes"))
        np.testing.assert_allclose(votes.sum(1), 1.0, atol=1e-6)
        assert (votes.argmax(1) == labels).all()


def test_class_balance_and_counts_match_meta(tiny_run):
    store = PreparedStore(tiny_run.prepared)
    for split in store.splits:
        counts = Counter(np.asarray(store.array(split, "labels")).tolist())
        assert {store.classes[k]: v for k, v in counts.items()} == {k: v for k, v in store.meta["counts"][split].items() if v}
        assert len(counts) == len(store.classes), f"{split} misses a class"
    train = sum(store.meta["counts"]["train"].values())
    valid = sum(store.meta["counts"]["valid"].values())
    assert valid == pytest.approx(0.1 * (train + valid), abs=len(store.classes))  # carved, stratified


def test_no_image_in_two_splits(tiny_run):
    store = PreparedStore(tiny_run.prepared)
    manifest = store.manifest()
    by_split: dict[str, set] = {}
    for row in manifest:
        by_split.setdefault(row["split"], set()).add(row["source"])
    splits = list(by_split)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not by_split[a] & by_split[b], f"{a} and {b} share source files"
    hashes = Counter((row["sha1"]) for row in manifest)
    assert max(hashes.values()) == 1, "identical faces in the store"
    assert len(manifest) == sum(len(store.array(s, "labels")) for s in store.splits)


FERPLUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "ferplus"


@pytest.mark.skipif(not (FERPLUS / "FER2013Train" / "label.csv").is_file(),
                    reason=f"FER+ not present at {FERPLUS} (the shared data folder beside the repo)")
def test_ferplus_prepared(tmp_path):
    from components.config import PrepareConfig
    from components.stages.prepare import prepare

    summary = prepare(PrepareConfig(dataset="ferplus", root=str(FERPLUS), out=str(tmp_path / "p"), hr_size=48,
                                    channels=1, scales=(4,)))
    assert summary["counts"] == {"train": 25045, "valid": 3191}
    store = PreparedStore(tmp_path / "p")
    assert store.array("train", "hr").shape == (25045, 48, 48, 1)
    assert store.array("valid", "x4").shape == (3191, 12, 12, 1)
    assert len(store.classes) == 8 and summary["rejects"] == 0
    counts = store.meta["counts"]["train"]
    assert counts["contempt"] == 120 and counts["disgust"] == 116
