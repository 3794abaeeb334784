"""Benchmark: teacher (CovPoolFER) training throughput, samples/s, on a prepared store.

Times `steps` optimisation steps (forward, backward, Adam; augmentation included when on)
after 2 warm-up steps, with the teacher section of a params file.

    .venv/bin/python benchmarks/bench_teacher.py --params params.yaml [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from components.config import TeacherConfig, load_stage_config
from components.data.augment import AugmentConfig, augment_batch, build_train_transform
from components.data.store import PreparedStore
from components.models.covpool import CovPoolConfig, CovPoolFER
from components.runtime import images_to_tensor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    cfg = load_stage_config(TeacherConfig, "teacher", args.params)
    store = PreparedStore(cfg.prepared)
    hr = np.asarray(store.array("train", "hr"))
    labels = torch.from_numpy(np.asarray(store.array("train", "labels")))
    model = CovPoolFER(CovPoolConfig(in_channels=hr.shape[3], conv_channels=cfg.conv_channels, pool_after=cfg.pool_after,
                                     bimap_dim=cfg.bimap_dim, fc_dims=cfg.fc_dims, num_classes=len(store.classes)))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    transform = build_train_transform(hr.shape[1], AugmentConfig(), seed=0) if cfg.augment else None
    rng = np.random.default_rng(0)
    for step in range(args.steps + 2):
        if step == 2:
            start = time.perf_counter()
        idx = np.sort(rng.choice(len(hr), cfg.batch_size, replace=False))
        batch = augment_batch(transform, hr[idx]) if transform else hr[idx]
        loss = torch.nn.functional.cross_entropy(model(images_to_tensor(batch)), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    print(json.dumps({"input": list(hr.shape[1:]), "batch_size": cfg.batch_size, "steps": args.steps,
                      "samples_per_s": round(args.steps * cfg.batch_size / seconds, 1),
                      "threads": torch.get_num_threads()}, indent=2))


if __name__ == "__main__":
    main()
