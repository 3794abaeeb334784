"""The embedded default dataset: seeded synthetic faces with the 7 basic expressions.

It exists so the whole pipeline runs on a fresh machine with no downloads. Faces are
drawn with OpenCV in a canonical frame whose eyes, nose and mouth corners sit on the
5-point alignment template (components/data/align.py), so an "aligned" image is the
canonical frame itself and an "original" image is the same face placed off-centre,
rotated and scaled on a cluttered background, which alignment must undo.

What varies per face (identity): face shape, skin tone, hair, eye spacing and size,
brow thickness, nose and mouth size; per image: lighting gradient, small yaw (feature
shift), background, blur and sensor noise. Expressions act through the mouth (curve,
opening, width, asymmetry), the brows (height, inner slant) and the eyes (opening),
with per-image intensity and jitter so classes overlap a little, and with small
details (brow slant, mouth curve) that fade at low resolution, so accuracy falls as the
scale factor grows.

Written in the RAF-DB basic layout (components/data/rafdb.py): Image/aligned/
{split}_{n:05d}_aligned.jpg, Image/original/{split}_{n:05d}.jpg and
EmoLabel/list_patition_label.txt with labels 1..7 in RAF-DB order.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from components.data.align import TEMPLATE_100
from components.data.rafdb import RAFDB_CLASSES

# Expression -> (mouth curve, mouth open, mouth width, mouth asymmetry,
#                brow raise, brow inner slant, eye opening, nose wrinkle)
# Curve > 0 smiles; slant > 0 raises the inner brow ends (sad/fear), < 0 lowers them (anger).
EXPRESSION_SHAPES: dict[str, tuple[float, float, float, float, float, float, float, float]] = {
    "surprise": (0.0, 0.95, 0.70, 0.0, 1.0, 0.0, 1.45, 0.0),
    "fear": (-0.25, 0.45, 1.15, 0.0, 0.7, 0.8, 1.30, 0.0),
    "disgust": (-0.35, 0.12, 0.95, 0.7, -0.4, -0.35, 0.70, 1.0),
    "happiness": (1.0, 0.30, 1.15, 0.0, 0.1, 0.0, 0.75, 0.0),
    "sadness": (-0.85, 0.0, 0.90, 0.0, 0.2, 0.9, 0.80, 0.0),
    "anger": (-0.35, 0.05, 0.85, 0.0, -0.8, -1.0, 0.75, 0.3),
    "neutral": (0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
}
assert tuple(EXPRESSION_SHAPES) == RAFDB_CLASSES

SKIN_TONES_RGB = np.array(
    [(255, 224, 196), (241, 194, 167), (224, 172, 138), (198, 134, 103), (161, 102, 73),
     (120, 75, 52), (89, 56, 38), (233, 203, 167)], dtype=np.float64)
HAIR_RGB = np.array(
    [(20, 16, 14), (60, 40, 25), (110, 75, 40), (170, 130, 80), (200, 180, 140), (90, 90, 90)],
    dtype=np.float64)

SUPERSAMPLE = 4  # draw at 4x and shrink with area averaging: smooth edges, no aliasing


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes of the synthetic set. train/test are images per class."""

    train_per_class: int = 160
    test_per_class: int = 40
    size: int = 100  # aligned image side, RAF-DB style
    original_size: int = 200  # side of the "original" (unaligned) photo
    seed: int = 0


def _face_params(rng: np.random.Generator) -> dict:
    return {
        "face_w": rng.uniform(29, 36),
        "face_h": rng.uniform(40, 47),
        "skin": SKIN_TONES_RGB[rng.integers(len(SKIN_TONES_RGB))] * rng.uniform(0.9, 1.05),
        "hair": HAIR_RGB[rng.integers(len(HAIR_RGB))],
        "hair_len": rng.uniform(0.0, 1.0),
        "eye_dx": rng.uniform(-1.5, 1.5),
        "eye_r": rng.uniform(3.6, 4.8),
        "iris": np.array([rng.uniform(30, 110), rng.uniform(30, 90), rng.uniform(10, 60)]),
        "brow_t": rng.uniform(1.8, 3.2),
        "nose_len": rng.uniform(0.85, 1.15),
        "mouth_w": rng.uniform(0.9, 1.1),
        "lip": np.array([rng.uniform(140, 200), rng.uniform(60, 100), rng.uniform(70, 110)]),
    }


def _expression(name: str, rng: np.random.Generator) -> np.ndarray:
    shape = np.array(EXPRESSION_SHAPES[name])
    intensity = rng.uniform(0.55, 1.0)
    neutral = np.array(EXPRESSION_SHAPES["neutral"])
    params = neutral + intensity * (shape - neutral)
    jitter = rng.normal(0, [0.15, 0.06, 0.06, 0.1, 0.15, 0.15, 0.08, 0.1])
    return params + jitter


def draw_face(name: str, face: dict, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face in the canonical (aligned) frame: RGB uint8 (size, size, 3) and alpha mask.

    Coordinates are laid out on the 100-px template and scaled to `size`.
    """
    curve, mouth_open, mouth_w, asym, brow_up, slant, eye_open, wrinkle = _expression(name, rng)
    s = size * SUPERSAMPLE / 100.0
    n = size * SUPERSAMPLE
    img = np.zeros((n, n, 3), np.float64)
    mask = np.zeros((n, n), np.float64)

    def pt(x: float, y: float) -> tuple[int, int]:
        return int(round(x * s)), int(round(y * s))

    (lex, ley), (rex, rey), (nx, ny), (mlx, mly), (mrx, mry) = TEMPLATE_100
    yaw = rng.uniform(-2.5, 2.5)  # feature shift within the face outline: a small yaw
    cx, cy = 50.0 - yaw * 0.6, 56.0
    skin = face["skin"]
    # hair behind the face, then the face, then features
    if face["hair_len"] > 0.3:
        cv2.ellipse(img, pt(cx, cy - 2), (int(face["face_w"] * 1.18 * s), int(face["face_h"] * (1.0 + 0.25 * face["hair_len"]) * s)),
                    0, 0, 360, face["hair"].tolist(), -1, cv2.LINE_AA)
        cv2.ellipse(mask, pt(cx, cy - 2), (int(face["face_w"] * 1.18 * s), int(face["face_h"] * (1.0 + 0.25 * face["hair_len"]) * s)),
                    0, 0, 360, 1.0, -1, cv2.LINE_AA)
    cv2.ellipse(img, pt(cx, cy), (int(face["face_w"] * s), int(face["face_h"] * s)), 0, 0, 360, skin.tolist(), -1, cv2.LINE_AA)
    cv2.ellipse(mask, pt(cx, cy), (int(face["face_w"] * s), int(face["face_h"] * s)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    # hairline / fringe
    cv2.ellipse(img, pt(cx, cy - face["face_h"] * 0.75), (int(face["face_w"] * 1.02 * s), int(face["face_h"] * 0.42 * s)),
                0, 180, 360, face["hair"].tolist(), -1, cv2.LINE_AA)
    # ears
    for side in (-1, 1):
        cv2.ellipse(img, pt(cx + side * face["face_w"] * 0.98, ley + 8), (int(4 * s), int(8 * s)), 0, 0, 360, (skin * 0.92).tolist(), -1, cv2.LINE_AA)

    dark = np.array([25.0, 18.0, 15.0])
    # eyes: white, iris, pupil, upper lid line; opening scales the vertical radius
    for ex, ey, side in ((lex + face["eye_dx"] - yaw, ley, -1), (rex - face["eye_dx"] - yaw, rey, 1)):
        r = face["eye_r"]
        rv = max(0.6, r * 0.62 * eye_open)
        cv2.ellipse(img, pt(ex, ey), (int(r * 1.5 * s), int(rv * s)), 0, 0, 360, (245, 245, 240), -1, cv2.LINE_AA)
        ir = min(r * 0.75, rv * 1.1)
        cv2.circle(img, pt(ex, ey), int(ir * s), face["iris"].tolist(), -1, cv2.LINE_AA)
        cv2.circle(img, pt(ex, ey), int(ir * 0.5 * s), dark.tolist(), -1, cv2.LINE_AA)
        cv2.ellipse(img, pt(ex, ey), (int(r * 1.55 * s), int(rv * 1.05 * s)), 0, 180, 360, dark.tolist(), max(1, int(0.9 * s)), cv2.LINE_AA)
        # brow: inner end raised by `slant`, whole brow raised by `brow_up`
        by = ey - 9.5 - 3.2 * brow_up
        inner = np.array([ex - side * 5.5, by - 3.0 * slant])
        outer = np.array([ex + side * 6.5, by + 0.8 * slant + 0.5])
        mid = (inner + outer) / 2 + np.array([0, -1.6 + 0.6 * abs(slant)])
        curve_pts = np.array([(1 - t) ** 2 * inner + 2 * (1 - t) * t * mid + t * t * outer for t in np.linspace(0, 1, 12)])
        cv2.polylines(img, [np.round(curve_pts * s).astype(np.int32)], False, (face["hair"] * 0.7).tolist(),
                      max(1, int(face["brow_t"] * s)), cv2.LINE_AA)

    # nose: a shadow line and nostrils; wrinkles for disgust
    nl = face["nose_len"]
    cv2.line(img, pt(nx - yaw - 1, ley + 4), pt(nx - yaw - 2, ny + (nl - 1) * 6), (skin * 0.78).tolist(), max(1, int(1.2 * s)), cv2.LINE_AA)
    for side in (-1, 1):
        cv2.ellipse(img, pt(nx - yaw + side * 3.2, ny + 1 + (nl - 1) * 6), (int(2.2 * s), int(1.3 * s)), 0, 0, 360, (skin * 0.55).tolist(), -1, cv2.LINE_AA)
    if wrinkle > 0.3:
        for k in range(3):
            yy = ley + 5 + 2.2 * k
            cv2.line(img, pt(nx - yaw - 4, yy), pt(nx - yaw + 4, yy - 0.5), (skin * 0.72).tolist(), max(1, int(0.8 * s)), cv2.LINE_AA)

    # mouth: corners on the template, moved by width and asymmetry; curve bends the lips
    half = (mrx - mlx) / 2 * mouth_w * face["mouth_w"]
    mx, my = (mlx + mrx) / 2 - yaw, (mly + mry) / 2
    left = np.array([mx - half, my - 3.5 * curve - 3.0 * asym])
    right = np.array([mx + half, my - 3.5 * curve + 1.0 * asym])
    centre_dip = 3.0 * curve  # smile: the lip centre sits below the corners
    upper_mid = np.array([mx, my + centre_dip * 0.5 - 4.5 * mouth_open - 1.2 * asym])
    lower_mid = np.array([mx, my + centre_dip + 10.0 * mouth_open])
    ts = np.linspace(0, 1, 24)
    upper = np.array([(1 - t) ** 2 * left + 2 * (1 - t) * t * upper_mid + t * t * right for t in ts])
    lower = np.array([(1 - t) ** 2 * right + 2 * (1 - t) * t * lower_mid + t * t * left for t in ts])
    if mouth_open > 0.12:
        poly = np.round(np.concatenate([upper, lower]) * s).astype(np.int32)
        cv2.fillPoly(img, [poly], (60, 20, 25), cv2.LINE_AA)
        if curve > 0.5:  # teeth showing in a smile
            teeth = np.array([(1 - t) ** 2 * left + 2 * (1 - t) * t * (upper_mid + [0, 2.5]) + t * t * right for t in ts])
            poly_t = np.round(np.concatenate([upper, teeth[::-1]]) * s).astype(np.int32)
            cv2.fillPoly(img, [poly_t], (235, 235, 225), cv2.LINE_AA)
        cv2.polylines(img, [poly], True, face["lip"].tolist(), max(1, int(1.6 * s)), cv2.LINE_AA)
    else:
        cv2.polylines(img, [np.round(upper * s).astype(np.int32)], False, face["lip"].tolist(), max(1, int(2.2 * s)), cv2.LINE_AA)
        cv2.polylines(img, [np.round(upper * s).astype(np.int32)], False, (70, 30, 30), max(1, int(0.8 * s)), cv2.LINE_AA)

    # lighting: a linear gradient across the face
    angle = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.0, 0.35)
    ramp = np.arange(n) / n - 0.5  # the same values as np.mgrid[0:n, 0:n] / n - 0.5, broadcast instead of stored
    light = 1.0 + strength * (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]) * 2
    img *= light[:, :, None]
    img = cv2.resize(np.clip(img, 0, 255), (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    return img, mask


def draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cluttered background: a colour gradient plus random rectangles and circles."""
    c0, c1 = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    t = np.linspace(0, 1, size)[None, :, None]
    bg = (c0 * (1 - t) + c1 * t) * np.ones((size, 1, 1))
    for _ in range(rng.integers(2, 7)):
        colour = rng.uniform(20, 235, 3).tolist()
        x0, y0 = rng.integers(0, size, 2)
        if rng.random() < 0.5:
            x1, y1 = rng.integers(0, size, 2)
            cv2.rectangle(bg, (int(x0), int(y0)), (int(x1), int(y1)), colour, -1)
        else:
            cv2.circle(bg, (int(x0), int(y0)), int(rng.integers(5, size // 4)), colour, -1)
    return cv2.GaussianBlur(bg, (0, 0), 1.5)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera effects: slight blur and sensor noise; returns uint8 RGB."""
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.9))
    img = img + rng.normal(0, rng.uniform(1.0, 5.0), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_pair(name: str, rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """One face as (aligned RGB (size, size, 3), original RGB (original_size, original_size, 3))."""
    face = _face_params(rng)
    draw_seed = int(rng.integers(2**63))  # the same expression draw for both renderings
    fg, mask = draw_face(name, face, np.random.default_rng(draw_seed), cfg.size)
    aligned = fg * mask[:, :, None] + draw_background(rng, cfg.size) * (1 - mask[:, :, None])

    # original photo: the same face rendered at a random scale, rotation and offset
    n = cfg.original_size
    scale = rng.uniform(0.9, 1.5)
    big = int(round(cfg.size * scale))
    fg_big, mask_big = draw_face(name, face, np.random.default_rng(draw_seed), big)
    angle = rng.uniform(-25, 25)
    cx = rng.uniform(big / 2, n - big / 2) if n > big else n / 2
    cy = rng.uniform(big / 2, n - big / 2) if n > big else n / 2
    m = cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0)
    m[:, 2] += (cx - big / 2, cy - big / 2)
    fg_w = cv2.warpAffine(fg_big, m, (n, n), flags=cv2.INTER_LINEAR)
    mask_w = cv2.warpAffine(mask_big, m, (n, n), flags=cv2.INTER_LINEAR)[:, :, None]
    original = fg_w * mask_w + draw_background(rng, n) * (1 - mask_w)
    return _finish(aligned, rng), _finish(original, rng)


def write_synthetic_rafdb(root: str | Path, cfg: SyntheticConfig = SyntheticConfig(), workers: int | None = None) -> dict:
    """Write the synthetic set to `root` in the RAF-DB basic layout; returns counts.

    Deterministic: the same config gives byte-identical files (one child RNG per image,
    derived from the seed and the image index), whatever the number of `workers` (processes
    that render and write the images; default: one per CPU, one alone for a small set).
    """
    root = Path(root)
    aligned_dir = root / "Image" / "aligned"
    original_dir = root / "Image" / "original"
    label_dir = root / "EmoLabel"
    for d in (aligned_dir, original_dir, label_dir):
        d.mkdir(parents=True, exist_ok=True)
    jobs, lines, counts = [], [], {}
    for split, per_class in (("train", cfg.train_per_class), ("test", cfg.test_per_class)):
        n_images = per_class * len(RAFDB_CLASSES)
        labels = np.arange(n_images) % len(RAFDB_CLASSES)
        split_id = 1 if split == "train" else 2
        np.random.default_rng([cfg.seed, split_id]).shuffle(labels)
        for i, label in enumerate(labels, start=1):
            stem = f"{split}_{i:05d}"
            jobs.append(((cfg.seed, split_id, i), RAFDB_CLASSES[label], cfg,
                         aligned_dir / f"{stem}_aligned.jpg", original_dir / f"{stem}.jpg"))
            lines.append(f"{stem}.jpg {label + 1}\n")
        counts[split] = n_images
    workers = workers or (os.cpu_count() or 1)
    if workers > 1 and len(jobs) >= 64:
        import multiprocessing

        # spawn, not fork: the caller may hold threads (torch, OpenMP) that a forked child would inherit locked
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_write_pair, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
    else:
        for job in jobs:
            _write_pair(job)
    tmp = label_dir / "list_patition_label.txt.tmp"
    tmp.write_text("".join(lines))
    os.replace(tmp, label_dir / "list_patition_label.txt")
    return counts


def _write_pair(job: tuple[tuple[int, int, int], str, SyntheticConfig, Path, Path]) -> None:
    """Render one image pair of write_synthetic_rafdb from its own RNG (seed, split, index) and write both files."""
    rng_key, expression, cfg, aligned_path, original_path = job
    aligned, original = render_pair(expression, np.random.default_rng(list(rng_key)), cfg)
    _write_jpg(aligned_path, aligned)
    _write_jpg(original_path, original)


def _write_jpg(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
