"""Stage `compare`: the evaluate table with GME-Net and the two yardsticks beside it, and the cost of each path.

Reads the `evaluate` stage's table (x1 = HR; bicubic = the frozen model, hr_teacher, FSR-FER) and adds, on the prepared
faces of every split and scale (LR faces resized back to the input size by MATLAB bicubic, as
every path was trained; x1 = the HR face), with the same scores (total and mean per-class accuracy):
  gmenet          the GME-Net student
  multiscale_cnn  the teacher's network trained on HR and every LR scale (stage multiscale_cnn)
  isr_fer         image SR (stage isr_fer) then the frozen teacher; at x1 the teacher on the HR face

Cost per face (components/models/cost.py: parameters, and FLOPs of convolutions and
matmuls; the bicubic resize and the SPD eigen-decompositions are not counted):
  bicubic         CovPoolFER extractor + classifier C on the upscaled face
  fsrfer          extractor + G + C
  gmenet          GME-Net
  multiscale_cnn  its CovPoolFER
  isr_fer         SR network + extractor + C

Outputs: metrics/compare.json ({"table": split -> method -> scale -> scores, "cost": method ->
{params, flops}}), metrics/summary/<split>.json (the DVC metrics: mean accuracy over the LR
scales per method), plots/compare/accuracy_<split>.csv (accuracy vs numeric scale, a column per
method: what dvc.yaml's plots draw) and plots/compare/accuracy_vs_scale.png, and an MLflow run
(each method's accuracy over step = scale, the table, the costs, those files).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from components.config import CompareConfig
from components.data.store import PreparedStore, ScaledFaces
from components.io import BadInput, atomic_write_text
from components.metrics import (
    accuracy_scores,
    log_table_to_mlflow,
    plot_accuracy_vs_scale,
    write_accuracy_csvs,
    write_summary_metrics,
)
from components.models.cost import model_cost
from components.models.covpool import load_covpool
from components.models.gmenet import load_gmenet
from components.models.isr import load_isr, super_resolve
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
    costs["multiscale_cnn"] = model_cost(load_covpool(cfg.multiscale_cnn), shape)
    isr = load_isr(cfg.isr)
    costs["isr_fer"] = model_cost(lambda x: classifier(extractor(isr(x))), shape, (isr, extractor, classifier))
    return costs


def compare(cfg: CompareConfig) -> dict:
    """Add the GME-Net, multi-scale CNN and image-SR columns to the evaluate table, cost every path,
    write metrics and plots."""
    import mlflow


    if not Path(cfg.evaluate).is_file():
        raise BadInput(f"compare.evaluate: {cfg.evaluate}: no evaluate table; run `fsrfer evaluate`")
    table = json.loads(Path(cfg.evaluate).read_text())
    store = PreparedStore(cfg.prepared)
    gmenet, teacher = load_gmenet(cfg.gmenet), load_covpool(cfg.teacher)
    multiscale, isr = load_covpool(cfg.multiscale_cnn), load_isr(cfg.isr)
    shape = (store.meta["hr_size"], store.meta["channels"])
    for name, path, got in (("gmenet", cfg.gmenet, (gmenet.cfg.input_size, gmenet.cfg.in_channels)),
                            ("multiscale_cnn", cfg.multiscale_cnn, (None, multiscale.cfg.in_channels)),
                            ("isr", cfg.isr, (None, isr.cfg.in_channels))):
        if got[1] != shape[1] or got[0] not in (None, shape[0]):
            raise BadInput(f"compare.{name}: {path} takes {got[0] or 'any'}px x {got[1]} channels, the prepared "
                           f"faces are {shape[0]}px x {shape[1]}")
    paths = {  # method -> (key, uint8 faces at the input size) -> class probabilities
        "gmenet": lambda key, faces: predict_proba(gmenet, faces, batch_size=256),
        "multiscale_cnn": lambda key, faces: predict_proba(multiscale, faces, batch_size=256),
        "isr_fer": lambda key, faces: predict_proba(teacher, faces if key == "x1" else super_resolve(isr, faces),
                                                    batch_size=256),
    }
    for split, methods in table.items():
        keys = list(next(iter(methods.values())))
        data = ScaledFaces(cfg.prepared, split, keys)
        for method, probs_of in paths.items():
            methods[method] = {}
            for key in keys:
                scores = accuracy_scores(data.labels, probs_of(key, data.faces[key]), len(store.classes))
                scores.pop("confusion")
                methods[method][key] = scores
    costs = path_costs(cfg, store.meta["channels"], store.meta["hr_size"])
    result = {"table": table, "cost": costs}
    atomic_write_text(cfg.metrics, json.dumps(result, indent=2) + "\n")
    summaries = write_summary_metrics(table, Path(cfg.summary))
    plots = Path(cfg.plots)
    csvs = write_accuracy_csvs(table, plots)
    plot_accuracy_vs_scale(table, plots / "accuracy_vs_scale.png")
    with mlflow_run(cfg.experiment, "compare", params=asdict(cfg)):
        log_table_to_mlflow(table)
        mlflow.log_metrics({f"cost.{m}.{k}": v for m, c in costs.items() for k, v in c.items()})
        for path in (Path(cfg.metrics), *summaries, *csvs, plots / "accuracy_vs_scale.png"):
            mlflow.log_artifact(str(path))
    return result
