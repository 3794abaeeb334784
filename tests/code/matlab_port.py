"""A line-by-line Python port of MATLAB's imresize.m (bicubic) for uint8 images: the test
reference for components/data/degrade.py's uint8 path, written from MATLAB's code, not from
the library's.

What MATLAB does, and this port with it:
- `contributions(in_length, out_length, scale, kernel, kernel_width, antialiasing)`: 1-based
  output coordinates x, u = x/scale + 0.5*(1 - 1/scale), left = floor(u - kernel_width/2),
  P = ceil(kernel_width) + 2 taps, weights h(u - indices) normalised per row, indices folded
  by aux = [1:in_length, in_length:-1:1] (the symmetric border); when shrinking with
  antialiasing, h(x) = scale*cubic(scale*x) and kernel_width = 4/scale.
- `getResizeDimOrder`: [~, order] = sort(scale): the dimension with the smaller scale first
  (MATLAB's sort is stable: rows first on a tie).
- `resizeAlongDim` -> imresizemex: each output pixel is the weighted sum of its taps, in tap
  order, in double, and the pass returns the input's class: uint8(v) rounds half away from
  zero and saturates, so the second pass reads a rounded image.
"""

from __future__ import annotations

import math

import numpy as np


def cubic(x: float) -> float:
    absx = abs(x)
    absx2, absx3 = absx**2, absx**3
    return ((1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
            + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((1 < absx) and (absx <= 2)))


def contributions(in_length: int, out_length: int, scale: float, antialiasing: bool = True
                  ) -> list[tuple[list[int], list[float]]]:
    """For each output pixel (1-based, in order): its input indices (1-based) and weights."""
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        def h(x: float) -> float:
            return scale * cubic(scale * x)
        kernel_width = kernel_width / scale
    else:
        h = cubic
    aux = list(range(1, in_length + 1)) + list(range(in_length, 0, -1))
    out = []
    for x in range(1, out_length + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - kernel_width / 2)
        taps = math.ceil(kernel_width) + 2
        indices = [left + j for j in range(taps)]
        weights = [h(u - i) for i in indices]
        total = sum(weights)
        weights = [w / total for w in weights]
        out.append(([aux[(i - 1) % len(aux)] for i in indices], weights))
    return out


def uint8(value: np.ndarray) -> np.ndarray:
    """MATLAB's uint8(): round half away from zero, saturate."""
    return np.clip(np.sign(value) * np.floor(np.abs(value) + 0.5), 0, 255)


TIE = 1e-9  # |v - (k + 0.5)| below this: a rounding tie that the order of the float sums decides


def resize_along_dim(image: np.ndarray, dim: int, out_length: int, scale: float, unsure: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One pass of imresizemex along `dim` (0 rows, 1 columns) of a (H, W, C) array; and where
    the result is unsure: a near-tie here, or a tap that read an unsure pixel of the last pass."""
    moved, unsure = np.moveaxis(image, dim, 0), np.moveaxis(unsure, dim, 0)
    result = np.empty((out_length,) + moved.shape[1:], dtype=np.float64)
    out_unsure = np.zeros(result.shape, dtype=bool)
    for o, (indices, weights) in enumerate(contributions(moved.shape[0], out_length, scale)):
        acc = np.zeros(moved.shape[1:], dtype=np.float64)
        for i, w in zip(indices, weights):
            acc = acc + w * moved[i - 1]
            out_unsure[o] |= unsure[i - 1] & (w != 0)
        result[o] = uint8(acc)
        out_unsure[o] |= np.abs(acc - np.floor(acc) - 0.5) < TIE
    return np.moveaxis(result, 0, dim), np.moveaxis(out_unsure, 0, dim)


def imresize_uint8(image: np.ndarray, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB imresize(image, [h w], 'bicubic') of a uint8 (H, W) or (H, W, C) image; and the mask
    of output pixels that sit on (or read) a rounding tie (within TIE of k + 0.5), where an
    implementation's result, MATLAB's own included, depends on the order of its float sums."""
    assert image.dtype == np.uint8
    data = image.astype(np.float64)
    if data.ndim == 2:
        data = data[:, :, None]
    unsure = np.zeros(data.shape, dtype=bool)
    scale = [out_shape[0] / image.shape[0], out_shape[1] / image.shape[1]]
    for dim in sorted(range(2), key=lambda d: scale[d]):  # stable, as MATLAB's sort
        data, unsure = resize_along_dim(data, dim, out_shape[dim], scale[dim], unsure)
    out = data.astype(np.uint8)
    return (out[:, :, 0], unsure[:, :, 0]) if image.ndim == 2 else (out, unsure)
