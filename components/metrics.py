"""Scores and the per-scale accuracy table, shared by the evaluate and compare stages and the flows.

A table is {split: {method: {scale key: {"accuracy", "mean_class_accuracy"}}}}; its rows
(split, method, scale, scores) are what plots/accuracy.csv and MLflow receive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.io import atomic_file, atomic_write_text


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


def scales_where_better(valid: dict, method: str, baseline: str) -> tuple[float, ...]:
    """The scales (1 = HR) at which `method` beats `baseline` in accuracy on the valid table
    (method -> "x<s>" -> scores): where FSR-FER applies G. Chosen on valid, never on test."""
    return tuple(float(key[1:]) for key, row in valid[method].items()
                 if row["accuracy"] > valid[baseline][key]["accuracy"])


G_ALWAYS = "fsrfer_g_always"  # the evaluate table's column of C(G(F)) at every scale


def fsr_g_scales(table: dict) -> tuple[float, ...] | None:
    """Where the served FSR-FER applies G: the scales at which G beats bicubic on the table's valid
    split; None for a table without the G column (written before the rule existed)."""
    if G_ALWAYS not in table.get("valid", {}):
        return None
    return scales_where_better(table["valid"], G_ALWAYS, "bicubic")


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


def write_accuracy_csv(rows: list[dict], path: Path) -> None:
    """plots/accuracy.csv: one line per (split, method, scale) row, accuracies to 4 decimals."""
    lines = ["split,method,scale,accuracy,mean_class_accuracy"] + [
        f"{r['split']},{r['method']},{r['scale']},{r['accuracy']:.4f},{r['mean_class_accuracy']:.4f}" for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
