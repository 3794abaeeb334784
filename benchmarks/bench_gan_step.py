"""Benchmark: where one FSR-FER G/D step spends its time (the training task itself, not a copy).

Builds the train_fsr stage's own `GANTask` (components/training/fsr.py) on a real feature cache
and teacher, in this process with one worker (the local WorkerContext), and runs its `step`:
`--steps` timed steps after two warm-up steps give seconds per step; then torch.profiler over
`--profile-steps` more steps splits the CPU time by operator family: the feature batch read
from the memory-mapped cache (data), the convolutions of G and D (forward and backward), the
matrix products, the rest of autograd, and the two Adam steps. Config: params.yaml's
train_fsr section (or `--params`), with its G and D sizes.

The same steps are also timed with G's and D's one-channel maps in NCHW memory (the path
before `matrix_maps`, components/models/rrdb.py: a bare `unsqueeze(1)`), from the same
seed, in the same run: the ratio, and how far each step's losses drift between the layouts.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gan_step.py --features data/features \
        --teacher models/teacher.pt [--params params.yaml] [--steps 30] [--profile-steps 5]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from components.config import FSRConfig, load_stage_config
from components.distributed import WorkerContext
from components.models import discriminator, rrdb
from components.models.rrdb import matrix_maps
from components.training.fsr import GANTask

FAMILIES = {  # operator name prefix -> family (profiler self CPU time, summed)
    "data": ("aten::from_numpy", "PairedFeatures", "aten::index", "aten::triu"),
    "convolution": ("aten::convolution", "aten::_convolution", "aten::mkldnn_convolution", "aten::thnn_conv",
                    "aten::convolution_backward", "aten::_slow_conv"),
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "optimiser": ("Optimizer.step", "aten::_foreach", "aten::addcdiv", "aten::lerp"),
}


def family(name: str) -> str:
    return next((fam for fam, prefixes in FAMILIES.items() if name.startswith(prefixes)), "other")


def timed_steps(cfg: FSRConfig, steps: int) -> tuple[GANTask, float, list[dict[str, float]]]:
    """A fresh seeded task: 2 warm-up steps, then `steps` timed; (task, seconds per step, every step's losses)."""
    torch.manual_seed(cfg.seed)
    ctx = WorkerContext(rank=0, world_size=1, device=torch.device("cpu"), report=lambda *a: None,
                        restore=lambda: None, wrap=lambda m: m)
    task = GANTask(cfg, ctx)
    logs = [task.step(it, np.random.default_rng([cfg.seed, 0, it])) for it in range(2)]
    t = time.perf_counter()
    logs += [task.step(it, np.random.default_rng([cfg.seed, 0, it])) for it in range(2, 2 + steps)]
    return task, (time.perf_counter() - t) / steps, logs


def main() -> None:
    from torch.profiler import ProfilerActivity, profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="data/features")
    parser.add_argument("--teacher", default="models/teacher.pt")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profile-steps", type=int, default=5)
    args = parser.parse_args()
    cfg = replace(load_stage_config(FSRConfig, "train_fsr", args.params), features=args.features, teacher=args.teacher,
                  pretrain_iterations=0)
    task, seconds, logs = timed_steps(cfg, args.steps)
    layout = {"as_built_s_per_step": round(seconds, 4)}
    for module in (rrdb, discriminator):  # the old path: NCHW maps
        module.matrix_maps = lambda f: f.unsqueeze(1)
    _, nchw_seconds, nchw_logs = timed_steps(cfg, args.steps)
    for module in (rrdb, discriminator):
        module.matrix_maps = matrix_maps
    drift = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for a, b in zip(logs, nchw_logs, strict=True) for k in a)
    first = max(abs(logs[0][k] - nchw_logs[0][k]) / max(abs(logs[0][k]), 1e-12) for k in logs[0])
    layout |= {"nchw_s_per_step": round(nchw_seconds, 4), "speedup_channels_last": round(nchw_seconds / seconds, 3),
               "max_relative_loss_difference_first_step": float(f"{first:.3g}"),
               "max_relative_loss_difference_any_step": float(f"{drift:.3g}")}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for it in range(2 + args.steps, 2 + args.steps + args.profile_steps):
            task.step(it, np.random.default_rng([cfg.seed, 0, it]))
    shares: dict[str, float] = {}
    for event in prof.key_averages():
        shares[family(event.key)] = shares.get(family(event.key), 0.0) + event.self_cpu_time_total
    total = sum(shares.values())
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    print(json.dumps({
        "torch_threads": torch.get_num_threads(), "batch": cfg.batch_size, "bimap_dim": task.train.d,
        "g": {"channels": cfg.channels, "growth": cfg.growth, "blocks": cfg.blocks}, "d_base": cfg.d_base_channels,
        "seconds_per_step": round(seconds, 4), "steps_per_s": round(1 / seconds, 2), "layout": layout,
        "share": {k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
        "top_ops": {e.key: round(e.self_cpu_time_total / total, 3) for e in top},
    }, indent=2))


if __name__ == "__main__":
    main()
