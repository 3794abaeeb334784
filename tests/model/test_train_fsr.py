"""FSR-FER on Ray Train: a 2-worker run completes and reports; a run killed whole (driver, Ray,
workers) resumes from its checkpoint when restarted, and a run that loses one worker mid-run
has it replaced and resumes; both end at the uninterrupted run's iteration count with its G."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from components.config import FSRConfig
from components.models.rrdb import load_generator
from components.stages.train_fsr import train_fsr
from tests.model.interrupt import (
    cli_env,
    descendants,
    kill_mid_run_and_rerun,
    recorded_checkpoint,
    session_pids,
    write_params,
)

TINY_FSR = dict(channels=4, growth=4, blocks=1, d_base_channels=4, batch_size=8, lr=5e-4, milestones=(10,),
                num_workers=2, cpus_per_worker=0.5, max_failures=1)


def test_two_worker_run_completes_and_reports(tiny_run, ray_session, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    iterations = 12
    cfg = FSRConfig(features=str(tiny_run.features), teacher=str(tiny_run.teacher), out=str(tmp_path / "fsr.pt"),
                    storage=str(tmp_path / "ray"), iterations=iterations, checkpoint_every=6, eval_every=6,
                    experiment="test-fsr", **TINY_FSR)
    summary = train_fsr(cfg)
    assert summary["iterations"] == iterations and summary["resumed_from"] == 0
    # the two replicas (G, D and both optimisers) are equal at every checkpoint: gradients all-reduced
    assert summary["replica_divergence"] == 0.0
    assert set(k for k in summary if k.startswith("valid_acc_x")) == {"valid_acc_x2", "valid_acc_x4", "valid_acc_x8"}
    g = load_generator(tmp_path / "fsr.pt")
    assert not any(p.requires_grad for p in g.parameters())
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("test-fsr").experiment_id])[0]
    for term in ("l_g_gan", "l_g_percep", "l_g_feat", "l_d_real", "l_d_fake", "l_d_div", "valid_acc_x8"):
        assert term in run.data.metrics, term
    history = client.get_metric_history(run.info.run_id, "l_d_div")
    assert len(history) == iterations  # every step, rank 0 only
    # logged at the time of the step (the run's own span), not at timestamp 0 (1970 in the UI)
    assert all(run.info.start_time <= m.timestamp <= run.info.end_time for m in history), \
        (run.info.start_time, [m.timestamp for m in history[:3]], run.info.end_time)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "replica_divergence")] == [0.0, 0.0]
    assert any(a.path == "model" for a in client.list_artifacts(run.info.run_id))
    assert list((tmp_path / "ray").rglob("state.pt")), "no checkpoint was persisted"



RESUME_ITERATIONS = 40
RESUME_EVERY = 10  # a checkpoint report costs about 1.5 s of Ray Train's time here: 4 per run, not 8


def _resume_config(tiny_run, out: Path, storage: Path) -> FSRConfig:
    return FSRConfig(features=str(tiny_run.features), teacher=str(tiny_run.teacher), out=str(out),
                     storage=str(storage), iterations=RESUME_ITERATIONS, checkpoint_every=RESUME_EVERY, eval_every=40,
                     experiment="test-fsr-resume", **TINY_FSR)


def _assert_same_generator(a: Path, b: Path) -> None:
    ga, gb = load_generator(a).state_dict(), load_generator(b).state_dict()
    assert ga.keys() == gb.keys()
    for k in ga:
        assert torch.equal(ga[k], gb[k]), f"{k} differs from the uninterrupted run's"


@pytest.fixture(scope="module")
def straight_run(tiny_run, ray_session, tmp_path_factory) -> tuple[dict, Path]:
    """The uninterrupted run that the interrupted ones must match, in this process on the module's Ray."""
    root = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        summary = train_fsr(_resume_config(tiny_run, root / "straight.pt", root / "ray"))
    assert summary["iterations"] == RESUME_ITERATIONS and summary["resumed_from"] == 0
    return summary, root / "straight.pt"


def test_killed_run_resumes_from_its_checkpoint(tiny_run, straight_run, tmp_path):
    """The driver, Ray and every worker SIGKILLed mid-run; the same command again resumes and
    ends with the uninterrupted run's iteration count and G."""
    env = cli_env(tmp_path)
    params = tmp_path / "killed.yaml"
    write_params(params, "train_fsr", _resume_config(tiny_run, tmp_path / "killed.pt", tmp_path / "ray"))
    summary = kill_mid_run_and_rerun("train_fsr", params, tmp_path / "ray", tmp_path / "killed.pt", env)
    assert summary["resumed_from"] >= RESUME_EVERY, "the restarted run did not resume from the checkpoint"
    assert summary["iterations"] == straight_run[0]["iterations"] == RESUME_ITERATIONS
    _assert_same_generator(tmp_path / "killed.pt", straight_run[1])


def test_a_worker_that_dies_is_replaced_and_training_resumes(tiny_run, straight_run, tmp_path, monkeypatch):
    """One Ray Train worker SIGKILLed mid-run: FailureConfig restarts the worker group from the
    last checkpoint, and the run ends as the uninterrupted one (same iterations, same G).

    The run is in this process on the module's Ray, whose workers share this test's session;
    a watcher thread kills one of them once the controller has recorded a checkpoint."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = _resume_config(tiny_run, tmp_path / "worker.pt", tmp_path / "ray")
    seen: list[int] = []
    nice: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.time() + 300
        while not recorded_checkpoint(tmp_path / "ray") and time.time() < deadline:
            time.sleep(0.1)
        # this process's Ray only: another Ray job started from the same shell shares the session
        seen.extend(descendants(os.getpid(), session_pids(os.getsid(0), b"RayTrainWorker")))
        nice.extend(os.getpriority(os.PRIO_PROCESS, pid) for pid in seen)
        if seen:
            os.kill(seen[-1], signal.SIGKILL)

    watcher = threading.Thread(target=kill_one_worker, daemon=True)
    watcher.start()
    summary = train_fsr(cfg)
    watcher.join(timeout=10)
    assert len(seen) == TINY_FSR["num_workers"], f"expected the run's 2 workers, found {seen}"
    # Ray's default would be nice 15: any other process on the machine would take the workers' cores
    assert nice == [os.getpriority(os.PRIO_PROCESS, 0)] * len(seen), f"workers run at nice {nice}"
    assert summary["resumed_from"] >= RESUME_EVERY, "the replaced worker group did not resume from the checkpoint"
    assert summary["iterations"] == RESUME_ITERATIONS
    _assert_same_generator(tmp_path / "worker.pt", straight_run[1])
    # train_seconds counts the time before the restart too: it goes on from the checkpoint's value
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("test-fsr-resume").experiment_id])[0]
    newest = {m.step: m.value for m in sorted(client.get_metric_history(run.info.run_id, "train_seconds"),
                                              key=lambda m: m.timestamp)}  # per step, the last worker group's
    resumed = summary["resumed_from"]
    assert newest[resumed] < newest[resumed + 1] <= summary["train_seconds"], \
        (newest[resumed], newest[resumed + 1], summary["train_seconds"])
