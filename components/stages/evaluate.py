"""Stage `evaluate`: the per-scale accuracy table, as DVC metrics, plots and MLflow.

Methods: "bicubic" is the frozen teacher on bicubic-upscaled LR faces (x1 is the teacher
on HR), read from the feature cache's class probabilities; "fsrfer" is C(G(F_lr)) on the
cached LR features (at x1, G applied to the HR features). Later methods (GME-Net) add
their own rows through `method_columns`.

Per split (valid, test) and scale: total accuracy and mean per-class accuracy.
Outputs: metrics/evaluate.json (DVC metrics), plots/accuracy.csv (DVC plot data:
split, method, scale, accuracy), plots/accuracy_vs_scale.png and
plots/confusion/<split>_<method>_<scale>.png.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from components.data.store import atomic_file, atomic_write_text
from components.stages.features import FeatureCache


@dataclass(frozen=True)
class EvaluateConfig:
    features: str = "data/features"
    teacher: str = "models/teacher.pt"
    fsr: str = "models/fsr.pt"  # "" leaves the FSR-FER column out
    metrics: str = "metrics/evaluate.json"
    plots: str = "plots"
    splits: tuple[str, ...] = ("valid", "test")
    experiment: str = "fsrfer-evaluate"


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy_scores(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> dict:
    """Total accuracy, mean per-class accuracy (over classes present) and the confusion matrix."""
    cm = confusion_matrix(labels, probs.argmax(1), num_classes)
    per_class = np.diag(cm) / np.maximum(cm.sum(1), 1)
    present = cm.sum(1) > 0
    return {"accuracy": float(np.diag(cm).sum() / max(cm.sum(), 1)),
            "mean_class_accuracy": float(per_class[present].mean()) if present.any() else 0.0,
            "confusion": cm}


def bicubic_probs(cache: FeatureCache, split: str, key: str) -> np.ndarray:
    """The frozen teacher's probabilities on the block (HR for x1, bicubic LR otherwise)."""
    return np.asarray(cache.array(split, "probs")[cache.block(split, key)])


def fsr_probs_fn(cfg: EvaluateConfig, d: int):
    """Probabilities of C(G(F)) on a block: G applied to the cached features (at x1, to the HR ones)."""
    import torch

    from components.models.covpool import load_covpool, triu_to_matrix
    from components.stages.train_fsr import load_generator

    classifier = load_covpool(cfg.teacher).classifier
    g = load_generator(cfg.fsr)

    @torch.no_grad()
    def probs(cache: FeatureCache, split: str, key: str, batch_size: int = 256) -> np.ndarray:
        block = cache.block(split, key)
        feats = cache.array(split, "features")
        out = []
        for start in range(block.start, block.stop, batch_size):
            f = torch.from_numpy(np.asarray(feats[start : min(start + batch_size, block.stop)], dtype=np.float32))
            out.append(torch.softmax(classifier(g(triu_to_matrix(f, d))), dim=1).numpy())
        return np.concatenate(out)

    return probs


def pooled_accuracy(probs, cache: FeatureCache, splits: tuple[str, ...], key: str) -> float:
    """Accuracy of one column (`probs`, as method_columns gives) at `key` over `splits` taken together."""
    labels = np.concatenate([np.asarray(cache.array(split, "labels")[cache.block(split, key)]) for split in splits])
    predictions = np.concatenate([probs(cache, split, key).argmax(1) for split in splits])
    return float((predictions == labels).mean())


def method_columns(cfg: EvaluateConfig, cache: FeatureCache) -> dict:
    """method name -> probs(cache, split, key): bicubic always, FSR-FER when its model is configured."""
    methods = {"bicubic": bicubic_probs}
    if cfg.fsr:
        methods["fsrfer"] = fsr_probs_fn(cfg, cache.manifest["bimap_dim"])
    return methods


def _save_figure(fig, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")


def plot_accuracy_vs_scale(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(5 * len(table), 3.5), squeeze=False)
    for ax, (split, methods) in zip(axes[0], table.items()):
        for method, scales in methods.items():
            keys = list(scales)
            ax.plot(range(len(keys)), [100 * scales[k]["accuracy"] for k in keys], marker="o", label=method)
            ax.set_xticks(range(len(keys)), keys)
        ax.set_title(f"{split}: accuracy vs scale")
        ax.set_xlabel("scale (x1 = HR)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    _save_figure(fig, path)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    _save_figure(fig, path)
    plt.close(fig)


def evaluate(cfg: EvaluateConfig) -> dict:
    """Build the table, write metrics and plots, log them to MLflow; returns the table."""
    import mlflow

    from components.tracking import mlflow_run

    cache = FeatureCache(cfg.features)
    classes = cache.manifest["classes"]
    methods = method_columns(cfg, cache)
    table: dict = {}
    rows = []
    plots = Path(cfg.plots)
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
                rows.append({"split": split, "method": method, "scale": key, **scores})
                plot_confusion(cm, classes, f"{split} {method} {key}", plots / "confusion" / f"{split}_{method}_{key}.png")
    atomic_write_text(Path(cfg.metrics), json.dumps(table, indent=2) + "\n")
    csv_lines = ["split,method,scale,accuracy,mean_class_accuracy"] + [
        f"{r['split']},{r['method']},{r['scale']},{r['accuracy']:.4f},{r['mean_class_accuracy']:.4f}" for r in rows]
    atomic_write_text(plots / "accuracy.csv", "\n".join(csv_lines) + "\n")
    plot_accuracy_vs_scale(table, plots / "accuracy_vs_scale.png")
    with mlflow_run(cfg.experiment, "evaluate", params=asdict(cfg)):
        mlflow.log_metrics({f"{r['split']}.{r['method']}.{r['scale']}.{m}": r[m]
                            for r in rows for m in ("accuracy", "mean_class_accuracy")})
        mlflow.log_artifact(cfg.metrics)
        mlflow.log_artifacts(str(plots), artifact_path="plots")
    return table


def format_table(table: dict) -> str:
    """Markdown table: one row per split and method, one column per scale (accuracy %)."""
    lines = []
    for split, methods in table.items():
        keys = list(next(iter(methods.values())))
        lines.append(f"| {split} | " + " | ".join(keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        for method, scales in methods.items():
            lines.append(f"| {method} | " + " | ".join(f"{100 * scales[k]['accuracy']:.1f}" for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)
