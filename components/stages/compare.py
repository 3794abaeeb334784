"""Stage `compare`: the evaluate table with GME-Net's column beside it, and the cost of each path.

Reads the `evaluate` stage's table (HR = x1 and bicubic, FSR-FER) and adds "gmenet": the
GME-Net student on the prepared faces of every split and scale (LR faces resized back to
the input size by MATLAB bicubic, as the student was trained; x1 = the HR face), with the
same scores (total and mean per-class accuracy).

Cost per face (components/models/cost.py: parameters, and FLOPs of convolutions and
matmuls; the bicubic resize and the SPD eigen-decompositions are not counted):
  bicubic  CovPoolFER extractor + classifier C on the upscaled face
  fsrfer   extractor + G + C
  gmenet   GME-Net

Outputs: metrics/compare.json (DVC metrics: {"table": split -> method -> scale -> scores,
"cost": method -> {params, flops}}), plots/compare/accuracy.csv and
plots/compare/accuracy_vs_scale.png (every method), and an MLflow run.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from components.config import CompareConfig
from components.data.store import PreparedStore, ScaledFaces
from components.io import BadInput, atomic_write_text
from components.metrics import accuracy_scores, plot_accuracy_vs_scale, write_accuracy_csv
from components.models.cost import model_cost
from components.models.covpool import load_covpool
from components.models.gmenet import load_gmenet
from components.models.rrdb import load_generator
from components.runtime import predict_proba
from components.tracking import mlflow_run


def path_costs(cfg: CompareConfig, channels: int, size: int) -> dict[str, dict[str, int]]:
    """Parameters and FLOPs of one face through each method's path."""

    shape = (1, channels, size, size)
    teacher = load_covpool(cfg.teacher)
    extractor, classifier = teacher.extractor, teacher.classifier
    costs = {"bicubic": model_cost(lambda x: classifier(extractor(x)), shape, (extractor, classifier))}
    if cfg.fsr:
        g = load_generator(cfg.fsr)
        costs["fsrfer"] = model_cost(lambda x: classifier(g(extractor(x))), shape, (extractor, g, classifier))
    costs["gmenet"] = model_cost(load_gmenet(cfg.gmenet), shape)
    return costs


def compare(cfg: CompareConfig) -> dict:
    """Add the GME-Net column to the evaluate table, cost every path, write metrics and plots."""
    import mlflow


    if not Path(cfg.evaluate).is_file():
        raise BadInput(f"compare.evaluate: {cfg.evaluate}: no evaluate table; run `fsrfer evaluate`")
    table = json.loads(Path(cfg.evaluate).read_text())
    store = PreparedStore(cfg.prepared)
    model = load_gmenet(cfg.gmenet)
    if (model.cfg.input_size, model.cfg.in_channels) != (store.meta["hr_size"], store.meta["channels"]):
        raise BadInput(f"{cfg.gmenet}: GME-Net takes {model.cfg.input_size}px x {model.cfg.in_channels} channels, "
                       f"the prepared faces are {store.meta['hr_size']}px x {store.meta['channels']}")
    rows = []
    for split, methods in table.items():
        keys = list(next(iter(methods.values())))
        data = ScaledFaces(cfg.prepared, split, keys)
        methods["gmenet"] = {}
        for key in keys:
            scores = accuracy_scores(data.labels, predict_proba(model, data.faces[key], batch_size=256), len(store.classes))
            scores.pop("confusion")
            methods["gmenet"][key] = scores
        rows += [{"split": split, "method": m, "scale": k, **s} for m, scales in methods.items()
                 for k, s in scales.items()]
    costs = path_costs(cfg, store.meta["channels"], store.meta["hr_size"])
    result = {"table": table, "cost": costs}
    atomic_write_text(cfg.metrics, json.dumps(result, indent=2) + "\n")
    plots = Path(cfg.plots)
    write_accuracy_csv(rows, plots / "accuracy.csv")
    plot_accuracy_vs_scale(table, plots / "accuracy_vs_scale.png")
    with mlflow_run(cfg.experiment, "compare", params=asdict(cfg)):
        mlflow.log_metrics({f"{r['split']}.{r['method']}.{r['scale']}.accuracy": r["accuracy"] for r in rows})
        mlflow.log_metrics({f"cost.{m}.{k}": v for m, c in costs.items() for k, v in c.items()})
        mlflow.log_artifact(cfg.metrics)
        mlflow.log_artifacts(str(plots), artifact_path="plots/compare")
    return result
