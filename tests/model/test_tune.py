"""The Ray Tune search over sigma, r, k, p on the tiny cached features: 4 trials (Optuna TPE,
ASHA), at least one stopped early, nested MLflow runs, the best config written and read by
the train_fsr stage."""

from __future__ import annotations

import json
import os
import tempfile

import mlflow
import pytest

from components.config import FSRConfig, FSRTuneConfig
from components.io import BadInput
from components.stages.tune import tune_fsr
from components.training.fsr import tuned_values, with_tuned_values


@pytest.fixture(scope="module")
def search(tiny_run, tmp_path_factory):
    import ray

    from components.distributed import init_ray

    root = tmp_path_factory.mktemp("tune")
    old = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "RAY_TMPDIR")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2)
    base = FSRConfig(features=str(tiny_run.features), teacher=str(tiny_run.teacher), out=str(root / "fsr.pt"),
                     storage=str(root / "ray"), channels=4, growth=4, blocks=1, d_base_channels=4, dense_residual=True,
                     batch_size=8, lr=1e-3, milestones=(1000,), loss_norm="mean", w_gan=0.1, w_percep=10.0, w_feat=0.01)
    cfg = FSRTuneConfig(enabled=True, out=str(root / "tuned.json"), num_samples=4, iterations=100, report_every=20,
                        grace_period=1, reduction_factor=2, num_workers=1, cpus_per_worker=0.5, driver_cpus=0.5,
                        experiment="test-tune")
    try:
        result = tune_fsr(cfg, base)
    finally:
        ray.shutdown()
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return result, cfg, root


def test_four_trials_run_and_asha_stops_at_least_one_early(search):
    result, cfg, _ = search
    trials = result["trials"]
    assert len(trials) == 4
    assert all(t["error"] is None for t in trials), [t["error"] for t in trials]
    assert any(t["stopped_early"] for t in trials), trials
    assert any(t["iterations"] == cfg.iterations for t in trials)  # the best ones run to the end
    for t in trials:
        assert cfg.sigma[0] <= t["config"]["sigma"] <= cfg.sigma[1] and cfg.p[0] <= t["config"]["p"] <= cfg.p[1]
    best = max((t for t in trials if t["valid_acc_mean"] is not None), key=lambda t: t["valid_acc_mean"])
    assert result["best"] == best["config"] and set(result["best_per_scale"]) == {"valid_acc_x2", "valid_acc_x4",
                                                                                 "valid_acc_x8"}


def test_trials_are_nested_mlflow_runs(search):
    result, _, root = search
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("test-tune")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")
    assert len(children) == 4
    assert all(run.info.status in ("FINISHED", "KILLED") for run in children)
    assert {run.info.status for run in children} == {"FINISHED", "KILLED"}  # ASHA stopped some, not all
    for run in children:
        assert "sigma" in run.data.params and "l_g_percep" in run.data.metrics


def test_best_config_is_what_train_fsr_reads(search):
    result, cfg, _ = search
    written = json.loads(open(cfg.out).read())
    assert written["source"] == "search"
    assert tuned_values(cfg.out) == result["best"]
    trained_with, applied = with_tuned_values(FSRConfig(tuned=cfg.out, sigma=1.5, r=1.0, k=2.0, p=6.0))
    assert applied == result["best"]
    assert (trained_with.sigma, trained_with.r, trained_with.k, trained_with.p) == tuple(
        result["best"][k] for k in ("sigma", "r", "k", "p"))
    assert with_tuned_values(FSRConfig(tuned=""))[0] == FSRConfig(tuned="")


def test_disabled_search_writes_an_empty_result(tmp_path):
    out = tmp_path / "tuned.json"
    result = tune_fsr(FSRTuneConfig(enabled=False, out=str(out)), FSRConfig())
    assert result == {"source": "disabled", "best": {}} and tuned_values(str(out)) == {}
    assert tuned_values(str(tmp_path / "missing.json")) == {}


def test_bad_ranges_and_files_are_refused(tmp_path):
    with pytest.raises(BadInput, match="tune.sigma"):
        FSRTuneConfig(sigma=(1.0, 2.0))
    with pytest.raises(BadInput, match="tune.k"):
        FSRTuneConfig(k=(3.0, 2.0))
    bad = tmp_path / "bad.json"
    bad.write_text('{"best": {"sigma": 1.5, "lr": 1}}')
    with pytest.raises(BadInput, match="unexpected keys"):
        tuned_values(str(bad))
