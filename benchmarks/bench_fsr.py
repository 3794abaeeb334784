"""Benchmark: FSR-FER GAN iterations/s, Ray Train vs a plain PyTorch loop, 1 vs 2 workers.

The same worker loop (`fsr_train_loop`) and config run three ways: in this process with no
Ray (`run_local_training`), as a Ray Train TorchTrainer with 1 worker, and with 2 workers.
Iterations/s are counted inside the loop (setup and Ray start-up excluded); with 2
workers each iteration processes twice the samples (batch_size is per worker), so
samples/s is reported too.

    .venv/bin/python benchmarks/bench_fsr.py --params params.yaml [--iterations 100]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from components.config import FSRConfig, load_stage_config
from components.distributed import run_local_training, run_ray_training
from components.training.fsr import fsr_train_loop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    cfg = load_stage_config(FSRConfig, "train_fsr", args.params)
    cfg = replace(cfg, features=str(Path(cfg.features).resolve()), teacher=str(Path(cfg.teacher).resolve()),
                  iterations=args.iterations, eval_every=10**9, checkpoint_every=10**9)
    results = {}
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as Ray gives each 1-CPU worker
    import torch

    torch.set_num_threads(1)
    local = run_local_training(fsr_train_loop, {"fsr": asdict(cfg)})
    results["plain_pytorch_it_per_s"] = args.iterations / local.metrics["train_seconds"]
    with tempfile.TemporaryDirectory(dir="/tmp") as storage:
        for workers in (1, 2):
            result = run_ray_training(fsr_train_loop, {"fsr": asdict(cfg)}, num_workers=workers,
                                      name=f"bench-{workers}", storage_path=storage, max_failures=0)
            results[f"ray_{workers}_worker_it_per_s"] = args.iterations / result.metrics["train_seconds"]
    results = {k: round(v, 2) for k, v in results.items()}
    results["ray_1_over_plain"] = round(results["ray_1_worker_it_per_s"] / results["plain_pytorch_it_per_s"], 3)
    results["ray_2_over_1_samples_per_s"] = round(2 * results["ray_2_worker_it_per_s"] / results["ray_1_worker_it_per_s"], 3)
    results["batch_size_per_worker"] = cfg.batch_size
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
