"""Scores and the per-scale accuracy table, shared by the evaluate and compare stages and the flows.

A table is {split: {method: {scale key: {"accuracy", "mean_class_accuracy"}}}}. People read it as
plots/accuracy_<split>.csv (`dvc plots show`: accuracy vs the numeric scale, one column, so one
line, per method), the summary metrics/<split>.json (`dvc metrics show`: one row per split, mean
accuracy over the LR scales per method), `format_table` (the main job's last lines) and MLflow
(each method's accuracy over step = scale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.io import BadInput, atomic_file, atomic_write_text


def accuracy_scores(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> dict:
    """Total accuracy, mean per-class accuracy (recall averaged over the classes present: equal to the
    accuracy when every class has as many faces, as in the embedded default) and the (K, K) confusion
    matrix (rows = true class, columns = predicted class), by scikit-learn."""
    from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise BadInput(f"labels outside 0..{num_classes - 1}: {sorted(set(labels.tolist()) - set(range(num_classes)))}")
    predictions = probs.argmax(1)
    cm = confusion_matrix(labels, predictions, labels=np.arange(num_classes))
    if len(labels) == 0:
        return {"accuracy": 0.0, "mean_class_accuracy": 0.0, "confusion": cm}
    return {"accuracy": float(accuracy_score(labels, predictions)),
            "mean_class_accuracy": float(recall_score(labels, predictions, labels=np.unique(labels), average="macro",
                                                      zero_division=0)),
            "confusion": cm}


G_ALWAYS = "fsrfer_g_always"  # the evaluate table's column of C(G(F)) at every scale
HR_TEACHER = "hr_teacher"  # the evaluate table's column of the HR teacher on the bicubic faces (x1: the HR face)
SERVED_PATHS = ("bicubic", HR_TEACHER, G_ALWAYS)  # what FSR-FER may serve at a scale, simplest first


def fsr_routes(table: dict) -> dict[str, str] | None:
    """What the served FSR-FER does at each scale key: the column of SERVED_PATHS present in the table
    with the best valid accuracy, an earlier one on a tie (a later path must strictly beat every earlier
    one); None for a table without the G column (written before the rule existed). Valid only, never test."""
    valid = table.get("valid", {})
    if G_ALWAYS not in valid:
        return None
    paths = [path for path in SERVED_PATHS if path in valid]
    routes = {}
    for key in valid[G_ALWAYS]:
        best = paths[0]
        for path in paths[1:]:
            if valid[path][key]["accuracy"] > valid[best][key]["accuracy"]:
                best = path
        routes[key] = best
    return routes


def route_scales(routes: dict[str, str], path: str) -> tuple[float, ...]:
    """The scales (1 = HR) that `routes` (fsr_routes) sends to `path`."""
    return tuple(float(key[1:]) for key, chosen in routes.items() if chosen == path)


def fsr_g_scales(table: dict) -> tuple[float, ...] | None:
    """Where the served FSR-FER applies G: the scales at which G beats bicubic (and the HR teacher, when
    the table has its column) on the table's valid split; None for a table without the G column."""
    routes = fsr_routes(table)
    return None if routes is None else route_scales(routes, G_ALWAYS)


def save_figure(fig, path: Path) -> None:
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
    save_figure(fig, path)
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
    save_figure(fig, path)
    plt.close(fig)


def format_table(table: dict) -> str:
    """Markdown table: one row per split and method, one column per scale (accuracy %; x1 = HR), and the
    mean over the LR scales."""
    lines = []
    for split, methods in table.items():
        keys = list(next(iter(methods.values())))
        lines.append(f"| {split} | " + " | ".join(keys) + " | mean LR |")
        lines.append("|---" * (len(keys) + 2) + "|")
        for method, scales in methods.items():
            lines.append(f"| {method} | " + " | ".join(f"{100 * scales[k]['accuracy']:.1f}" for k in keys)
                         + f" | {100 * mean_lr_accuracy(scales):.1f} |")
        lines.append("")
    return "\n".join(lines)


def scale_of(key: str) -> float:
    """'x2' -> 2.0, 'x2.5' -> 2.5 (x1 is the HR face)."""
    return float(key[1:])


def write_accuracy_csvs(table: dict, folder: Path) -> list[Path]:
    """<folder>/accuracy_<split>.csv per split: a numeric `scale` column (1 = HR), then one column of
    accuracies (4 decimals) per method; the files dvc.yaml's top-level plots draw. Returns their paths."""
    paths = []
    for split, methods in table.items():
        keys = list(next(iter(methods.values())))
        lines = [",".join(["scale", *methods])] + [
            ",".join([f"{scale_of(k):g}", *(f"{scales[k]['accuracy']:.4f}" for scales in methods.values())])
            for k in keys]
        paths.append(Path(folder) / f"accuracy_{split}.csv")
        atomic_write_text(paths[-1], "\n".join(lines) + "\n")
    return paths


SUMMARY_METHODS = ("bicubic", "hr_teacher", "fsrfer", "gmenet", "multiscale_cnn", "isr_fer")  # what a reader compares


def mean_lr_accuracy(scales: dict) -> float:
    """A method's accuracy averaged over its LR scales (every key but x1)."""
    return float(np.mean([s["accuracy"] for k, s in scales.items() if scale_of(k) != 1]))


def write_summary_metrics(table: dict, folder: Path) -> list[Path]:
    """<folder>/<split>.json per split: {"mean_accuracy_lr_scales": {method: value}} for the methods of
    SUMMARY_METHODS in the table, so `dvc metrics show` prints one short row per split. Returns the paths."""
    import json

    paths = []
    for split, methods in table.items():
        summary = {m: round(mean_lr_accuracy(methods[m]), 4) for m in SUMMARY_METHODS if m in methods}
        paths.append(Path(folder) / f"{split}.json")
        atomic_write_text(paths[-1], json.dumps({"mean_accuracy_lr_scales": summary}, indent=2) + "\n")
    return paths


def log_table_to_mlflow(table: dict) -> None:
    """Into the active MLflow run: each (split, method) accuracy as one metric over step = scale (a curve;
    integer scales only: MLflow steps are integers), and the whole table (every scale and score) as
    accuracy_table.json."""
    import mlflow
    import pandas as pd

    keys = {k for methods in table.values() for scales in methods.values() for k in scales}
    for key in sorted(k for k in keys if scale_of(k).is_integer()):
        mlflow.log_metrics({f"{split}.{method}.accuracy": scales[key]["accuracy"] for split, methods in table.items()
                            for method, scales in methods.items() if key in scales}, step=int(scale_of(key)))
    rows = [{"split": split, "method": method, "scale": scale_of(k), **scores}
            for split, methods in table.items() for method, scales in methods.items() for k, scores in scales.items()]
    mlflow.log_table(pd.DataFrame(rows), artifact_file="accuracy_table.json")
