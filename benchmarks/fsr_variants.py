"""Accuracy of FSR-FER variants on the project's own feature cache (data/features, models/teacher.pt).

Trains G in one process (no Ray, 1 thread) with params.yaml's train_fsr section updated
by a JSON dict, prints C(G(F_lr)) accuracy per LR scale on valid, test and train, and
appends the row to benchmarks/.cache/fsr_variants.jsonl. Run `dvc repro features` first.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fsr_variants.py '{"dense_residual": false}' conv_only
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.config import FSRConfig, load_yaml
from components.models.covpool import load_covpool  # noqa: E402
from components.models.rrdb import load_generator
from components.stages.train_fsr import train_fsr
from components.training.fsr import PairedFeatures, fsr_accuracy_per_scale


def main(variant: dict, name: str) -> dict:
    os.chdir(ROOT)
    torch.set_num_threads(1)
    params = load_yaml(Path("params.yaml").read_text(), "params.yaml")["train_fsr"] | variant
    cfg = FSRConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
    start = time.time()
    train_fsr(replace(cfg, out=f"benchmarks/.cache/fsr_{name}.pt"), runner="local")  # the stage, in this process
    teacher = load_covpool(cfg.teacher)
    g = load_generator(f"benchmarks/.cache/fsr_{name}.pt")
    row = {"name": name, "variant": variant, "seconds": round(time.time() - start)}
    for split in ("valid", "test", "train"):
        data = PairedFeatures(cfg.features, split, teacher.cfg.bimap_dim)
        row[split] = {k: round(v, 3) for k, v in
                      fsr_accuracy_per_scale(g, teacher.classifier, data, torch.device("cpu")).items()}
    out = Path("benchmarks/.cache/fsr_variants.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]), sys.argv[2])))
