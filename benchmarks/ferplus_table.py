"""The FER+ compare table from a FER+ work folder's measured parts, when the whole chain
(benchmarks/ferplus_pipeline.py) has not run to `compare`: the evaluate stage's table
(bicubic, fsrfer as served, fsrfer_g_always) joined with benchmarks/ferplus_yardsticks.py's
columns (multiscale_cnn, isr_fer), and each path's cost per face, in metrics/compare.json's
schema ({"table": split -> method -> scale -> scores, "cost": method -> {params, flops}}).
A column whose model is absent (e.g. gmenet) is left out and named under "missing".

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ferplus_table.py /work/fx /work/fx/yardsticks.json \\
        benchmarks/results/ferplus_compare.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from components.config import load_yaml
from components.data.store import PreparedStore
from components.io import atomic_write_text
from components.metrics import format_table
from components.models.cost import model_cost
from components.models.covpool import load_covpool
from components.models.gmenet import load_gmenet
from components.models.isr import load_isr
from components.models.rrdb import load_generator


def main() -> None:
    work, yardsticks, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    params = load_yaml((work / "params.yaml").read_text(), str(work / "params.yaml"))
    cmp = params["compare"]
    table = json.loads((work / params["evaluate"]["metrics"]).read_text())
    for split, methods in json.loads(yardsticks.read_text())["table"].items():
        for method in ("multiscale_cnn", "isr_fer"):
            if method in methods:
                table.setdefault(split, {})[method] = methods[method]
    meta = PreparedStore(work / params["prepare"]["out"]).meta
    shape = (1, int(meta["channels"]), int(meta["hr_size"]), int(meta["hr_size"]))
    teacher = load_covpool(work / cmp["teacher"])
    ext, cls = teacher.extractor, teacher.classifier
    g, isr = load_generator(work / cmp["fsr"]), load_isr(work / cmp["isr"])
    cost = {"bicubic": model_cost(lambda x: cls(ext(x)), shape, (ext, cls)),
            "fsrfer": model_cost(lambda x: cls(g(ext(x))), shape, (ext, g, cls)),
            "multiscale_cnn": model_cost(load_covpool(work / cmp["multiscale_cnn"]), shape),
            "isr_fer": model_cost(lambda x: cls(ext(isr(x))), shape, (isr, ext, cls))}
    missing = []
    if (work / cmp["gmenet"]).is_file():
        cost["gmenet"] = model_cost(load_gmenet(work / cmp["gmenet"]), shape)
    else:
        missing.append("gmenet")
    result = {"table": table, "cost": cost, "missing": missing,
              "sources": {"evaluate": str(work / params["evaluate"]["metrics"]), "yardsticks": str(yardsticks)}}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(format_table(table))
    print(json.dumps(cost))


if __name__ == "__main__":
    main()
