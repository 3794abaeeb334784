"""MATLAB-exact bicubic resize (against real MATLAB outputs) and the LR degradation protocol."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from components.data.degrade import crop_to_multiple, degrade_bicubic, imresize, imresize_uint8, to_uint8, upscale_to
from tests.code import matlab_port

SHARED = Path(__file__).resolve().parents[3] / "shared"  # the repo sits beside ../shared
MATLAB_DIR = SHARED / "testdata" / "matlab_imresize"
MAT_FILES = sorted(p.name for p in MATLAB_DIR.glob("*.mat")) if MATLAB_DIR.is_dir() else []
needs_matlab = pytest.mark.skipif(
    not MAT_FILES, reason=f"MATLAB imresize ground truth not found at {MATLAB_DIR} (shared folder absent)"
)


def _corner(values: dict[tuple[int, int], float]) -> np.ndarray:
    x = np.zeros((4, 4))
    for (r, c), v in values.items():
        x[r, c] = v
    return x


def matlab_input(stem: str) -> np.ndarray:
    """The input array of a ground-truth file, as described in the folder's README.md."""
    if "butterfly" in stem:
        bgr = cv2.imread(str(MATLAB_DIR / "butterfly.png"), cv2.IMREAD_COLOR)
        assert bgr is not None, "butterfly.png could not be read"
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float64) / 255.0
    if "topleft" in stem:
        return _corner({(0, 0): 100, (1, 0): 10, (0, 1): 1, (0, 3): 100})
    if "bottomright" in stem:
        return _corner({(3, 3): 100, (2, 3): 10, (3, 2): 1, (3, 0): 100})
    if "small" in stem:
        return np.arange(16, dtype=np.float64).reshape(4, 4)
    if "_x3_" in stem or "_x5_" in stem:
        return np.arange(225, dtype=np.float64).reshape(15, 15)
    return np.arange(64, dtype=np.float64).reshape(8, 8)


def load_expected(name: str) -> np.ndarray:
    from scipy.io import loadmat

    stem = Path(name).stem
    mat = loadmat(str(MATLAB_DIR / name))
    assert stem in mat, f"{name}: no variable {stem!r} (has {[k for k in mat if not k.startswith('__')]})"
    return np.asarray(mat[stem], dtype=np.float64)


def assert_matches_matlab(result: np.ndarray, expected: np.ndarray, x: np.ndarray) -> None:
    assert result.shape == expected.shape
    tol = 1e-6 * (x.max() - x.min())
    err = np.abs(result - expected).max()
    assert err <= tol, f"max abs error {err:.3g} > {tol:.3g}"


@needs_matlab
def test_ground_truth_folder_has_every_case():
    # 16 cases listed in the README: a silently missing file would shrink the parametrised test
    assert len(MAT_FILES) == 16, MAT_FILES


@needs_matlab
@pytest.mark.parametrize("name", MAT_FILES or ["<absent>"])
def test_imresize_matches_matlab(name):
    stem = Path(name).stem
    expected = load_expected(name)
    x = matlab_input(stem)
    antialias = stem.endswith("_aa")
    assert antialias or stem.endswith("_noaa"), stem
    result = imresize(x, output_shape=expected.shape[:2], antialias=antialias)
    assert_matches_matlab(result, expected, x)


@needs_matlab
@pytest.mark.parametrize("name, factor", [
    ("down_down_x2_aa.mat", 2), ("down_down_x4_aa.mat", 4), ("down_down_x3_aa.mat", 3), ("down_down_x5_aa.mat", 5),
])
def test_imresize_integer_scale_matches_matlab(name, factor):
    expected = load_expected(name)
    x = matlab_input(Path(name).stem)
    assert_matches_matlab(imresize(x, scale=1 / factor), expected, x)


@needs_matlab
def test_imresize_batch_equals_per_image():
    """The batched (B, H, W, C) path gives the same numbers as one image at a time."""
    x = matlab_input("butterfly")[:64, :64]
    batch = np.stack([x, x[::-1], 1 - x])
    out = imresize(batch, output_shape=(23, 37))
    for i in range(len(batch)):
        np.testing.assert_allclose(out[i], imresize(batch[i], output_shape=(23, 37)), atol=1e-12)


def test_antialias_changes_downscaling_only():
    x = np.random.default_rng(0).random((20, 20))
    assert not np.allclose(imresize(x, scale=0.5, antialias=True), imresize(x, scale=0.5, antialias=False))
    np.testing.assert_allclose(imresize(x, scale=2, antialias=True), imresize(x, scale=2, antialias=False))


def test_imresize_argument_errors():
    x = np.zeros((8, 8))
    with pytest.raises(ValueError):
        imresize(x)
    with pytest.raises(ValueError):
        imresize(x, output_shape=(4, 4), scale=0.5)
    with pytest.raises(ValueError):
        imresize(x, scale=0)
    with pytest.raises(ValueError):
        imresize(x, output_shape=(0, 4))


@pytest.fixture
def hr_batch() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 100, 100, 3), dtype=np.uint8)


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 6, 7, 8])
def test_degrade_bicubic_shapes(hr_batch, factor):
    lr = degrade_bicubic(hr_batch, factor)
    side = 100 // factor
    assert lr.shape == (3, side, side, 3)
    assert lr.dtype == np.uint8


def real_faces() -> np.ndarray:
    """16 FER+ Valid faces (48 px gray, (16, 48, 48, 1)) when ../shared has them, else the butterfly's
    top-left 48 px tiles (RGB); and the butterfly itself cut to 96 px, as (1, 96, 96, 3)."""
    valid = SHARED / "data" / "ferplus" / "FER2013Valid"
    paths = sorted(valid.glob("*.png"))[:16] if valid.is_dir() else []
    if paths:
        faces = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])[..., None]
    else:
        rgb = cv2.cvtColor(cv2.imread(str(MATLAB_DIR / "butterfly.png")), cv2.COLOR_BGR2RGB)
        faces = np.stack([rgb[i : i + 48, j : j + 48] for i in (0, 48) for j in (0, 48, 96, 144)])
    return faces


@needs_matlab
@pytest.mark.parametrize("factor", [2, 3, 4, 5, 6, 7, 8])
def test_the_uint8_path_is_matlabs_on_real_faces(factor):
    """degrade_bicubic and upscale_to against an independent port of MATLAB's imresize.m for uint8
    input (tests/code/matlab_port.py: per-pass rounding half away from zero, smaller scale first),
    equal at every pixel but those on an exact rounding tie (where the float summation order,
    MATLAB's included, decides), and those by one grey level at most."""
    faces = real_faces()
    butterfly = cv2.cvtColor(cv2.imread(str(MATLAB_DIR / "butterfly.png")), cv2.COLOR_BGR2RGB)
    off_total = pixels = 0
    for batch in (faces, butterfly[None, 20:120, 30:130]):
        hr = batch.shape[1]
        lr = degrade_bicubic(batch, factor)
        up = upscale_to(lr, (hr, hr))
        crop = crop_to_multiple(batch, factor)
        side = hr // factor
        for i in range(len(batch)):
            for got, (want, unsure) in ((lr[i], matlab_port.imresize_uint8(crop[i], (side, side))),
                                        (up[i], matlab_port.imresize_uint8(lr[i], (hr, hr)))):
                off = got != want
                assert not (off & ~unsure).any(), f"face {i}: {np.argwhere(off & ~unsure)[:5].tolist()} differ"
                assert np.abs(got.astype(int) - want).max() <= 1
                off_total += off.sum()
                pixels += off.size
    assert off_total <= 0.001 * pixels  # off by a tie at a few pixels in 10,000 at most: exact elsewhere


def test_uint8_passes_are_rounded_between_axes_unlike_one_rounding_at_the_end():
    """The reference sees what a single final rounding misses (the old uint8 path): on real faces
    at x3, some % of the LR pixels differ; and ties round away from zero."""
    faces = real_faces()
    crop = crop_to_multiple(faces, 3)
    once = to_uint8(imresize(crop, scale=1 / 3))
    per_pass = imresize_uint8(crop, scale=1 / 3)
    differ = (once != per_pass).mean()
    assert 0.005 < differ < 0.5, differ
    assert np.abs(once.astype(int) - per_pass).max() <= 4  # more than 1 only where a pass saturates at 0 or 255
    np.testing.assert_array_equal(to_uint8(np.array([0.5, 1.5, 2.5, 254.5, 255.5, -0.5])), [1, 2, 3, 255, 255, 0])
    tall = np.random.default_rng(1).integers(0, 256, (40, 12), dtype=np.uint8)  # columns shrink less: rows first
    for image, shape in ((tall, (10, 9)), (tall.T, (9, 10))):
        want, unsure = matlab_port.imresize_uint8(image, shape)
        assert not unsure.any()
        np.testing.assert_array_equal(imresize_uint8(image, output_shape=shape), want)
    with pytest.raises(ValueError, match="uint8"):
        imresize_uint8(tall.astype(np.float64), scale=0.5)


def test_degrade_bicubic_fractional_factor(hr_batch):
    lr = degrade_bicubic(hr_batch, 2.5)
    assert lr.shape == (3, 40, 40, 3)
    assert lr.dtype == np.uint8
    # a non-trivial result: not constant, and close to a plain area-average downscale
    area = np.stack([cv2.resize(im, (40, 40), interpolation=cv2.INTER_AREA) for im in hr_batch])
    assert lr.std() > 10
    assert np.abs(lr.astype(float) - area).mean() < np.abs(lr.astype(float) - area[:, ::-1]).mean()


@pytest.mark.parametrize("factor", [0.5, 0.99, 0])
def test_degrade_bicubic_rejects_factor_below_one(hr_batch, factor):
    with pytest.raises(ValueError, match="scale factor"):
        degrade_bicubic(hr_batch, factor)


@pytest.mark.parametrize("factor, side", [(2, 100), (3, 99), (6, 96), (7, 98), (8, 96), (2.5, 100), (1.5, 99), (3.3, 99)])
def test_crop_to_multiple(hr_batch, factor, side):
    cropped = crop_to_multiple(hr_batch, factor)
    assert cropped.shape == (3, side, side, 3)
    n = side / factor
    assert abs(n - round(n)) < 1e-9, "cropped side is not a whole multiple of the factor"
    top = (100 - side) // 2
    np.testing.assert_array_equal(cropped, hr_batch[:, top : top + side, top : top + side])


def test_crop_to_multiple_non_square():
    images = np.zeros((1, 50, 37, 1), np.uint8)
    assert crop_to_multiple(images, 4).shape == (1, 48, 36, 1)


@pytest.mark.parametrize("factor", [2, 2.5, 3, 4, 5, 6, 7, 8])
def test_constant_image_stays_constant(factor):
    hr = np.full((2, 100, 100, 3), 137, np.uint8)
    hr[1] = 3
    lr = degrade_bicubic(hr, factor)
    assert (lr[0] == 137).all() and (lr[1] == 3).all()
    up = upscale_to(lr, (100, 100))
    assert (up[0] == 137).all() and (up[1] == 3).all()


@pytest.mark.parametrize("factor", [2, 3, 4, 8, 2.5])
def test_upscale_to_returns_hr_shape(hr_batch, factor):
    up = upscale_to(degrade_bicubic(hr_batch, factor), (100, 100))
    assert up.shape == hr_batch.shape
    assert up.dtype == np.uint8


def test_degradation_loses_more_detail_at_larger_factors():
    """Round trip error grows with the factor on a textured image (the point of the protocol)."""
    rng = np.random.default_rng(1)
    hr = cv2.GaussianBlur(rng.integers(0, 256, (100, 100, 3)).astype(np.float64), (0, 0), 1.0)
    hr = np.clip(hr, 0, 255).astype(np.uint8)[None]
    errors = [np.abs(upscale_to(degrade_bicubic(hr, s), (100, 100)).astype(float) - hr).mean() for s in (2, 4, 8)]
    assert errors[0] < errors[1] < errors[2], errors


def test_upscaled_batches_reach_the_model_in_the_same_memory_format_as_hr_ones():
    """The upscaled LR batch comes out of imresize's einsum with permuted strides; the model
    input must not keep them (a non-channels-last batch took a 1.5x slower conv path)."""
    import torch

    from components.runtime import images_to_tensor

    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    lr_up = upscale_to(degrade_bicubic(hr, 4), (40, 40))
    for batch in (hr, lr_up, np.asfortranarray(hr)):
        x = images_to_tensor(batch)
        assert x.shape == (4, 3, 40, 40) and x.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(images_to_tensor(lr_up).numpy(), np.transpose(lr_up, (0, 3, 1, 2)) / np.float32(255))
