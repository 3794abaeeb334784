"""Model tier: the teacher trained briefly on the synthetic default beats chance clearly,
and its accuracy falls as the scale factor grows (the embedded default is a real task)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

# matplotlib's default colour cycle: the accuracy figure draws method i in colour i of it
CYCLE_BGR = [tuple(int(c[i:i + 2], 16) for i in (4, 2, 0))
             for c in ("1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b")]


def test_teacher_beats_chance_on_hr(tiny_run):
    chance = 1 / 7
    hr = tiny_run.table["test"]["bicubic"]["x1"]["accuracy"]
    assert hr > 2.5 * chance, f"HR test accuracy {hr:.3f} is not clearly above chance {chance:.3f}"
    assert tiny_run.teacher_summary["best_valid_accuracy"] > 2.5 * chance


def test_accuracy_falls_as_scale_grows(tiny_run):
    test = tiny_run.table["test"]["bicubic"]
    assert test["x8"]["accuracy"] < test["x1"]["accuracy"] - 0.1
    assert test["x8"]["accuracy"] <= test["x2"]["accuracy"]


def read_png(path: Path) -> np.ndarray:
    """The image as BGR, after checking it is a PNG that OpenCV decodes."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4), path
    return image[..., :3]


def test_evaluate_writes_metrics_and_plots(tiny_run):
    """The metrics JSON is the table the stage returned; the figures dvc.yaml lists are real PNGs: the
    accuracy figure one panel per split with one line per method of the JSON (in the figure's colour
    cycle), a confusion matrix per split, computed method and scale, and nothing else in that folder.
    (The plot data, plots/accuracy_<split>.csv, against the JSON: tests/code/test_metrics.py.)"""
    metrics = json.loads((tiny_run.root / "metrics.json").read_text())
    assert metrics == tiny_run.table
    assert set(metrics) == {"valid", "test"}
    for split in metrics:
        assert list(metrics[split]) == ["bicubic"]  # no G configured (fsr: "")
        assert list(metrics[split]["bicubic"]) == ["x1", "x2", "x4", "x8"]
        for scores in metrics[split]["bicubic"].values():
            assert set(scores) == {"accuracy", "mean_class_accuracy"}
            assert 0 <= scores["mean_class_accuracy"] <= 1 and 0 <= scores["accuracy"] <= 1
    plots = tiny_run.root / "plots"

    figure = read_png(plots / "accuracy_vs_scale.png")
    height, width = figure.shape[:2]
    splits = list(metrics)
    assert 250 <= height <= 500 and 350 * len(splits) <= width <= 550 * len(splits), figure.shape  # 5 x 3.5 in per panel
    methods = list(metrics[splits[0]])
    for i, panel in enumerate(np.array_split(figure, len(splits), axis=1)):
        drawn = [(panel == colour).all(-1).sum() for colour in CYCLE_BGR]
        assert all(n > 50 for n in drawn[:len(methods)]), (splits[i], methods, drawn)  # a line + markers each
        assert drawn[len(methods)] == 0, (splits[i], methods, drawn)  # and no line more

    # the served `fsrfer` column copies G's or bicubic's rows: it has no matrix of its own
    promised = {f"{split}_{method}_{key}.png" for split, columns in metrics.items() for method, scales in columns.items()
                if method != "fsrfer" for key in scales}
    assert {p.name for p in (plots / "confusion").iterdir()} == promised
    for name in promised:
        height, width = read_png(plots / "confusion" / name).shape[:2]
        assert 300 <= height <= 600 and 300 <= width <= 600, (name, height, width)  # 4.5 x 4 in at 100 dpi
    assert {p.name for p in plots.iterdir()} == {"accuracy_valid.csv", "accuracy_test.csv", "accuracy_vs_scale.png",
                                                 "confusion"}


def test_teacher_is_logged_to_mlflow(tiny_run):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tiny_run.root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test-teacher")
    run = client.search_runs([exp.experiment_id])[0]
    history = client.get_metric_history(run.info.run_id, "valid_accuracy")
    assert len(history) == tiny_run.teacher_summary["epochs"]
    assert run.data.params["balance"] == "weighted_loss"
    assert any(a.path == "model" for a in client.list_artifacts(run.info.run_id))


def test_same_params_same_teacher(tiny_run, tmp_path, monkeypatch):
    """Seeds everywhere: retraining with the same config gives the same weights."""
    import torch

    from components.config import TeacherConfig
    from components.stages.teacher import train_teacher
    from tests.conftest import TINY_TEACHER

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = dict(TINY_TEACHER, epochs=1)
    a = train_teacher(TeacherConfig(prepared=str(tiny_run.prepared), out=str(tmp_path / "a.pt"), **cfg), progress=False)
    b = train_teacher(TeacherConfig(prepared=str(tiny_run.prepared), out=str(tmp_path / "b.pt"), **cfg), progress=False)
    sa = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert a["history"] == b["history"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
