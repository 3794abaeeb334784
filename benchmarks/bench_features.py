"""Benchmark: feature-cache throughput beside the bare extractor forward pass (the limit).

Runs `cache_features` on a prepared store and a teacher, then the frozen extractor and
classifier alone in a tight loop over the same batches (every split, HR and every LR scale
upscaled, all made into tensors beforehand: no reading, no upscaling, no writing).
The ratio cache / bare is the figure (goal >= 0.8).

    .venv/bin/python benchmarks/bench_features.py --prepared data/prepared --teacher models/teacher.pt
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from components.config import FeaturesConfig
from components.data.store import PreparedStore
from components.models.covpool import load_covpool
from components.runtime import images_to_tensor
from components.stages.features import block_images, cache_features, extract


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--teacher", default="models/teacher.pt")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    store = PreparedStore(args.prepared)
    rows = sum(len(store.array(s, "labels")) for s in store.splits) * (1 + len(store.scale_keys))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cache_features(FeaturesConfig(prepared=args.prepared, teacher=args.teacher, out=f"{tmp}/f",
                                      batch_size=args.batch), progress=False)
        cache_s = time.perf_counter() - t
    model = load_covpool(args.teacher)
    batches = [images_to_tensor(block_images(store, split, key, i, min(i + args.batch, n)))
               for split in store.splits for n in [len(store.array(split, "labels"))]
               for key in ["x1", *store.scale_keys] for i in range(0, n, args.batch)]
    t = time.perf_counter()
    for b in batches:
        extract(model, b)
    bare_s = time.perf_counter() - t  # the same rows as the cache
    print(json.dumps({"rows": rows, "cache_img_per_s": round(rows / cache_s, 1),
                      "bare_extractor_img_per_s": round(rows / bare_s, 1),
                      "ratio_cache_over_bare": round(bare_s / cache_s, 3),
                      "threads": torch.get_num_threads()}, indent=2))


if __name__ == "__main__":
    main()
