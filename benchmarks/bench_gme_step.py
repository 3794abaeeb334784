"""Benchmark: where one GME-Net student step spends its time, and what channels-last weights and bf16 buy.

One step as components/training/gme.py takes it: batch to tensor (data), the frozen teacher's
forward on the HR faces and the student's forward (forward), CE + A-SKD backward (backward),
AdamW (optimiser). Two designs: the embedded default's test size (3 channels, 64 px, 8-16-24
branches, batch 32) and the FER+ profile's (1 channel, 48 px, 16-32-64 branches, fusion 128,
batch 64), on random faces of those shapes (a step's cost depends on shapes only). Each is run
with the networks as built (today's path, fp32), converted to channels-last memory, under bf16
autocast (`precision: bf16`, the forward passes; the losses in float32), and both, and with the
teacher's maps computed outside the step (`teacher_maps_cached`: what gme_train does since the
teacher's maps are computed once before training, components/training/gme.py teacher_attention),
in the same run, from the same initial weights and batches; the loss of every step of each against the
first is compared (the same curve within noise is the bar a faster path must meet).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gme_step.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.nn import functional as F

from components.losses import attention_similarity_loss
from components.models.gmenet import GMEConfig, GMENet
from components.runtime import images_to_tensor, training_autocast

DESIGNS = {
    "synthetic_test": (GMEConfig(in_channels=3, input_size=64, num_classes=7, stem_channels=8,
                                 local_channels=(8, 16, 24), global_channels=(8, 16, 24), fusion_dim=32), 32),
    "ferplus_profile": (GMEConfig(in_channels=1, input_size=48, num_classes=8, stem_channels=16,
                                  local_channels=(16, 32, 64), global_channels=(16, 32, 64), fusion_dim=128), 64),
}


def as_float(maps: list[tuple[torch.Tensor, ...]]) -> list[tuple[torch.Tensor, ...]]:
    """Attention maps (a tuple per block) in float32: under bf16 autocast the forward leaves them in bf16."""
    return [tuple(m.float() for m in block) for block in maps]


def run(cfg: GMEConfig, batch: int, steps: int, channels_last: bool, seed: int = 0, precision: str = "fp32",
        cached_teacher: bool = False) -> dict:
    torch.manual_seed(seed)
    teacher, student = GMENet(cfg).eval(), GMENet(cfg)
    if channels_last:
        teacher, student = (m.to(memory_format=torch.channels_last) for m in (teacher, student))
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    size, chans = cfg.input_size, cfg.in_channels
    phases = dict.fromkeys(("data", "forward", "backward", "optimiser"), 0.0)
    losses = []
    torch.manual_seed(seed + 1)  # dropout masks: the same in both runs
    for step in range(steps + 2):  # two warm-up steps, not timed
        t0 = time.perf_counter()
        lr_faces = rng.integers(0, 256, (batch, size, size, chans), dtype=np.uint8)
        hr_faces = rng.integers(0, 256, (batch, size, size, chans), dtype=np.uint8)
        labels = torch.from_numpy(rng.integers(0, cfg.num_classes, batch))
        x, hr = images_to_tensor(lr_faces), images_to_tensor(hr_faces)
        if cached_teacher:  # the stage's teacher_attention: the teacher's maps computed before training, not per step
            untimed = time.perf_counter()
            with torch.no_grad():
                _, teacher_maps = teacher(hr, with_attention=True)
            t0 += time.perf_counter() - untimed
        t1 = time.perf_counter()
        with training_autocast(precision, torch.device("cpu")):
            logits, maps = student(x, with_attention=True)
            if not cached_teacher:
                with torch.no_grad():
                    _, teacher_maps = teacher(hr, with_attention=True)
        loss = F.cross_entropy(logits.float(), labels) + 5.0 * attention_similarity_loss(as_float(maps),
                                                                                       as_float(teacher_maps))
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        losses.append(loss.item())
        if step >= 2:
            for key, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[key] += seconds
    total = sum(phases.values())
    return {"seconds_per_step": round(total / steps, 4),
            "share": {k: round(v / total, 3) for k, v in phases.items()}, "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    out = {"torch_threads": torch.get_num_threads()}
    for name, (cfg, batch) in DESIGNS.items():
        base = run(cfg, batch, args.steps, channels_last=False)
        out[name] = {"batch": batch, "as_built": base}
        for variant, kwargs in (("channels_last", {"channels_last": True}),
                                ("bf16", {"channels_last": False, "precision": "bf16"}),
                                ("bf16_channels_last", {"channels_last": True, "precision": "bf16"}),
                                ("teacher_maps_cached", {"channels_last": False, "cached_teacher": True})):
            fast = run(cfg, batch, args.steps, **kwargs)
            drift = max(abs(a - b) / abs(a) for a, b in zip(base["losses"], fast.pop("losses"), strict=True))
            out[name][variant] = fast | {"speedup": round(base["seconds_per_step"] / fast["seconds_per_step"], 3),
                                         "max_relative_loss_difference": float(f"{drift:.3g}")}
        base.pop("losses")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
