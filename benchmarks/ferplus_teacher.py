"""FER+ teacher levers: the teacher stage on FER+ with the FER+ profile and extra overrides.

Writes <workdir>/params.yaml (params.yaml + profiles/ferplus.yaml, FER+ root absolute),
prepares FER+ there once (`fsrfer prepare`), then runs `fsrfer teacher` with the given
`--set teacher.key=value` overrides and prints the per-epoch validation accuracy (FER+ Valid,
majority protocol). Selection is on Valid only; FER+ Test is not read.

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

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--ferplus", default=str(REPO.parent / "shared" / "data" / "ferplus"))
    parser.add_argument("--set", action="append", default=[], help="teacher.key=value (repeatable)")
    parser.add_argument("--name", default="teacher", help="names the model file and the summary")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in yaml.safe_load((REPO / "profiles" / "ferplus.yaml").read_text()).items():
        params[section].update(values)
    params["prepare"]["root"] = args.ferplus
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    fsrfer = [sys.executable, "-m", "components.cli"]
    if not (work / "data" / "prepared" / "meta.json").is_file():
        subprocess.run(fsrfer + ["prepare"], cwd=work, env=env, check=True)
    summary = work / f"{args.name}.json"
    overrides = [f"teacher.out=models/{args.name}.pt", "teacher.experiment=ferplus-teacher-levers"] + args.set
    subprocess.run(fsrfer + ["teacher", "--summary", str(summary)] + [a for o in overrides for a in ("--set", o)],
                   cwd=work, env=env, check=True)
    result = json.loads(summary.read_text())
    print(json.dumps({"overrides": args.set, "best_valid_accuracy": result["best_valid_accuracy"],
                      "valid_accuracy_per_epoch": [round(h["valid_accuracy"], 4) for h in result["history"]]}))


if __name__ == "__main__":
    main()
