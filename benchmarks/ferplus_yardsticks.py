"""FER+ Valid per scale: the teacher on bicubic LR faces beside the compare table's yardsticks.

Reads a FER+ workdir made by benchmarks/ferplus_teacher.py (its prepared store and model files)
and scores, on FER+ Valid only (FER+ Test is not read), at x1 and every prepared scale:
  bicubic         the teacher (CovPoolFER, HR-only) on the LR face upscaled back (MATLAB bicubic)
  multiscale_cnn  the multiscale_cnn stage's model on the same faces
  isr_fer         the isr_fer stage's SR network, then the teacher (x1: the teacher on HR)
as the compare stage scores them (components/stages/compare.py), and prints a markdown table
and the JSON (`--out` keeps it).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_yardsticks.py /work/fx \\
        --teacher models/recipeA12.pt --multiscale-cnn models/ms12.pt [--isr models/isr.pt] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.data.store import PreparedStore, ScaledFaces
from components.io import atomic_write_text
from components.metrics import accuracy_scores, format_table
from components.models.covpool import load_covpool
from components.models.isr import load_isr, super_resolve
from components.runtime import predict_proba


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--multiscale-cnn")
    parser.add_argument("--isr")
    parser.add_argument("--out")
    args = parser.parse_args()
    work = Path(args.workdir)
    store = PreparedStore(work / "data" / "prepared")
    keys = ["x1", *store.scale_keys]
    data = ScaledFaces(str(store.root), "valid", keys)
    teacher = load_covpool(work / args.teacher)
    paths = {"bicubic": lambda key, faces: predict_proba(teacher, faces, batch_size=256)}
    if args.multiscale_cnn:
        multiscale = load_covpool(work / args.multiscale_cnn)
        paths["multiscale_cnn"] = lambda key, faces: predict_proba(multiscale, faces, batch_size=256)
    if args.isr:
        isr = load_isr(work / args.isr)
        paths["isr_fer"] = lambda key, faces: predict_proba(
            teacher, faces if key == "x1" else super_resolve(isr, faces), batch_size=256)
    table = {"valid": {}}
    for method, probs_of in paths.items():
        table["valid"][method] = {}
        for key in keys:
            scores = accuracy_scores(data.labels, probs_of(key, data.faces[key]), len(store.classes))
            scores.pop("confusion")
            table["valid"][method][key] = scores
    print(format_table(table))
    text = json.dumps({"models": {k: v for k, v in vars(args).items() if k != "out"}, "table": table}, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
