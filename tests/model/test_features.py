"""The feature cache: rows match the prepared data, reload is identical, values are the extractor's."""

from __future__ import annotations

import json

import numpy as np
import torch

from components.config import FeaturesConfig
from components.data.feature_cache import FeatureCache
from components.data.store import PreparedStore
from components.models.covpool import load_covpool, triu_vector
from components.runtime import images_to_tensor
from components.stages.features import cache_features


def test_rows_match_prepared_data(tiny_run):
    store, cache = PreparedStore(tiny_run.prepared), FeatureCache(tiny_run.features)
    assert cache.keys == ["x1", "x2", "x4", "x8"]
    for split in store.splits:
        n = len(store.array(split, "labels"))
        rows = n * len(cache.keys)
        assert cache.array(split, "features").shape == (rows, cache.manifest["feature_dim"])
        assert cache.array(split, "probs").shape == (rows, len(store.classes))
        np.testing.assert_array_equal(cache.array(split, "labels"), np.tile(store.array(split, "labels"), 4))
        np.testing.assert_array_equal(cache.array(split, "index")[cache.block(split, "x4")], np.arange(n))
        assert set(np.asarray(cache.array(split, "scale")[cache.block(split, "x8")])) == {8.0}
        np.testing.assert_allclose(cache.array(split, "probs").sum(1), 1.0, atol=1e-5)


def test_cached_features_are_the_frozen_extractors(tiny_run):
    store, cache = PreparedStore(tiny_run.prepared), FeatureCache(tiny_run.features)
    model = load_covpool(tiny_run.teacher)
    with torch.no_grad():
        direct = triu_vector(model.extractor(images_to_tensor(store.array("test", "hr")[:8]))).numpy()
    np.testing.assert_allclose(cache.array("test", "features")[:8], direct, rtol=1e-4, atol=1e-5)
    manifest = json.loads((tiny_run.features / "manifest.json").read_text())
    assert len(manifest["extractor_sha256"]) == 64 and manifest["bytes_on_disk"] > 0


def test_recompute_gives_identical_arrays_and_float16_halves_size(tiny_run, tmp_path):
    again = cache_features(FeaturesConfig(prepared=str(tiny_run.prepared), teacher=str(tiny_run.teacher),
                                          out=str(tmp_path / "again")), progress=False)
    half = cache_features(FeaturesConfig(prepared=str(tiny_run.prepared), teacher=str(tiny_run.teacher),
                                         out=str(tmp_path / "half"), dtype="float16"), progress=False)
    a, b = FeatureCache(tiny_run.features), FeatureCache(tmp_path / "again")
    for split in a.splits:
        for name in ("features", "probs", "labels", "scale", "index"):
            np.testing.assert_array_equal(a.array(split, name), b.array(split, name))
    f32 = sum(np.asarray(a.array(s, "features")).nbytes for s in a.splits)
    f16 = sum(np.asarray(FeatureCache(tmp_path / "half").array(s, "features")).nbytes for s in a.splits)
    assert f16 * 2 == f32
    assert half["bytes_on_disk"] < again["bytes_on_disk"]
