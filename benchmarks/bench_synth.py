"""Benchmark: writing the embedded default dataset (`fsrfer synth`: 1,400 image pairs).

One process (workers=1) against one process per CPU (the default) in the same run, on the
same config; the two outputs must be the same bytes (each image has its own RNG), and the
script says so. The ratio (default / one process) is the figure.

    .venv/bin/python benchmarks/bench_synth.py [--train-per-class 160 --test-per-class 40]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from components.data.synthetic import SyntheticConfig, write_synthetic_rafdb


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-per-class", type=int, default=160)
    parser.add_argument("--test-per-class", type=int, default=40)
    args = parser.parse_args()
    cfg = SyntheticConfig(train_per_class=args.train_per_class, test_per_class=args.test_per_class)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, workers in (("one_process", 1), ("per_cpu", os.cpu_count() or 1)):
            start = time.perf_counter()
            write_synthetic_rafdb(Path(tmp) / name, cfg, workers=workers)
            out[name] = {"workers": workers, "seconds": round(time.perf_counter() - start, 2),
                         "sha256": tree_digest(Path(tmp) / name)}
    out["same_bytes"] = out["one_process"]["sha256"] == out["per_cpu"]["sha256"]
    out["ratio_per_cpu_vs_one"] = round(out["per_cpu"]["seconds"] / out["one_process"]["seconds"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
