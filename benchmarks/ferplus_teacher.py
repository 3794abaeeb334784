"""FER+ teacher levers: the teacher (or multiscale_cnn) stage on FER+ with the FER+ profile and extra overrides.

Writes <workdir>/params.yaml (params.yaml + profiles/ferplus.yaml, FER+ root absolute),
prepares FER+ there once (`fsrfer prepare`), then runs `fsrfer <stage>` (teacher by default;
`--stage multiscale_cnn` for the yardstick, which shares the teacher's network and recipe;
`--stage isr_fer` for the image-SR yardstick, whose summary is printed as it is) with
the given `--set <stage>.key=value` overrides and prints the per-epoch validation accuracy (FER+
Valid, majority protocol; multiscale_cnn: the mean over x1..x8 and each scale's). Selection is on
Valid only; FER+ Test is not read.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ferplus_teacher.py /work/fx \\
        --set teacher.targets=votes --set teacher.schedule=onecycle --set teacher.lr=0.002 ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ferplus_pipeline import write_params  # benchmarks/ferplus_pipeline.py (this script's folder)

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--ferplus", default=str(REPO.parent / "shared" / "data" / "ferplus"))
    parser.add_argument("--stage", default="teacher", choices=["teacher", "multiscale_cnn", "isr_fer"])
    parser.add_argument("--set", action="append", default=[], help="<stage>.key=value (repeatable)")
    parser.add_argument("--name", default="teacher", help="names the model file and the summary")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    write_params(work, str(Path(args.ferplus).resolve()))  # also one Ray worker: the teacher stages use none
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    fsrfer = [sys.executable, "-m", "components.cli"]
    if not (work / "data" / "prepared" / "meta.json").is_file():
        subprocess.run(fsrfer + ["prepare"], cwd=work, env=env, check=True)
    summary = work / f"{args.name}.json"
    stage = args.stage
    overrides = [f"{stage}.out=models/{args.name}.pt", "mlflow.experiment=ferplus-teacher-levers"] + args.set
    subprocess.run(fsrfer + [stage, "--summary", str(summary)] + [a for o in overrides for a in ("--set", o)],
                   cwd=work, env=env, check=True)
    result = json.loads(summary.read_text())
    if "history" not in result:  # isr_fer: its summary (valid PSNR per scale) as it is
        print(json.dumps({"stage": stage, "overrides": args.set} | result))
        return
    print(json.dumps({"stage": stage, "overrides": args.set, "best_valid_accuracy": result["best_valid_accuracy"],
                      "valid_accuracy_per_epoch": [round(h["valid_accuracy"], 4) for h in result["history"]],
                      "per_scale": [{k[len("valid_accuracy_"):]: round(v, 4) for k, v in h.items()
                                     if k.startswith("valid_accuracy_x")} for h in result["history"]]}))


if __name__ == "__main__":
    main()
