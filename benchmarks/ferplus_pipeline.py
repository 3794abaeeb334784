"""The FER+ profile's pipeline, stage by stage, in a work folder outside the repository; writes
benchmarks/results/ferplus_compare.json (metrics/compare.json's schema: every column, valid and
test, plus the cost per face) with each stage's wall time.

It runs the same `fsrfer <stage>` commands as dvc.yaml, in dvc.yaml's order up to `compare`,
with params.yaml + profiles/ferplus.yaml (FER+ root made absolute) and one Ray worker on one
thread (`ray.num_workers=1`; the 2-core machine's other core stays free). A stage whose
summary is already in <workdir>/summaries is skipped (rerun after an interruption; delete the
summary to redo one). Selection is on FER+ Valid only; the table reports Test beside it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_pipeline.py /work/fx [--stages multiscale_cnn ...]

The deployment runs (`prefect deployment run train-fsrfer/ferplus`, then `train-gmenet/ferplus`)
run the same stages in the checkout itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from components.config import load_yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "teacher", "multiscale_cnn", "features", "tune", "train_fsr", "evaluate", "gme_teacher",
          "gme_train", "isr_fer", "compare")


def write_params(work: Path, ferplus: str) -> None:
    params = load_yaml((REPO / "params.yaml").read_text(), "params.yaml")
    for section, values in load_yaml((REPO / "profiles" / "ferplus.yaml").read_text(), "profiles/ferplus.yaml").items():
        params[section].update(values)
    params["prepare"]["root"] = ferplus
    params["ray"].update(num_workers=1, cpus_per_worker=1.0)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def read_times(work: Path) -> dict:
    path = work / "summaries" / "times.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("--ferplus", default=str(REPO.parent / "shared" / "data" / "ferplus"))
    parser.add_argument("--stages", nargs="*", default=list(STAGES), choices=STAGES)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ferplus_compare.json"))
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    (work / "summaries").mkdir(parents=True, exist_ok=True)
    write_params(work, str(Path(args.ferplus).resolve()))
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    times = read_times(work)
    for stage in args.stages:
        summary = work / "summaries" / f"{stage}.json"
        if summary.is_file():
            print(f"{stage}: done before ({times.get(stage, '?')} s), skipped", flush=True)
            continue
        start = time.time()
        subprocess.run([sys.executable, "-m", "components.cli", stage, "--summary", str(summary)], cwd=work, env=env,
                       check=True)
        times = read_times(work) | {stage: round(time.time() - start)}  # re-read: another run may share the folder
        (work / "summaries" / "times.json").write_text(json.dumps(times, indent=1))
        print(f"{stage}: {times[stage]} s", flush=True)
    if "compare" in args.stages:
        params = load_yaml((work / "params.yaml").read_text(), str(work / "params.yaml"))
        table = json.loads((work / params["compare"]["metrics"]).read_text())
        table["stage_seconds"] = read_times(work)
        table["profile"] = "profiles/ferplus.yaml, ray.num_workers=1, OMP_NUM_THREADS=" + os.environ.get(
            "OMP_NUM_THREADS", "unset")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
