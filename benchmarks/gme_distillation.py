"""How many iterations does the suite need to show what A-SKD distillation does? (issue: tests
that a broken implementation would fail; tests/model/test_gmenet_train.py.)

The model tier's setting: the tiny run's data (synthetic, 80 train / 20 test faces per class,
seed 0, prepared at 64 px, x2/x4/x8), the model tier's GME-Net sizes (8-16-24, fusion 32,
batch 32, lr 3e-3). Per seed: the HR teacher on 2 Ray Train workers (the test fixture's: 200
iterations), then, for each student length, two students in one process (runner "local")
from the same seed, batches and initial weights: lambda_at = 5 and lambda_at = 0. Prints, on
the 56 valid faces, the mean student-teacher attention-map cosine per scale (the test's
`map_cosine`), the mean A-SKD term of the last 50 training steps, and x8 accuracy pooled over
valid + test.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/gme_distillation.py <folder> <seed> [--students 100 150]
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.config import GMETrainConfig, PrepareConfig  # noqa: E402
from components.data.store import PreparedStore, ScaledFaces  # noqa: E402
from components.data.synthetic import SyntheticConfig, write_synthetic_rafdb  # noqa: E402
from components.models.gmenet import load_gmenet  # noqa: E402
from components.stages.gme_teacher import train_gme_teacher  # noqa: E402
from components.stages.gme_train import train_gmenet  # noqa: E402
from components.stages.prepare import prepare  # noqa: E402
from components.training.gme import accuracy_per_scale  # noqa: E402
from tests.model.test_gmenet_train import TINY_GME, map_cosine  # noqa: E402


def last_l_at(uri: str, run_name: str) -> float:
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("gme-distillation").experiment_id],
                              filter_string=f"attributes.run_name = '{run_name}'")
    history = sorted(client.get_metric_history(runs[0].info.run_id, "l_at"), key=lambda m: m.step)
    return float(np.mean([m.value for m in history[-50:]]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("seed", type=int)
    parser.add_argument("--teacher", type=int, default=200, help="teacher iterations (2 Ray workers)")
    parser.add_argument("--students", type=int, nargs="+", default=(100, 150), help="student lengths (local)")
    args = parser.parse_args()
    root = Path(args.folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    prepared = root / "prepared"
    if not (prepared / "meta.json").is_file():
        write_synthetic_rafdb(root / "raw", SyntheticConfig(train_per_class=80, test_per_class=20, seed=0))
        prepare(PrepareConfig(root=str(root / "raw"), out=str(prepared), hr_size=64, scales=(2, 4, 8)))
    base = GMETrainConfig(prepared=str(prepared), storage=str(root / f"ray{args.seed}"), seed=args.seed,
                          **(TINY_GME | {"experiment": "gme-distillation"}))
    teacher_cfg = replace(base, out=str(root / f"teacher{args.seed}.pt"), iterations=args.teacher,
                          checkpoint_every=args.teacher, eval_every=args.teacher, run_name=f"teacher{args.seed}")
    start = time.time()
    if not Path(teacher_cfg.out).is_file():
        train_gme_teacher(teacher_cfg)
    teacher = load_gmenet(teacher_cfg.out)
    keys = PreparedStore(prepared).scale_keys
    valid = ScaledFaces(str(prepared), "valid", keys)
    out = {"seed": args.seed, "teacher_seconds": round(time.time() - start)}
    for its in args.students:
        row = {}
        for lam in (5.0, 0.0):
            name = f"s{args.seed}_it{its}_l{lam:g}"
            t0 = time.time()
            cfg = replace(base, teacher=teacher_cfg.out, out=str(root / f"{name}.pt"), lambda_at=lam, iterations=its,
                          checkpoint_every=its, eval_every=its, run_name=name)
            train_gmenet(cfg, runner="local")
            model = load_gmenet(cfg.out)
            right = total = 0
            for split in ("valid", "test"):
                data = ScaledFaces(str(prepared), split, ["x8"])
                right += round(accuracy_per_scale(model, data, torch.device("cpu"))["x8"] * len(data.labels))
                total += len(data.labels)
            row[f"lambda{lam:g}"] = {"map_cosine": {k: round(map_cosine(model, teacher, valid, k), 3) for k in keys},
                                     "l_at_last50": round(last_l_at(uri, name), 4), "x8_pooled": round(right / total, 3),
                                     "seconds": round(time.time() - t0)}
        row["gap"] = {k: round(row["lambda5"]["map_cosine"][k] - row["lambda0"]["map_cosine"][k], 3) for k in keys}
        out[f"students_{its}"] = row
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
