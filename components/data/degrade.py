"""MATLAB-exact bicubic resizing and the multi-scale low-resolution degradation.

`imresize` reproduces MATLAB's `imresize(x, ..., 'bicubic')`: the cubic kernel with
a = -0.5, kernel widening by 1/scale when shrinking with antialiasing on, and the
symmetric (mirror) border. It is written as one dense weight matrix per axis, so a
resize is `W_h @ x @ W_w^T`; the matrices are cached per (in, out) size, which makes
resizing a batch of same-sized faces one einsum (uint8: one batched matrix product per axis). Tested against real MATLAB outputs
(shared/testdata/matlab_imresize). `imresize_uint8` is MATLAB's uint8 behaviour: one axis
at a time, each pass rounded half away from zero to uint8 (what the faces of every stage go
through: prepare's HR resize and LR degradation, the upscaling back for the CNN, serving).

`degrade_bicubic` is the LR protocol of docs/methods.md: crop HR to a multiple of the
factor (as SR papers do), MATLAB-downscale by 1/s, and (`upscale_to`) bicubic back up
to the HR size for the CNN.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


def cubic_kernel(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB's `cubic`."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    ) * ((ax > 1) & (ax <= 2))


@lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense (out_len, in_len) float64 weights of MATLAB's 1-D bicubic resize.

    Follows MATLAB's `contributions`: output pixel centres mapped to input coordinates
    u = x / scale + 0.5 (1 - 1/scale); for shrinking with antialiasing the kernel is
    stretched by 1/scale; indices outside [0, in_len) are mirrored (symmetric padding).
    """
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel = lambda t: scale * cubic_kernel(scale * t)  # noqa: E731
        kernel_width /= scale
    else:
        kernel = cubic_kernel
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :] - 1  # 0-based input indices, (out, taps)
    weights = kernel(u[:, None] - idx - 1)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric border: index -1 -> 0, -2 -> 1, in_len -> in_len - 1, ...
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(idx.astype(np.int64), mirror.size)]
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps), idx.ravel()), weights.ravel())
    matrix.setflags(write=False)
    return matrix


def _resize_weights(shape: tuple[int, int], output_shape, scale, antialias: bool):
    """MATLAB's output size, per-axis scales and (out, in) weight matrices for a resize of an (H, W) plane."""
    if (output_shape is None) == (scale is None):
        raise ValueError("imresize: give exactly one of output_shape or scale")
    in_h, in_w = shape
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"imresize: scale must be > 0, got {scale}")
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
        scale_h = scale_w = float(scale)
    else:
        out_h, out_w = (int(v) for v in output_shape)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"imresize: output shape must be positive, got {output_shape}")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    return (scale_h, scale_w), (resize_matrix(in_h, out_h, scale_h, antialias),
                                resize_matrix(in_w, out_w, scale_w, antialias))


def imresize(
    image: np.ndarray,
    output_shape: tuple[int, int] | None = None,
    scale: float | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """MATLAB `imresize(image, scale | [h w], 'bicubic')` on float data.

    image: (H, W), (H, W, C) or a batch (B, H, W, C); H, W are the axes resized
    (for 4-D input, axes 1 and 2). Give either output_shape (h, w) or a scale; as in
    MATLAB, a scale gives ceil(H * scale) and is used as the exact scale, a size gives
    the per-axis scale h / H. Returns float64, unrounded whatever the input's type: for
    MATLAB's behaviour on uint8 images use `imresize_uint8`.
    """
    h_axis = 1 if image.ndim == 4 else 0
    _, (w_h, w_w) = _resize_weights(image.shape[h_axis:h_axis + 2], output_shape, scale, antialias)
    data = np.asarray(image, dtype=np.float64)
    if image.ndim == 4:
        return np.einsum("oh,bhwc,pw->bopc", w_h, data, w_w, optimize=True)
    if data.ndim == 3:
        return np.einsum("oh,hwc,pw->opc", w_h, data, w_w, optimize=True)
    return w_h @ data @ w_w.T


def imresize_uint8(
    image: np.ndarray,
    output_shape: tuple[int, int] | None = None,
    scale: float | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """MATLAB `imresize` of a uint8 image: uint8, as MATLAB computes it.

    MATLAB resizes one axis at a time (the axis with the smaller scale first; rows first on a
    tie) and returns each 1-D pass in the input's class (imresizemex), so the intermediate
    image is rounded half away from zero and saturated to 0..255 before the second pass.
    Same shapes and arguments as `imresize`.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"imresize_uint8: needs a uint8 image, got {image.dtype}")
    h_axis = 1 if image.ndim == 4 else 0
    (scale_h, scale_w), (w_h, w_w) = _resize_weights(image.shape[h_axis:h_axis + 2], output_shape, scale,
                                                     antialias)
    # (..., H, W) planes in float64, so each pass is one (batched) matrix product: W_h @ x or x @ W_w^T
    planes = np.moveaxis(image, (h_axis, h_axis + 1), (-2, -1)).astype(np.float64)
    rows, cols = (lambda x: np.matmul(w_h, x)), (lambda x: np.matmul(x, w_w.T))
    for resize_along in (rows, cols) if scale_h <= scale_w else (cols, rows):
        planes = resize_along(planes)
        np.floor(planes + 0.5, out=planes)  # the pass returned as uint8: half away from zero (values >= 0)...
        np.clip(planes, 0, 255, out=planes)  # ...saturated
    return np.moveaxis(planes, (-2, -1), (h_axis, h_axis + 1)).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """MATLAB's uint8(x): round half away from zero, saturate to 0..255."""
    return np.clip(np.floor(np.asarray(image, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def lr_size(hr_size: int, factor: float) -> int:
    """Side length of the LR image for a given HR side and scale factor."""
    return int(math.floor(hr_size / factor + 1e-9))


def crop_to_multiple(images: np.ndarray, factor: float) -> np.ndarray:
    """Centre-crop HR images (B, H, W, C) so H and W are whole multiples of the factor.

    For a fractional factor the crop is round(floor(H / s) * s), the largest size whose
    LR counterpart is a whole number of pixels.
    """
    _, h, w, _ = images.shape
    ch = int(round(lr_size(h, factor) * factor))
    cw = int(round(lr_size(w, factor) * factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    return images[:, top : top + ch, left : left + cw, :]


def degrade_bicubic(hr: np.ndarray, factor: float) -> np.ndarray:
    """LR faces of a batch of HR faces at one scale factor: uint8 (B, h, w, C).

    hr: uint8 (B, H, W, C). The HR batch is cropped to a multiple of the factor, then
    MATLAB-bicubic (antialiased) downscaled to (H // s, W // s).
    """
    if factor < 1:
        raise ValueError(f"scale factor must be >= 1, got {factor}")
    cropped = crop_to_multiple(hr, factor)
    _, h, w, _ = cropped.shape
    out = (lr_size(hr.shape[1], factor), lr_size(hr.shape[2], factor))
    if float(factor).is_integer():
        lr = imresize_uint8(cropped, scale=1.0 / factor)
    else:
        lr = imresize_uint8(cropped, output_shape=out)
    assert lr.shape[1:3] == out, (lr.shape, out, (h, w))
    return lr


def upscale_to(lr: np.ndarray, hr_shape: tuple[int, int]) -> np.ndarray:
    """Bicubic (MATLAB) upscaling of a uint8 LR batch (B, h, w, C) back to the HR size: uint8."""
    return imresize_uint8(lr, output_shape=hr_shape)
