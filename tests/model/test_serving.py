"""The path the registered model serves (components/serving/fsrfer.py): images of any size ->
HR size -> extractor -> G (LR only) -> classifier, consistent with the pipeline's own numbers."""

from __future__ import annotations

from dataclasses import replace

import cv2
import mlflow
import numpy as np
import pytest
import torch

from components.config import FSRConfig
from components.data.degrade import imresize_uint8, upscale_to
from components.data.feature_cache import FeatureCache
from components.data.store import PreparedStore
from components.io import BadInput
from components.metrics import G_ALWAYS, HR_TEACHER, fsr_g_scales, fsr_routes, route_scales
from components.models.covpool import load_covpool, triu_to_matrix
from components.models.rrdb import FeatureGenerator, GeneratorConfig, load_generator
from components.serving.fsrfer import FSRFERPredictor, ServingConfig, applies_g, decode_image, to_hr, uses_hr_teacher
from components.stages.evaluate import served_fsr_column
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
    feats = torch.from_numpy(np.array(cache.array("test", "features")[block][:6]))  # a writable copy
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


def test_a_non_square_face_is_centre_cropped_as_prepare_crops_not_squashed():
    rng = np.random.default_rng(1)
    face = rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)
    hr, scale = to_hr(face, 100)
    centre, _ = to_hr(face[:, 15:65], 100)
    np.testing.assert_array_equal(hr, centre)
    assert scale == 2.0  # 100 / the square's side, 50
    squashed = upscale_to(face[None], (100, 100))[0]
    assert not np.array_equal(hr, squashed)
    big = rng.integers(0, 256, (130, 100, 3), dtype=np.uint8)  # larger than HR: prepare's path (centre square, down)
    np.testing.assert_array_equal(to_hr(big, 64)[0], imresize_uint8(big[15:115], output_shape=(64, 64)))


@pytest.mark.parametrize("hr, scales, g_scales, side, lifted", [
    (100, (2, 3, 4, 5, 6, 7, 8), (2, 3, 4, 5, 6, 7, 8), 99, False),  # a 99 px face at HR 100 is x1: not lifted
    (100, (2, 4, 8), (1, 2), 99, True),  # ... unless valid chose G at x1 too
    (64, (2, 4, 8), (4,), 16, True), (64, (2, 4, 8), (4,), 32, False),
    (64, (2, 3, 4), (3,), 21, True),  # lr_size(64, 3) = 21 px: x3, not the nearest whole ratio 64 / 21 = 3.05
    (64, (2, 4, 8), (8,), 3, True),  # beyond the largest trained scale: x8's rule
    (48, (2, 3, 4, 5, 6, 7, 8), (7,), 6, False),  # FER+: x7 and x8 faces are both 6 px; 48 / 6 = 8 counts as x8
    (48, (2, 3, 4, 5, 6, 7, 8), (8,), 6, True),
    (64, (2, 4, 8), (), 16, False),
    (64, (2, 4, 8), None, 16, True), (64, (2, 4, 8), None, 64, False),  # a config from before the rule
])
def test_g_is_applied_at_the_validated_scales_only(hr, scales, g_scales, side, lifted):
    cfg = ServingConfig(hr, 3, ("a", "b"), g_scales=g_scales, scales=scales)
    assert applies_g(side, cfg) is lifted


def test_served_rows_equal_c_of_g_of_f_where_the_rule_lifts_and_c_of_f_elsewhere(tiny_run, predictor):
    """Per row against the feature cache (the evaluate stage's inputs): x4 rows lifted, x2 and HR rows not,
    a non-square face cropped to its x4 centre."""
    store, cache = PreparedStore(tiny_run.prepared), FeatureCache(tiny_run.features)
    rule = FSRFERPredictor(tiny_run.teacher, predictor.generator_path,
                           replace(predictor.cfg, g_scales=(4.0,), scales=(2.0, 4.0, 8.0)))
    x4, x2 = np.asarray(store.array("test", "x4")[:3]), np.asarray(store.array("test", "x2")[:3])
    hr = np.asarray(store.array("test", "hr")[:3])
    wide = np.pad(x4[0], ((0, 0), (5, 5), (0, 0)), mode="edge")  # 16 x 26: its centre square is the x4 face
    probs = rule.predict_proba(list(x4) + list(x2) + list(hr) + [wide])
    teacher = load_covpool(tiny_run.teacher)
    d = teacher.cfg.bimap_dim

    def direct(key: str, lift: bool) -> np.ndarray:
        feats = triu_to_matrix(torch.from_numpy(np.array(cache.array("test", "features")[cache.block("test", key)][:3])), d)
        with torch.no_grad():
            return torch.softmax(teacher.classifier(rule.generator(feats) if lift else feats), 1).numpy()

    np.testing.assert_allclose(probs[:3], direct("x4", True), atol=1e-4)
    np.testing.assert_allclose(probs[3:6], direct("x2", False), atol=1e-4)
    np.testing.assert_allclose(probs[6:9], cache.array("test", "probs")[:3], atol=1e-5)
    np.testing.assert_allclose(probs[9], probs[0], atol=1e-6)
    assert not np.allclose(probs[:3], direct("x4", False), atol=1e-3)  # G really was applied at x4


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


def test_the_fsrfer_column_is_g_where_valid_says_it_pays_and_the_teacher_elsewhere():
    def row(acc: float) -> dict:
        return {"accuracy": acc, "mean_class_accuracy": acc}

    table = {split: {"bicubic": {k: row(0.5) for k in ("x1", "x2", "x4")},
                     G_ALWAYS: {"x1": row(0.4), "x2": row(0.5 if split == "valid" else 0.9),
                                "x4": row(0.6 if split == "valid" else 0.1)}}
             for split in ("valid", "test")}
    assert served_fsr_column(table) == {"x1": "bicubic", "x2": "bicubic", "x4": G_ALWAYS}  # x2 ties on valid: no G
    assert fsr_g_scales(table) == (4.0,)
    assert table["test"]["fsrfer"] == {"x1": row(0.5), "x2": row(0.5), "x4": row(0.1)}
    assert fsr_g_scales({"valid": {"bicubic": {}}}) is None


def test_with_an_hr_teacher_column_each_scale_serves_its_best_path_on_valid_the_simpler_on_a_tie():
    def row(acc: float) -> dict:
        return {"accuracy": acc, "mean_class_accuracy": acc}

    valid = {"bicubic": {"x1": row(0.5), "x2": row(0.5), "x4": row(0.5), "x8": row(0.5)},
             HR_TEACHER: {"x1": row(0.7), "x2": row(0.5), "x4": row(0.6), "x8": row(0.6)},
             G_ALWAYS: {"x1": row(0.6), "x2": row(0.5), "x4": row(0.6), "x8": row(0.7)}}
    test = {method: {key: row(0.9 if method == "bicubic" else 0.1) for key in rows} for method, rows in valid.items()}
    table = {"valid": valid, "test": test}
    routes = served_fsr_column(table)
    assert routes == {"x1": HR_TEACHER, "x2": "bicubic", "x4": HR_TEACHER, "x8": G_ALWAYS}  # test's numbers never count
    assert route_scales(routes, HR_TEACHER) == (1.0, 4.0) and fsr_g_scales(table) == (8.0,)
    assert [table["test"]["fsrfer"][k]["accuracy"] for k in ("x1", "x2", "x4", "x8")] == [0.1, 0.9, 0.1, 0.1]


def test_evaluate_never_serves_g_where_it_loses_on_valid(registered_fsrfer):
    table = registered_fsrfer.table
    g_scales = fsr_g_scales(table)
    assert g_scales and set(g_scales) < {1.0, 2.0, 4.0, 8.0}, g_scales  # the trained G pays at some scales, not all
    for split in ("valid", "test"):
        for key, scores in table[split]["fsrfer"].items():
            source = G_ALWAYS if float(key[1:]) in g_scales else "bicubic"
            assert scores == table[split][source][key], (split, key)
    valid = table["valid"]
    assert all(valid["fsrfer"][k]["accuracy"] >= valid["bicubic"][k]["accuracy"] for k in valid["fsrfer"])
    client = mlflow.MlflowClient(registered_fsrfer.uri)
    version = client.get_model_version("fsrfer", "1")
    assert client.get_run(version.run_id).data.params["g_scales"] == ",".join(f"{s:g}" for s in g_scales)
    served = mlflow.pyfunc.load_model(client.get_model_version_download_uri("fsrfer", "1")).unwrap_python_model()
    assert served.cfg.g_scales == g_scales and served.cfg.face_crop == "warp" and served.cfg.scales == (2.0, 4.0, 8.0)


def test_the_hr_teacher_serves_the_scales_where_valid_chose_it_in_the_table_and_the_registered_model(
        tiny_run, yardsticks, registered_fsrfer, tmp_path, monkeypatch):
    """evaluate with `hr_teacher` (any second CovPoolFER of the same classes: here the yardstick multi-scale
    CNN, which beats the tiny frozen teacher at some scales on valid) adds its column and serves each scale's
    best path on valid; register bundles it, and the registered model sends those scales' faces to it."""
    from components.config import EvaluateConfig, RegisterConfig
    from components.data.store import ScaledFaces
    from components.runtime import predict_proba
    from components.stages.evaluate import evaluate
    from components.stages.register import register

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    common = dict(features=str(tiny_run.features), teacher=str(tiny_run.teacher), fsr=str(registered_fsrfer.root / "fsr.pt"))
    table = evaluate(EvaluateConfig(**common, hr_teacher=str(yardsticks.multiscale_cnn), prepared=str(tiny_run.prepared),
                                    metrics=str(tmp_path / "evaluate.json"), plots=str(tmp_path / "plots"),
                                    experiment="test-evaluate"))
    hr_teacher = load_covpool(yardsticks.multiscale_cnn)
    faces = ScaledFaces(str(tiny_run.prepared), "valid", ["x1", "x4"])
    for key in ("x1", "x4"):  # the column is the second model on the faces the frozen one saw
        own = (predict_proba(hr_teacher, faces.faces[key]).argmax(1) == faces.labels).mean()
        assert table["valid"][HR_TEACHER][key]["accuracy"] == pytest.approx(own)
    routes = fsr_routes(table)
    teacher_scales = route_scales(routes, HR_TEACHER)
    assert teacher_scales, table["valid"]  # the fixture's second model wins somewhere
    for split in ("valid", "test"):
        for key, path in routes.items():
            assert table[split]["fsrfer"][key] == table[split][path][key], (split, key)
    for key, scores in table["valid"]["fsrfer"].items():
        assert all(scores["accuracy"] >= table["valid"][p][key]["accuracy"] for p in ("bicubic", HR_TEACHER, G_ALWAYS))

    registration = dict(common, prepared=str(tiny_run.prepared), metrics=str(tmp_path / "evaluate.json"),
                        out=str(tmp_path / "fsrfer.json"), experiment="test-register", model_name="fsrfer-routed")
    with pytest.raises(BadInput, match="register.hr_teacher"):  # the table needs it and none is named: nothing registered
        register(RegisterConfig(**registration))
    assert not (tmp_path / "fsrfer.json").exists()
    register(RegisterConfig(**registration, hr_teacher=str(yardsticks.multiscale_cnn)))
    served = mlflow.pyfunc.load_model("models:/fsrfer-routed/1").unwrap_python_model()
    assert served.cfg.teacher_scales == teacher_scales and served.cfg.g_scales == route_scales(routes, G_ALWAYS)
    store = PreparedStore(tiny_run.prepared)
    scale = teacher_scales[-1]
    key = "hr" if scale == 1.0 else f"x{scale:g}"
    native = np.asarray(store.array("valid", key)[:6])
    assert uses_hr_teacher(min(native.shape[1:3]), served.cfg)
    expected = predict_proba(hr_teacher, native if scale == 1.0 else upscale_to(native, (64, 64)))
    np.testing.assert_allclose(served.predictor.predict_proba(list(native)), expected, atol=1e-5)


def test_the_readme_python_snippet_runs_as_pasted(registered_fsrfer, tmp_path):
    """README's "Python" snippet, cut from README.md and run as a user would: from a project folder with
    the registry at mlruns/mlflow.db and the embedded default's photos under data/raw/synthetic (here the
    registered tiny run's), in a fresh interpreter. It prints the photo as one face (a row with a label)
    and every face found in it."""
    import os
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = re.search(r"python - <<'PY'\n(.*?)\n\s*PY\n", readme, re.S).group(1)
    (tmp_path / "mlruns").mkdir()
    shutil.copy(registered_fsrfer.root / "mlflow.db", tmp_path / "mlruns" / "mlflow.db")
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "synthetic").symlink_to(registered_fsrfer.raw)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-c", "\n".join(line[4:] for line in snippet.splitlines())], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("label") == 2 and "box_x" in out.stdout, out.stdout
    assert not (tmp_path / "mlflow.db").exists()  # nothing written beside the project's store
