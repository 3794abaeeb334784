"""Crowd photos in, an expression per face out (components/serving/scene.py, the pyfunc's
`detect` path, `fsrfer predict`): faces found, cut as the training faces were, measured and
classified by the per-face path; bad inputs named, the rest goes on."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from components.data.align import Detection
from components.io import BadInput
from components.serving.fsrfer import SceneParams, decode_image, served_scale
from components.serving.scene import SceneFaces, crop_face, face_crop_of

SIZES = (64, 40, 28, 20)  # pasted sizes of the synthetic aligned faces (their frame is the warp template's)


def compose_scene(raw: Path) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """A 160x420 gray scene with four aligned synthetic test faces pasted at SIZES; (scene, [(x, y, size)])."""
    files = sorted((raw / "Image" / "aligned").glob("test_*.jpg"))[: len(SIZES)]
    scene = np.full((160, 420, 3), 90, np.uint8)
    placed, x = [], 20
    for path, size in zip(files, SIZES):
        face = cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA)
        scene[40 : 40 + size, x : x + size] = face
        placed.append((x, 40, size))
        x += size + 40
    return scene, placed


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb)[1].tobytes()


def pasted_under(box: tuple[int, int, int, int], placed: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    hits = [p for p in placed if p[0] <= cx < p[0] + p[2] and p[1] <= cy < p[1] + p[2]]
    assert len(hits) == 1, f"detection {box} lies on no pasted face"
    return hits[0]


@pytest.fixture(scope="module")
def scene(tiny_run):
    return compose_scene(tiny_run.root / "raw")


@pytest.fixture(scope="module")
def model(registered_fsrfer):
    return mlflow.pyfunc.load_model(mlflow.MlflowClient(registered_fsrfer.uri).get_model_version_download_uri("fsrfer", "1"))


def test_warped_faces_keep_their_native_size_and_upsampling_finds_smaller_ones(scene):
    image, placed = scene
    found = SceneFaces("warp", 100, min_face_size=12)(image)
    found_up = SceneFaces("warp", 100, min_face_size=12, upsample=2.0)(image)
    assert found and len(found_up) > len(found)
    for crop in found_up:
        x, y, size = pasted_under(crop.detection.box, placed)
        # the aligned frame is the template's, so the warp at native size recovers the pasted face
        assert crop.face.shape == (crop.native_size, crop.native_size, 3)
        assert abs(crop.native_size - size) <= 0.15 * size, (crop.native_size, size)
        back = cv2.resize(crop.face, (size, size), interpolation=cv2.INTER_AREA).astype(float)
        misfit = [np.abs(back - image[y + dy : y + dy + size, x + dx : x + dx + size]).mean()
                  for dx, dy in ((0, 0), (size // 3, 0), (0, size // 3))]
        assert misfit[0] < 0.75 * min(misfit[1:]), f"the warp did not cut the pasted face: {misfit}"
    assert min(c.native_size for c in found_up) < 24  # a face under 24 px, found only when upsampled


def test_box_crops_are_fer_squares_and_replicate_the_border():
    image = np.arange(100 * 120, dtype=np.int64).reshape(100, 120, 1) % 251
    image = image.astype(np.uint8)
    crop = crop_face(image, Detection((40, 30, 30, 40), 1.0, None), "box", 48)
    assert crop.native_size == 38 and crop.face.shape == (38, 38, 1)  # 0.94 x the longer side, 40
    # centred on the box's centre (55, 50), 0.03 side higher: rows 30..67 (31 - 1), columns 36..73
    np.testing.assert_array_equal(crop.face, image[30:68, 36:74])
    edge = crop_face(image, Detection((0, 0, 20, 30), 1.0, None), "box", 48).face
    # a 28-px square around a 20-px-wide box at the left edge reaches 4 px left of the image: column 0 replicated
    assert edge.shape == (28, 28, 1)
    np.testing.assert_array_equal(edge[:, 4:], image[:28, :24])
    np.testing.assert_array_equal(edge[:, :4], np.repeat(image[:28, :1], 4, axis=1))
    with pytest.raises(BadInput, match="face crop 'squash'"):
        crop_face(image, Detection((0, 0, 20, 20), 1.0, None), "squash", 48)
    with pytest.raises(BadInput, match="needs the detector's 5 landmarks"):
        crop_face(image, Detection((0, 0, 20, 20), 1.0, None), "warp", 48)


def test_the_crop_rule_follows_the_training_faces():
    assert face_crop_of({"dataset": "ferplus", "aligned_input": True}) == "box"
    assert face_crop_of({"dataset": "fer2013", "aligned_input": True}) == "box"
    assert face_crop_of({"dataset": "rafdb", "aligned_input": True}) == "warp"
    assert face_crop_of({"dataset": "rafdb", "aligned_input": False}) == "warp"
    assert face_crop_of({"dataset": "folders", "aligned_input": False}) == "warp"


def test_a_scene_gives_a_row_per_face_and_a_row_for_a_photo_without_one(model, scene):
    image, placed = scene
    blank = np.full((120, 160, 3), 128, np.uint8)
    frame = pd.DataFrame({"image": [b"not an image", png(image), png(blank), png(image[:, ::-1])]})
    out = model.predict(frame, params={"detect": True, "upsample": 2.0})
    cfg = model.unwrap_python_model().cfg
    classes = list(cfg.classes)
    assert list(out["row"]) == sorted(out["row"]) and set(out["row"]) == {0, 1, 2, 3}
    bad_row, blank_row = out[out["row"] == 0], out[out["row"] == 2]
    assert len(bad_row) == 1 and bad_row["face"].item() == -1 and "row 0: not a decodable image" in bad_row["error"].item()
    assert len(blank_row) == 1 and blank_row["face"].item() == -1 and "row 2: no face found" in blank_row["error"].item()
    assert blank_row[classes].isna().all(axis=None) and blank_row["label"].item() == ""
    for row, photo in ((1, image), (3, np.ascontiguousarray(image[:, ::-1]))):
        faces = out[out["row"] == row]
        assert len(faces) >= 2 and list(faces["face"]) == list(range(len(faces))) and (faces["error"] == "").all()
        assert set(faces["scale"]) <= {1.0, *cfg.scales}
        # each row is its own photo's faces through the per-face path, whatever rows came before it
        crops = SceneFaces("warp", cfg.hr_size, 12, upsample=2.0)(photo)
        assert [c.detection.box for c in crops] == list(zip(faces.box_x, faces.box_y, faces.box_w, faces.box_h))
        single = model.predict(pd.DataFrame({"image": [png(c.face) for c in crops]}))
        np.testing.assert_allclose(faces[classes].to_numpy(), single[classes].to_numpy(), atol=1e-6)
        assert list(faces["label"]) == list(single["label"])
        assert list(faces["scale"]) == [served_scale(c.native_size, cfg) for c in crops]
    for _, row in out[out["row"] == 1].iterrows():
        pasted_under((row.box_x, row.box_y, row.box_w, row.box_h), placed)
        assert np.asarray(row.landmarks).shape == (5, 2)


def test_an_upsampled_scene_over_the_pixel_limit_is_a_row_error_not_a_crash(model, scene):
    image, _ = scene
    big = cv2.imencode(".png", np.zeros((4000, 4000), np.uint8))[1].tobytes()  # 16 MP: fine, 64 MP once doubled
    out = model.predict(pd.DataFrame({"image": [big, png(image)]}), params={"detect": True, "upsample": 2.0})
    assert "row 0: image is 4000x4000, over the 50,000,000-pixel limit once upsampled x2" in out["error"][0]
    assert (out[out["row"] == 1]["face"] >= 0).all()


def test_a_photo_is_read_upright_by_its_exif_orientation():
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), (5, 5), 0)
    upright = {}
    for orientation in (1, 3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
        upright[orientation] = decode_image(buffer.getvalue(), 3, f"orientation {orientation}").astype(float)
    assert upright[1].shape == (40, 60, 3) and upright[3].shape == (40, 60, 3)
    assert upright[6].shape == (60, 40, 3) and upright[8].shape == (60, 40, 3)
    assert np.abs(upright[3] - upright[1][::-1, ::-1]).mean() < 3  # 180 degrees
    assert np.abs(upright[6] - np.rot90(upright[1], -1)).mean() < 3  # the camera turned: rotated 90 degrees clockwise
    assert np.abs(upright[8] - np.rot90(upright[1], 1)).mean() < 3


def test_inference_params_are_checked_by_name():
    assert SceneParams.parse(None) == SceneParams()
    assert SceneParams.parse({"detect": True, "upsample": "2"}).upsample == 2.0
    cases = [({"detekt": True}, r"unknown \['detekt'\]"), ({"detect": "yes"}, "params.detect: expected true or false"),
             ({"upsample": "twice"}, "params.upsample: expected a number"),
             ({"upsample": 20}, r"params.upsample: 20.0 must lie in \[1, 8\]"),
             ({"min_face_size": 8}, "params.min_face_size: 8 px is below MTCNN's 12-px window"),
             ({"min_confidence": 2}, "params.min_confidence: 2.0 must lie in")]
    for params, message in cases:
        with pytest.raises(BadInput, match=message):
            SceneParams.parse(params)
    with pytest.raises(BadInput, match="below MTCNN's 12-px window"):
        SceneFaces("warp", 64, min_face_size=8)


def test_predict_cli_writes_annotated_images_rows_and_a_summary(registered_fsrfer, scene, tmp_path):
    image, _ = scene
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "class.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(photos / "wall.png"), np.full((90, 120, 3), 128, np.uint8))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    video = tmp_path / "lecture.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (image.shape[1], image.shape[0]))
    for _ in range(8):  # 2 s at 4 fps: sampled every second -> frames 0 and 4
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    done = subprocess.run(["fsrfer", "predict", str(photos), str(video), "--out", str(out), "--upsample", "2"],
                          capture_output=True, text=True, env=os.environ | {"MLFLOW_TRACKING_URI": registered_fsrfer.uri})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["version"] == 1 and summary["inputs"] == 4 and summary["read"] == 3
    assert [s["input"] for s in summary["skipped"]] == [str(photos / "broken.jpg")]
    assert "not a readable image" in summary["skipped"][0]["reason"]
    rows = pd.read_csv(out / "faces.csv")
    assert set(json.loads((out / "faces.json").read_text())[0]) == set(rows.columns)
    wall = rows[rows["input"] == str(photos / "wall.png")]
    assert len(wall) == 1 and wall["face"].item() == -1 and "no face found" in wall["error"].item()
    photo = rows[rows["input"] == str(photos / "class.png")]
    frames = rows[rows["input"] == str(video)]
    assert len(photo) >= 2 and sorted(set(frames["frame"])) == [0, 4]
    assert (frames.groupby("frame")["face"].max() >= 0).all()  # faces found in each sampled frame (JPEG-coded)
    assert summary["faces"] == len(photo) + len(frames)
    assert sum(summary["expressions"].values()) == summary["faces"]
    annotated = cv2.imread(str(out / "annotated" / "0001_class.png"))
    assert annotated.shape == image.shape and not np.array_equal(annotated, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert (out / "annotated" / "0003_lecture_frame000004.png").is_file()
    assert set(photo["annotated"]) == {"annotated/0001_class.png"}
    missing = subprocess.run(["fsrfer", "predict", str(tmp_path / "nowhere.jpg"), "--out", str(out)],
                             capture_output=True, text=True, env=os.environ | {"MLFLOW_TRACKING_URI": registered_fsrfer.uri})
    assert missing.returncode == 2 and "nowhere.jpg: no such file or folder" in missing.stderr
    unregistered = subprocess.run(["fsrfer", "predict", str(photos), "--out", str(out), "--model", "gmenet"],
                                  capture_output=True, text=True,
                                  env=os.environ | {"MLFLOW_TRACKING_URI": registered_fsrfer.uri})
    assert unregistered.returncode == 2 and "model gmenet@champion: not in the registry" in unregistered.stderr
