"""Stage `evaluate`: the per-scale accuracy table, as DVC metrics, plots and MLflow.

Methods: "bicubic" is the frozen FER model (`teacher`: FSR-FER's extractor and classifier) on
bicubic-upscaled LR faces (x1: on HR), read from the feature cache's class probabilities;
"hr_teacher" (when `hr_teacher` is set) is the HR teacher on the same faces, from the prepared
store; "fsrfer_g_always" is C(G(F_lr)) on the cached LR features at every scale (at x1, G applied
to the HR features); "fsrfer" is what the served model does: at each scale the one of those three
paths that is best on the valid split, the simpler on a tie (components/metrics.py:fsr_routes),
on every split, test included, by that one valid-chosen rule. Later methods (GME-Net) add their
own rows through `method_columns`.

Per split (valid, test) and scale: total accuracy and mean per-class accuracy (on a set with
balanced classes, as the embedded default's, the two are equal).
Outputs: metrics/evaluate.json (the whole table, read by register), plots/accuracy_<split>.csv
(accuracy vs numeric scale, a column per method), plots/accuracy_vs_scale.png and
plots/confusion/<split>_<method>_<scale>.png; in MLflow, each method's accuracy over step =
scale, the table, and those files (nothing else of plots/).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from components.config import EvaluateConfig
from components.data.feature_cache import FeatureCache
from components.data.store import ScaledFaces
from components.io import BadInput, atomic_write_text
from components.metrics import (
    G_ALWAYS,
    HR_TEACHER,
    accuracy_scores,
    fsr_routes,
    log_table_to_mlflow,
    plot_accuracy_vs_scale,
    plot_confusion,
    write_accuracy_csvs,
)
from components.models.covpool import load_covpool, triu_to_matrix
from components.models.rrdb import load_generator
from components.runtime import predict_proba
from components.tracking import mlflow_run


def bicubic_probs(cache: FeatureCache, split: str, key: str) -> np.ndarray:
    """The frozen teacher's probabilities on the block (HR for x1, bicubic LR otherwise)."""
    return np.asarray(cache.array(split, "probs")[cache.block(split, key)])


def fsr_probs_fn(cfg: EvaluateConfig, d: int):
    """Probabilities of C(G(F)) on a block: G applied to the cached features (at x1, to the HR ones)."""
    import torch


    classifier = load_covpool(cfg.teacher).classifier
    g = load_generator(cfg.fsr)

    @torch.no_grad()
    def probs(cache: FeatureCache, split: str, key: str, batch_size: int = 256) -> np.ndarray:
        block = cache.block(split, key)
        feats = cache.array(split, "features")
        out = []
        for start in range(block.start, block.stop, batch_size):
            f = torch.from_numpy(np.array(feats[start : min(start + batch_size, block.stop)], dtype=np.float32))
            out.append(torch.softmax(classifier(g(triu_to_matrix(f, d))), dim=1).numpy())
        return np.concatenate(out)

    return probs


def hr_teacher_probs_fn(cfg: EvaluateConfig, cache: FeatureCache):
    """Probabilities of the HR teacher on a block's faces from the prepared store (bicubic-upscaled LR
    faces, the HR face at x1: the faces the cache's extractor saw), one split's faces decoded once."""
    teacher = load_covpool(cfg.hr_teacher)
    if teacher.cfg.num_classes != len(cache.manifest["classes"]):
        raise BadInput(f"evaluate.hr_teacher: {cfg.hr_teacher} has {teacher.cfg.num_classes} classes, "
                       f"{cfg.features} has {len(cache.manifest['classes'])}")
    faces: dict[str, ScaledFaces] = {}

    def probs(cache: FeatureCache, split: str, key: str) -> np.ndarray:
        if split not in faces:
            faces[split] = ScaledFaces(cfg.prepared, split, list(cache.keys))
            cached = np.asarray(cache.array(split, "labels")[cache.block(split, "x1")])
            if not np.array_equal(faces[split].labels, cached):
                raise BadInput(f"evaluate.prepared: {cfg.prepared}'s {split} split is not the one {cfg.features} "
                               f"was made from; rerun `fsrfer features`")
        return predict_proba(teacher, faces[split].faces[key], batch_size=256)

    return probs


def pooled_accuracy(probs, cache: FeatureCache, splits: tuple[str, ...], key: str) -> float:
    """Accuracy of one column (`probs`, as method_columns gives) at `key` over `splits` taken together."""
    labels = np.concatenate([np.asarray(cache.array(split, "labels")[cache.block(split, key)]) for split in splits])
    predictions = np.concatenate([probs(cache, split, key).argmax(1) for split in splits])
    return float((predictions == labels).mean())


def method_columns(cfg: EvaluateConfig, cache: FeatureCache) -> dict:
    """method name -> probs(cache, split, key): bicubic always, FSR-FER when its model is configured."""
    methods = {"bicubic": bicubic_probs}
    if cfg.hr_teacher:
        methods[HR_TEACHER] = hr_teacher_probs_fn(cfg, cache)
    if cfg.fsr:
        cache.require_extractor(cfg.teacher, "evaluate.teacher")
        methods[G_ALWAYS] = fsr_probs_fn(cfg, cache.manifest["bimap_dim"])
    return methods


def served_fsr_column(table: dict) -> dict[str, str]:
    """Add the `fsrfer` column (per split and scale: the row of the path valid chose there); returns the routes."""
    routes = fsr_routes(table)
    for methods in table.values():
        methods["fsrfer"] = {key: dict(methods[path][key]) for key, path in routes.items()}
    return routes


def evaluate(cfg: EvaluateConfig) -> dict:
    """Build the table, write metrics and plots, log them to MLflow; returns the table."""
    import mlflow


    cache = FeatureCache(cfg.features)
    classes = cache.manifest["classes"]
    methods = method_columns(cfg, cache)
    table: dict = {}
    plots = Path(cfg.plots)
    figures = []
    for split in cfg.splits:
        if split not in cache.splits:
            continue
        labels = np.asarray(cache.array(split, "labels")[cache.block(split, "x1")])
        table[split] = {}
        for method, probs_of in methods.items():
            table[split][method] = {}
            for key in cache.keys:
                scores = accuracy_scores(labels, probs_of(cache, split, key), len(classes))
                cm = scores.pop("confusion")
                table[split][method][key] = scores
                figures.append(plots / "confusion" / f"{split}_{method}_{key}.png")
                plot_confusion(cm, classes, f"{split} {method} {key}", figures[-1])
    if G_ALWAYS in methods:
        if "valid" not in table:
            raise BadInput(f"evaluate: {cfg.features} has no valid split to choose where G applies (splits: {sorted(table)})")
        served_fsr_column(table)
    atomic_write_text(Path(cfg.metrics), json.dumps(table, indent=2) + "\n")
    csvs = write_accuracy_csvs(table, plots)
    plot_accuracy_vs_scale(table, plots / "accuracy_vs_scale.png")
    with mlflow_run(cfg.experiment, "evaluate", params=asdict(cfg)):
        log_table_to_mlflow(table)
        for path in (Path(cfg.metrics), *csvs, plots / "accuracy_vs_scale.png"):
            mlflow.log_artifact(str(path))
        for path in figures:
            mlflow.log_artifact(str(path), artifact_path="confusion")
    return table
