"""Can a test-sized run show FSR-FER beating bicubic, and GME-Net beating chance, at x8 on the
synthetic data at its default face size (100 px)? (issues: FSR-FER, GME-Net; the suite's
model tier runs at 64 px, where x8 faces are 8 px.)

One seeded run: synthetic faces -> prepare (HR 100, x2/x4/x8) -> a small CovPoolFER teacher
-> feature cache -> evaluate, reused by later seeds in the same folder; then, per seed, a
small G trained in-process (the model tier's FSR settings) or the model tier's GME-Net
teacher and student on 2 Ray Train workers. Prints accuracies pooled over valid + test.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/small_x8.py <folder> fsr|gme <seed> \
        [--train-per-class 160] [--test-per-class 40] [--teacher-epochs 30] [--data-seed 0] \
        [--fsr-iterations 800] [--gme-iterations 200 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.config import (
    EvaluateConfig,
    FeaturesConfig,
    PrepareConfig,  # noqa: E402
    TeacherConfig,
)
from components.data.feature_cache import FeatureCache
from components.data.synthetic import SyntheticConfig, write_synthetic_rafdb  # noqa: E402
from components.stages.evaluate import evaluate
from components.stages.features import cache_features
from components.stages.prepare import prepare  # noqa: E402
from components.stages.teacher import train_teacher

SPLITS = ("valid", "test")  # pooled


def chain(root: Path, args) -> None:
    """Synthetic faces -> prepared store -> teacher -> feature cache -> evaluate (once per folder)."""
    if (root / "metrics.json").is_file():
        return
    write_synthetic_rafdb(root / "raw", SyntheticConfig(train_per_class=args.train_per_class,
                                                        test_per_class=args.test_per_class, seed=args.data_seed))
    prepare(PrepareConfig(root=str(root / "raw"), out=str(root / "prepared"), hr_size=100, scales=(2, 4, 8),
                          seed=args.data_seed))
    train_teacher(TeacherConfig(prepared=str(root / "prepared"), out=str(root / "teacher.pt"),
                                conv_channels=(16, 32, 48, 48, 64, 64), pool_after=(0, 1, 3), bimap_dim=24,
                                fc_dims=(128, 64), epochs=args.teacher_epochs, batch_size=32, lr=2e-3, augment=False,
                                seed=args.data_seed, experiment="small-x8"), progress=False)
    cache_features(FeaturesConfig(prepared=str(root / "prepared"), teacher=str(root / "teacher.pt"),
                                  out=str(root / "features")), progress=False)
    evaluate(EvaluateConfig(features=str(root / "features"), metrics=str(root / "metrics.json"),
                            plots=str(root / "plots"), experiment="small-x8", fsr=""))


def fsr(root: Path, seed: int, iterations: int) -> dict:
    from components.config import FSRConfig
    from components.stages.evaluate import bicubic_probs, fsr_probs_fn, pooled_accuracy
    from components.stages.train_fsr import train_fsr

    cfg = FSRConfig(features=str(root / "features"), teacher=str(root / "teacher.pt"), out=str(root / f"fsr{seed}.pt"),
                    channels=8, growth=8, blocks=1, dense_residual=True, loss_norm="mean", w_gan=0.1, w_percep=10.0, w_feat=0.01,
                    lr=1e-3, iterations=iterations, milestones=(iterations * 2 // 3,), batch_size=16, seed=seed,
                    checkpoint_every=iterations, eval_every=iterations)
    train_fsr(cfg, runner="local")  # the stage, in this process
    cache = FeatureCache(root / "features")
    d = cache.manifest["bimap_dim"]
    columns = {"fsrfer": fsr_probs_fn(EvaluateConfig(features=cfg.features, teacher=cfg.teacher, fsr=cfg.out), d),
               "bicubic": bicubic_probs}
    return {key: {name: round(pooled_accuracy(probs, cache, SPLITS, key), 3) for name, probs in columns.items()}
            for key in ("x4", "x8")}


def gme(root: Path, seed: int, teacher_its: int, student_its: int) -> dict:
    from components.config import GMETrainConfig
    from components.data.store import ScaledFaces
    from components.distributed import init_ray
    from components.models.gmenet import load_gmenet
    from components.stages.gme_teacher import train_gme_teacher
    from components.stages.gme_train import train_gmenet
    from components.training.gme import accuracy_per_scale

    init_ray(num_cpus=2)
    base = GMETrainConfig(prepared=str(root / "prepared"), storage=str(root / f"ray{seed}"), stem_channels=8,
                          local_channels=(8, 16, 24), global_channels=(8, 16, 24), fusion_dim=32, batch_size=32,
                          lr=3e-3, num_workers=2, cpus_per_worker=0.5, experiment="small-x8", seed=seed)
    teacher = replace(base, out=str(root / f"gme_teacher{seed}.pt"), iterations=teacher_its,
                      checkpoint_every=teacher_its, eval_every=teacher_its, run_name="gme_teacher")
    student = replace(base, teacher=teacher.out, out=str(root / f"gmenet{seed}.pt"), iterations=student_its,
                      checkpoint_every=student_its, eval_every=student_its, run_name="gme_train")
    train_gme_teacher(teacher)
    train_gmenet(student)
    model, right, total = load_gmenet(student.out), 0, 0
    for split in ("valid", "test"):
        data = ScaledFaces(student.prepared, split, ["x8"])
        right += round(accuracy_per_scale(model, data, torch.device("cpu"))["x8"] * len(data.labels))
        total += len(data.labels)
    return {"x8": {"gmenet": round(right / total, 3), "chance": round(1 / 7, 3), "faces": total}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("method", choices=["fsr", "gme"])
    parser.add_argument("seed", type=int)
    parser.add_argument("--train-per-class", type=int, default=160)
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data and the teacher")
    parser.add_argument("--fsr-iterations", type=int, default=800)
    parser.add_argument("--gme-iterations", type=int, nargs=2, default=(200, 300))
    args = parser.parse_args()
    root = Path(args.folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    start = time.time()
    chain(root, args)
    table = json.loads((root / "metrics.json").read_text())
    out = {"bicubic_table": {s: {k: round(v["accuracy"], 3) for k, v in table[s]["bicubic"].items()}
                             for s in ("valid", "test")}}
    if args.method == "fsr":
        out |= fsr(root, args.seed, args.fsr_iterations)
    else:
        out |= gme(root, args.seed, *args.gme_iterations)
    print(json.dumps(out | {"seed": args.seed, "seconds": round(time.time() - start)}, indent=1))


if __name__ == "__main__":
    main()
