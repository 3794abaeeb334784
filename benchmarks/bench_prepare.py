"""Benchmark: alignment and multi-scale degradation throughput on FER+ train.

Degradation: MATLAB-exact bicubic to every scale 2..8 (`degrade_bicubic`, batched) beside
plain cv2.resize INTER_CUBIC to the same sizes, on the same images, in the same run; the
ratio is the figure. Alignment: MTCNN + 5-point warp (`FaceAligner.align`) on a subset,
beside cv2.resize INTER_CUBIC of the same images to the HR size.

    .venv/bin/python benchmarks/bench_prepare.py [--align-images 1000] [--images N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from components.data.align import FaceAligner
from components.data.degrade import degrade_bicubic, lr_size
from components.data.ferplus import read_ferplus
from components.data.records import load_image
from components.io import BadInput

FERPLUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus"
SCALES = (2, 3, 4, 5, 6, 7, 8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=str(FERPLUS))
    parser.add_argument("--align-images", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--images", type=int, default=0, help="the first N train faces only (0: all)")
    args = parser.parse_args()
    records, _ = read_ferplus(args.root)
    train = [r for r in records if r.split == "train"][: args.images or None]
    faces = np.stack([load_image(r.source, 1) for r in train])  # (N, 48, 48, 1)
    n = len(faces)

    t = time.perf_counter()
    for i in range(0, n, args.batch):
        for s in SCALES:
            degrade_bicubic(faces[i : i + args.batch], s)
    matlab_s = time.perf_counter() - t
    t = time.perf_counter()
    for face in faces:
        for s in SCALES:
            side = lr_size(48, s)
            cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    cv2_s = time.perf_counter() - t

    subset = faces[: args.align_images]
    aligner = FaceAligner(48, min_face_size=20)
    found = 0
    t = time.perf_counter()
    for i, face in enumerate(subset):
        try:
            aligner.align(face, f"ferplus[{i}]")
            found += 1
        except BadInput:
            pass
    align_s = time.perf_counter() - t
    t = time.perf_counter()
    for face in subset:
        cv2.resize(face, (100, 100), interpolation=cv2.INTER_CUBIC)
    cv2_align_s = time.perf_counter() - t

    result = {
        "images": n,
        "degrade_matlab_all_scales_img_per_s": round(n / matlab_s, 1),
        "degrade_cv2_inter_cubic_all_scales_img_per_s": round(n / cv2_s, 1),
        "degrade_ratio_matlab_over_cv2": round(cv2_s / matlab_s, 3),
        "align_images": len(subset),
        "align_faces_found": found,
        "align_img_per_s": round(len(subset) / align_s, 1),
        "cv2_resize_img_per_s": round(len(subset) / cv2_align_s, 1),
        "align_ratio_over_cv2_resize": round(cv2_align_s / align_s, 5),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
