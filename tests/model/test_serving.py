"""The path the registered model serves (components/serving/fsrfer.py): images of any size ->
HR size -> extractor -> G (LR only) -> classifier, consistent with the pipeline's own numbers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from components.config import FSRConfig
from components.data.feature_cache import FeatureCache
from components.data.store import PreparedStore
from components.io import BadInput
from components.models.covpool import load_covpool, triu_to_matrix
from components.models.rrdb import FeatureGenerator, GeneratorConfig, load_generator
from components.serving.fsrfer import FSRFERPredictor, ServingConfig, decode_image, to_hr
from components.training.fsr import write_generator


@pytest.fixture(scope="module")
def predictor(tiny_run, tmp_path_factory):
    """The tiny teacher with a G whose residual is made large, so applying it or not shows."""
    cfg = FSRConfig(channels=4, growth=4, blocks=1, out=str(tmp_path_factory.mktemp("g") / "fsr.pt"))
    torch.manual_seed(0)
    g = FeatureGenerator(GeneratorConfig(4, 4, 1))
    with torch.no_grad():
        g.conv_last.weight.mul_(100.0)
    write_generator(cfg, g.state_dict(), 0, load_covpool(tiny_run.teacher).cfg.bimap_dim)
    store = PreparedStore(tiny_run.prepared)
    serving = ServingConfig(store.meta["hr_size"], store.meta["channels"], tuple(store.classes))
    return FSRFERPredictor(tiny_run.teacher, cfg.out, serving, batch_size=5)


def test_hr_faces_give_the_teachers_cached_probabilities(tiny_run, predictor):
    store, cache = PreparedStore(tiny_run.prepared), FeatureCache(tiny_run.features)
    faces = list(np.asarray(store.array("test", "hr")[:7]))
    probs = predictor.predict_proba(faces)  # G is not applied at the HR size
    np.testing.assert_allclose(probs, cache.array("test", "probs")[:7], atol=1e-5)


def test_lr_faces_go_through_g_as_the_evaluation_does(tiny_run, predictor):
    store, cache = PreparedStore(tiny_run.prepared), FeatureCache(tiny_run.features)
    faces = list(np.asarray(store.array("test", "x4")[:6]))  # native LR size (hr / 4)
    probs = predictor.predict_proba(faces)
    block = cache.block("test", "x4")
    feats = torch.from_numpy(np.asarray(cache.array("test", "features")[block][:6]))
    teacher = load_covpool(tiny_run.teacher)
    with torch.no_grad():
        expected = torch.softmax(teacher.classifier(predictor.generator(triu_to_matrix(feats, teacher.cfg.bimap_dim))), 1)
        unlifted = torch.softmax(teacher.classifier(triu_to_matrix(feats, teacher.cfg.bimap_dim)), 1)
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-4)
    assert not np.allclose(probs, unlifted.numpy(), atol=1e-3)  # G really was applied


def test_any_size_and_channel_count_is_accepted(predictor):
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(9, 13, 3), (48, 48, 3), (150, 120, 3)]]
    probs = predictor.predict_proba(faces)
    assert probs.shape == (3, len(predictor.cfg.classes))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert predictor.predict_proba([]).shape == (0, len(predictor.cfg.classes))
    hr, scale = to_hr(faces[0], 48)
    assert hr.shape == (48, 48, 3) and hr.dtype == np.uint8 and scale == pytest.approx(48 / 9)


def test_decode_image_handles_gray_rgba_16bit_and_names_bad_rows():
    gray = cv2.imencode(".png", np.full((10, 12), 200, np.uint8))[1].tobytes()
    assert decode_image(gray, 3, "row 0").shape == (10, 12, 3)
    rgba = cv2.imencode(".png", np.full((5, 5, 4), 255, np.uint8))[1].tobytes()
    assert decode_image(rgba, 1, "row 1").shape == (5, 5, 1)
    deep = cv2.imencode(".png", np.full((4, 4), 65535, np.uint16))[1].tobytes()
    assert decode_image(deep, 1, "row 2").max() == 255
    with pytest.raises(BadInput, match="row 3: not a decodable image"):
        decode_image(b"\x89PNG garbage", 3, "row 3")
    with pytest.raises(BadInput, match="row 4: expected encoded image bytes"):
        decode_image("a string", 3, "row 4")


def test_generator_file_records_its_training_config(tmp_path):
    cfg = FSRConfig(channels=4, growth=4, blocks=1, sigma=1.8, out=str(tmp_path / "g.pt"))
    write_generator(cfg, FeatureGenerator(GeneratorConfig(4, 4, 1)).state_dict(), 3, 8)
    blob = torch.load(cfg.out, weights_only=True)
    assert blob["train_config"]["sigma"] == 1.8 and blob["iteration"] == 3
    assert load_generator(cfg.out).cfg.channels == 4
