"""Benchmark: serving cost per face of every path a registered model can serve.

Each path takes pre-cropped uint8 faces of one LR size (what the pyfunc's predictor receives
after decoding and cropping) and returns class probabilities, as it does when served:

  bicubic   MATLAB bicubic to the HR size, the frozen teacher (FSRFERPredictor, G applied nowhere)
  fsrfer    the same with G lifting the features (FSRFERPredictor, G applied to every LR face)
  gmenet    MATLAB bicubic to the input size, GME-Net (GMENetPredictor)
  isr_fer   MATLAB bicubic to the HR size, the image-SR network, the frozen teacher (yardstick)

Figures per path: faces/s at batch 1 (one face per call) and at batch 64, and memory: the peak
resident set of a process of its own that loads the path and serves both batch sizes, minus the
same process's resident set before loading (torch and numpy imported). Random faces: the cost
does not depend on the content. Paths whose model file is absent are reported as skipped.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_serving.py [--prepared data/prepared]
        [--models models] [--scale 4] [--faces 256]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np

PATHS = ("bicubic", "fsrfer", "gmenet", "isr_fer")
NEEDS = {"bicubic": ("teacher.pt",), "fsrfer": ("teacher.pt", "fsr.pt"), "gmenet": ("gmenet.pt",),
         "isr_fer": ("teacher.pt", "isr.pt")}


def rss_mib() -> float:
    """The process's current resident set (Linux /proc), MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def make_predict(path: str, models: Path, cfg):
    """The path's predict_proba(list of uint8 faces) -> (N, K)."""
    from dataclasses import replace

    from components.models.covpool import load_covpool
    from components.models.isr import load_isr, super_resolve
    from components.runtime import predict_proba
    from components.serving.fsrfer import FSRFERPredictor, to_hr
    from components.serving.gmenet import GMENetPredictor

    if path == "fsrfer":
        return FSRFERPredictor(models / "teacher.pt", models / "fsr.pt", replace(cfg, g_scales=None)).predict_proba
    if path == "gmenet":
        return GMENetPredictor(models / "gmenet.pt", cfg).predict_proba
    teacher = load_covpool(models / "teacher.pt")
    isr = load_isr(models / "isr.pt") if path == "isr_fer" else None

    def predict(faces: list[np.ndarray]) -> np.ndarray:  # bicubic: to_hr then the teacher; isr_fer: SR between
        hr = np.stack([to_hr(face, cfg.hr_size)[0] for face in faces])
        return predict_proba(teacher, hr if isr is None else super_resolve(isr, hr), batch_size=64)

    return predict


def measure(path: str, models: str, prepared: str, scale: float, faces: int, threads: int, queue) -> None:
    """In a process of its own: load the path, serve `faces` faces one per call and 64 per call."""
    import torch

    from components.data.degrade import lr_size
    from components.data.store import PreparedStore
    from components.registry import serving_config

    torch.set_num_threads(threads)
    cfg = serving_config(PreparedStore(prepared))
    before = rss_mib()
    predict = make_predict(path, Path(models), cfg)
    side = lr_size(cfg.hr_size, scale)
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (side, side, cfg.channels), dtype=np.uint8) for _ in range(faces)]
    predict(batch[:2])  # warm-up
    out = {"face_px": side}
    for size in (1, 64):
        t = time.perf_counter()
        for i in range(0, faces, size):
            predict(batch[i : i + size])
        out[f"faces_per_s_batch_{size}"] = round(faces / (time.perf_counter() - t), 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    out["memory_mib"] = round(peak - before, 1)
    queue.put(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--models", default="models")
    parser.add_argument("--scale", type=float, default=4.0, help="LR scale of the faces served (face side = HR / scale)")
    parser.add_argument("--faces", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    result: dict = {"scale": args.scale, "faces": args.faces, "threads": args.threads, "paths": {}}
    for path in PATHS:
        missing = [name for name in NEEDS[path] if not (Path(args.models) / name).is_file()]
        if missing:
            result["paths"][path] = {"skipped": f"no {', '.join(missing)} under {args.models}"}
            continue
        queue = ctx.Queue()
        proc = ctx.Process(target=measure, args=(path, args.models, args.prepared, args.scale, args.faces,
                                                 args.threads, queue))
        proc.start()
        result["paths"][path] = queue.get()
        proc.join()
    base = result["paths"].get("bicubic", {})
    for figures in result["paths"].values():
        for size in (1, 64):
            key = f"faces_per_s_batch_{size}"
            if key in figures and key in base:
                figures[f"ratio_batch_{size}_over_bicubic"] = round(figures[key] / base[key], 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
