"""Model tier: the teacher's real-data levers (soft vote targets, one-cycle schedule, label
smoothing, random erasing) do what they say, and selection never falls back to test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.config import TeacherConfig
from components.io import BadInput
from components.stages.teacher import train_teacher
from components.training.classifier import random_erase
from tests.conftest import TINY_TEACHER, store_with_train_votes


def test_random_erase_changes_one_rectangle_per_face_and_nothing_else():
    rng = np.random.default_rng(0)
    faces = np.full((64, 20, 20, 1), 128, np.uint8)
    assert np.array_equal(random_erase(faces, 0.0, rng), faces)
    erased = random_erase(faces, 1.0, rng)
    assert erased.shape == faces.shape and erased.dtype == np.uint8
    assert np.array_equal(faces, np.full_like(faces, 128)), "the input batch must not be changed in place"
    for face in erased:
        ys, xs = np.nonzero(face[:, :, 0] != 128)
        assert len(ys) > 0
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert box <= 0.2 * 400 * 1.5 + 20, "one rectangle of at most ~20% of the face"


@pytest.mark.parametrize("key,value", [("targets", "soft"), ("schedule", "step"), ("label_smoothing", 1.0),
                                       ("erase_p", 1.5), ("warmup", 0.0), ("precision", "fp16")])
def test_teacher_config_rejects_bad_lever_values(key, value):
    with pytest.raises(BadInput, match=f"teacher.{key}"):
        TeacherConfig(**{key: value})


def _store_with_votes(tmp_path, tiny_run, soft: bool, with_valid: bool = True):
    """The tiny run's prepared store, rewritten with (optionally) soft vote distributions on train."""
    rng = np.random.default_rng(1)

    def soft_votes(labels, num_classes):  # 30% of the mass spread at random: a real FER+-like distribution
        onehot = np.eye(num_classes, dtype=np.float32)[labels]
        noise = rng.dirichlet(np.ones(num_classes), len(labels)).astype(np.float32)
        return 0.7 * onehot + 0.3 * noise

    out = tmp_path / ("soft" if soft else "hard") / ("valid" if with_valid else "novalid")
    return store_with_train_votes(tiny_run.prepared, out, soft_votes if soft else None, with_valid)


def _train(prepared, out, **kw):
    cfg = TeacherConfig(prepared=str(prepared), out=str(out), **(dict(TINY_TEACHER, epochs=1) | kw))
    summary = train_teacher(cfg, progress=False)
    return summary, torch.load(out, weights_only=True)["state_dict"]


def test_vote_targets_are_one_hot_labels_without_votes_and_differ_with_them(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    hard_store = _store_with_votes(tmp_path, tiny_run, soft=False)
    soft_store = _store_with_votes(tmp_path, tiny_run, soft=True)
    _, hard = _train(hard_store, tmp_path / "h.pt", targets="hard")
    _, votes_onehot = _train(hard_store, tmp_path / "v1.pt", targets="votes")
    _, votes_soft = _train(soft_store, tmp_path / "v2.pt", targets="votes")
    assert all(torch.allclose(hard[k], votes_onehot[k], atol=1e-6) for k in hard), \
        "one-hot votes must train exactly like hard labels"
    assert not all(torch.allclose(hard[k], votes_soft[k], atol=1e-6) for k in hard), \
        "soft vote targets must change what the teacher learns"


def test_onecycle_warms_up_to_lr_and_anneals(tiny_run, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    summary, _ = _train(tiny_run.prepared, tmp_path / "o.pt", schedule="onecycle", epochs=2, label_smoothing=0.1,
                        erase_p=0.5)
    assert len(summary["history"]) == 2 and np.isfinite(summary["history"][-1]["loss"])
    client = mlflow.MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("test-teacher").experiment_id])[0]
    peaks = [m.value for m in client.get_metric_history(run.info.run_id, "lr_max")]
    last = [m.value for m in client.get_metric_history(run.info.run_id, "lr_last")]
    lr = TINY_TEACHER["lr"]
    assert len(peaks) == len(last) == 2
    assert max(peaks) == pytest.approx(lr, rel=0.05), "the one-cycle peak is the configured lr"
    assert last[0] < max(peaks) and last[-1] < 0.01 * lr, "warm-up, then annealed to ~0 by the end"


def test_teacher_refuses_a_store_without_a_valid_split(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    store = _store_with_votes(tmp_path, tiny_run, soft=False, with_valid=False)
    with pytest.raises(BadInput, match="no valid split"):
        _train(store, tmp_path / "t.pt")
    assert not (tmp_path / "t.pt").exists()


def test_bf16_precision_trains_and_auto_follows_the_hardware(tiny_run, tmp_path, monkeypatch):
    from components.runtime import cpu_has_native_bf16

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    fp32_summary, fp32 = _train(tiny_run.prepared, tmp_path / "f.pt", precision="fp32")
    bf16_summary, bf16 = _train(tiny_run.prepared, tmp_path / "b.pt", precision="bf16")
    auto_summary, auto = _train(tiny_run.prepared, tmp_path / "a.pt", precision="auto")
    assert not fp32_summary["bf16"] and bf16_summary["bf16"] and auto_summary["bf16"] == cpu_has_native_bf16()
    assert np.isfinite(bf16_summary["history"][-1]["loss"])
    assert abs(bf16_summary["history"][-1]["loss"] - fp32_summary["history"][-1]["loss"]) < 0.1, \
        "one epoch in bf16 follows the fp32 loss within bf16's noise"
    assert not all(torch.equal(fp32[k], bf16[k]) for k in fp32), "bf16 must really run the CNN in bf16"
    same = bf16 if cpu_has_native_bf16() else fp32
    assert all(torch.equal(auto[k], same[k]) for k in auto), "auto is bf16 on native-bf16 hardware, else fp32"
