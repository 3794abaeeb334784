"""FSR-FER on Ray Train: a 2-worker run completes and reports; a run killed whole (driver, Ray,
workers) resumes from its checkpoint when restarted, and a run that loses one worker mid-run
has it replaced and resumes; both end at the uninterrupted run's iteration count with its G."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from components.config import FSRConfig, params_sections
from components.models.rrdb import load_generator
from components.stages.train_fsr import train_fsr
from tests.conftest import short_tmpdir

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
    assert set(k for k in summary if k.startswith("valid_acc_x")) == {"valid_acc_x2", "valid_acc_x4", "valid_acc_x8"}
    g = load_generator(tmp_path / "fsr.pt")
    assert not any(p.requires_grad for p in g.parameters())
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("test-fsr").experiment_id])[0]
    for term in ("l_g_gan", "l_g_percep", "l_g_feat", "l_d_real", "l_d_fake", "l_d_div", "valid_acc_x8"):
        assert term in run.data.metrics, term
    assert len(client.get_metric_history(run.info.run_id, "l_d_div")) == iterations  # every step, rank 0 only
    assert any(a.path == "model" for a in client.list_artifacts(run.info.run_id))
    assert list((tmp_path / "ray").rglob("state.pt")), "no checkpoint was persisted"



def _write_params(path: Path, cfg: FSRConfig) -> None:
    path.write_text(yaml.safe_dump(params_sections("train_fsr", asdict(cfg), FSRConfig)))


def _run_cli(params: Path, env: dict) -> subprocess.Popen:
    summary = params.with_suffix(".summary.json")
    return subprocess.Popen([sys.executable, "-m", "components.cli", "train_fsr", "--params", str(params),
                             "--summary", str(summary)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _session_pids(sid: int, marker: bytes = b"") -> list[int]:
    """Pids of the processes in session `sid` whose command line contains `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            pid = int(entry.name) if entry.name.isdigit() else None
            if pid and os.getsid(pid) == sid and marker in (entry / "cmdline").read_bytes():
                pids.append(pid)
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            pass
    return sorted(pids)


def _signal_session(sid: int, sig: int) -> None:
    """Send `sig` to every process of session `sid`: the CLI's driver, its Ray daemons, and the Ray
    workers (those run in process groups of their own, so killpg alone would miss them)."""
    for pid in _session_pids(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _recorded_checkpoint(storage: Path) -> bool:
    """Whether Ray Train's checkpoint-manager snapshot under `storage` names a checkpoint (what a restart resumes)."""
    for snapshot in storage.rglob("checkpoint_manager_snapshot.json"):
        try:
            if json.loads(snapshot.read_text()).get("latest_checkpoint_result"):
                return True
        except json.JSONDecodeError:  # being written
            pass
    return False


RESUME_ITERATIONS = 40


def _resume_config(tiny_run, out: Path, storage: Path) -> FSRConfig:
    return FSRConfig(features=str(tiny_run.features), teacher=str(tiny_run.teacher), out=str(out),
                     storage=str(storage), iterations=RESUME_ITERATIONS, checkpoint_every=5, eval_every=40,
                     experiment="test-fsr-resume", **TINY_FSR)


def _cli_env(tmp_path: Path) -> dict:
    """The CLI starts its own local Ray (a fresh one, as a restarted job would)."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", RAY_TMPDIR=short_tmpdir())
    env.pop("RAY_ADDRESS", None)
    return env


def _freeze_at_recorded_checkpoint(proc: subprocess.Popen, storage: Path) -> None:
    """Return with the run `proc` drives stopped (SIGSTOP, its whole session) once Ray's
    controller has recorded a checkpoint.

    A state.pt on disk is not enough: workers write checkpoints before the controller
    registers them (a fresh-clone run was killed with two on disk and none recorded). Looking
    while the run is stopped means a kill cannot catch the snapshot half-written.
    """
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None, f"run ended before its first checkpoint:\n{proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint recorded within 300 s"
        _signal_session(proc.pid, signal.SIGSTOP)
        if _recorded_checkpoint(storage):
            return
        _signal_session(proc.pid, signal.SIGCONT)
        time.sleep(0.2)


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
    env = _cli_env(tmp_path)
    params = tmp_path / "killed.yaml"
    _write_params(params, _resume_config(tiny_run, tmp_path / "killed.pt", tmp_path / "ray"))
    proc = _run_cli(params, env)
    _freeze_at_recorded_checkpoint(proc, tmp_path / "ray")
    _signal_session(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed.pt").exists()

    restarted = _run_cli(params, env)
    out, _ = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, out[-3000:]
    summary = json.loads((tmp_path / "killed.summary.json").read_text())
    assert summary["resumed_from"] >= 5, "the restarted run did not resume from the checkpoint"
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

    def kill_one_worker() -> None:
        deadline = time.time() + 300
        while not _recorded_checkpoint(tmp_path / "ray") and time.time() < deadline:
            time.sleep(0.1)
        seen.extend(_session_pids(os.getsid(0), b"RayTrainWorker"))
        if seen:
            os.kill(seen[-1], signal.SIGKILL)

    watcher = threading.Thread(target=kill_one_worker, daemon=True)
    watcher.start()
    summary = train_fsr(cfg)
    watcher.join(timeout=10)
    assert len(seen) == TINY_FSR["num_workers"], f"expected the run's 2 workers, found {seen}"
    assert summary["resumed_from"] >= 5, "the replaced worker group did not resume from the checkpoint"
    assert summary["iterations"] == RESUME_ITERATIONS
    _assert_same_generator(tmp_path / "worker.pt", straight_run[1])
