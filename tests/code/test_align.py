"""Face alignment (MTCNN + 5-point similarity warp) and the synthetic face generator."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.data.align import TEMPLATE_100, FaceAligner, similarity_transform, warp
from components.data.rafdb import RAFDB_CLASSES, read_rafdb
from components.data.synthetic import SyntheticConfig, render_pair, write_synthetic_rafdb
from components.io import BadInput


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(100)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


# ---------------------------------------------------------------- the similarity transform


@pytest.mark.parametrize("angle, scale, shift", [(0.0, 1.0, (0, 0)), (23.0, 1.7, (-12.5, 40.0)), (-170.0, 0.35, (3, -8))])
def test_similarity_transform_recovers_known_transform(angle, scale, shift):
    src = np.array([[30.1, 51.0], [71.3, 49.2], [52.0, 70.4], [36.6, 90.1], [68.2, 91.0]])
    t = math.radians(angle)
    truth = np.array([[scale * math.cos(t), -scale * math.sin(t), shift[0]],
                      [scale * math.sin(t), scale * math.cos(t), shift[1]]])
    dst = apply(truth, src)
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix, truth, atol=1e-9)
    np.testing.assert_allclose(apply(matrix, src), dst, atol=1e-9)


def test_similarity_transform_never_reflects():
    """Mirrored points: the best similarity is a rotation, never a flip (Umeyama's guard)."""
    src = TEMPLATE_100.copy()
    dst = src * np.array([-1.0, 1.0]) + np.array([100.0, 0.0])
    matrix = similarity_transform(src, dst)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_similarity_transform_least_squares_with_noise():
    rng = np.random.default_rng(0)
    src = TEMPLATE_100 * 2.0 + 15
    dst = TEMPLATE_100 + rng.normal(0, 0.5, TEMPLATE_100.shape)
    matrix = similarity_transform(src, dst)
    a, b = matrix[0, 0], matrix[1, 0]
    assert abs(math.hypot(a, b) - 0.5) < 0.02 and abs(math.atan2(b, a)) < 0.02
    assert np.abs(apply(matrix, src) - dst).max() < 2.0


def test_warp_shape_and_channels():
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 1), dtype=np.uint8)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    out = warp(image, identity, 40)
    assert out.shape == (40, 40, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, image[:40, :40])


# ---------------------------------------------------------------- a real photo


def test_align_real_face_photo(aligner):
    from skimage import data

    photo = data.astronaut()  # (512, 512, 3) RGB uint8, one face
    aligned, n_faces = aligner.align(photo, "astronaut.png")
    assert aligned.shape == (100, 100, 3) and aligned.dtype == np.uint8
    assert n_faces == 1
    again = aligner.detect(aligned)
    assert len(again) == 1
    error = np.linalg.norm(again[0].landmarks - TEMPLATE_100, axis=1)
    assert error.max() < 6.0, error


def test_align_other_hr_size_and_grey(aligner):
    from skimage import data

    photo = data.astronaut()
    grey = np.round(photo @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[:, :, None]
    small = FaceAligner(48)
    aligned, n_faces = small.align(grey, "astronaut-grey.png")
    assert aligned.shape == (48, 48, 1) and n_faces == 1
    # the 48-px face is the 100-px face shrunk: compare both on the same grid
    big, _ = aligner.align(photo, "astronaut.png")
    big_grey = np.round(big @ np.array([0.299, 0.587, 0.114]))
    shrunk = cv2.resize(big_grey.astype(np.float32), (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk - aligned[:, :, 0]).mean() < 20  # about 10 here; an upside-down face gives about 70


def test_no_face_found(aligner):
    ramp = np.linspace(0, 255, 200)
    gradient = np.stack([np.tile(ramp, (200, 1)), np.tile(ramp[:, None], (1, 200)), np.full((200, 200), 128.0)], axis=-1)
    with pytest.raises(BadInput, match="no face found") as info:
        aligner.align(gradient.astype(np.uint8), "gradient_200.png")
    assert "gradient_200.png" in str(info.value)


# ---------------------------------------------------------------- synthetic originals


def test_align_synthetic_originals(aligner):
    pairs = [render_pair(RAFDB_CLASSES[i % 7], np.random.default_rng([0, i]), SyntheticConfig()) for i in range(14)]
    for aligned, original in pairs:
        assert aligned.shape == (100, 100, 3) and original.shape == (200, 200, 3)
    centre = (slice(25, 80), slice(25, 80))  # eyes, nose and mouth on the template

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a[centre].astype(np.float64) - b[centre]).mean())

    found = 0
    for i, (aligned, original) in enumerate(pairs):
        try:
            result, _ = aligner.align(original, f"synthetic_{i}")
        except BadInput as err:
            assert "no face found" in str(err)
            continue
        found += 1
        own = diff(result, aligned)
        others = [diff(result, pairs[j][0]) for j in range(len(pairs)) if j != i]
        assert own < 0.6 * float(np.median(others)), (i, own, sorted(others))
    assert found >= 7, f"only {found} of 14 synthetic faces were found"


# ---------------------------------------------------------------- generator determinism


def test_synthetic_generator_is_deterministic(tmp_path):
    small = SyntheticConfig(train_per_class=1, test_per_class=1, seed=3)
    counts = write_synthetic_rafdb(tmp_path / "a", small)
    write_synthetic_rafdb(tmp_path / "b", small)
    write_synthetic_rafdb(tmp_path / "c", SyntheticConfig(train_per_class=1, test_per_class=1, seed=4))
    assert counts == {"train": 7, "test": 7}

    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 2 * 14 + 1  # aligned + original per image, and the label file
    assert not any(name.endswith(".tmp") for name in a)
    assert a == b
    assert set(c) == set(a)
    images = [name for name in a if name.endswith(".jpg")]
    assert all(a[name] != c[name] for name in images), "a different seed should change every image"
    records, rejects = read_rafdb(tmp_path / "a")
    assert rejects == [] and sorted(r.label for r in records if r.split == "train") == list(range(7))
