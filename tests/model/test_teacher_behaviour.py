"""Model tier: the teacher trained briefly on the synthetic default beats chance clearly,
and its accuracy falls as the scale factor grows (the embedded default is a real task)."""

from __future__ import annotations

import json


def test_teacher_beats_chance_on_hr(tiny_run):
    chance = 1 / 7
    hr = tiny_run.table["test"]["bicubic"]["x1"]["accuracy"]
    assert hr > 2.5 * chance, f"HR test accuracy {hr:.3f} is not clearly above chance {chance:.3f}"
    assert tiny_run.teacher_summary["best_valid_accuracy"] > 2.5 * chance


def test_accuracy_falls_as_scale_grows(tiny_run):
    test = tiny_run.table["test"]["bicubic"]
    assert test["x8"]["accuracy"] < test["x1"]["accuracy"] - 0.1
    assert test["x8"]["accuracy"] <= test["x2"]["accuracy"]


def test_evaluate_writes_metrics_and_plots(tiny_run):
    metrics = json.loads((tiny_run.root / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test"}
    for split in metrics:
        assert list(metrics[split]["bicubic"]) == ["x1", "x2", "x4", "x8"]
        for scores in metrics[split]["bicubic"].values():
            assert 0 <= scores["mean_class_accuracy"] <= 1 and 0 <= scores["accuracy"] <= 1
    plots = tiny_run.root / "plots"
    assert (plots / "accuracy_vs_scale.png").stat().st_size > 1000
    assert len(list((plots / "confusion").glob("*.png"))) == 2 * 4
    lines = (plots / "accuracy.csv").read_text().splitlines()
    assert lines[0].startswith("split,method,scale,accuracy") and len(lines) == 1 + 2 * 4


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
