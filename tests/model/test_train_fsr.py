"""FSR-FER on Ray Train: a 2-worker run completes and reports; a killed run resumes from its
checkpoint and ends at the same iteration count as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from components.stages.train_fsr import FSRConfig, load_generator, train_fsr
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
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    path.write_text(yaml.safe_dump({"train_fsr": values}))


def _run_cli(params: Path, env: dict) -> subprocess.Popen:
    summary = params.with_suffix(".summary.json")
    return subprocess.Popen([sys.executable, "-m", "components.cli", "train_fsr", "--params", str(params),
                             "--summary", str(summary)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_killed_run_resumes_from_its_checkpoint(tiny_run, ray_session, tmp_path, monkeypatch):
    common = dict(features=str(tiny_run.features), teacher=str(tiny_run.teacher), iterations=40,
                  checkpoint_every=5, eval_every=40, experiment="test-fsr-resume", **TINY_FSR)
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
               RAY_TMPDIR=short_tmpdir())
    env.pop("RAY_ADDRESS", None)

    killed = FSRConfig(out=str(tmp_path / "killed.pt"), storage=str(tmp_path / "ray_killed"), **common)
    _write_params(tmp_path / "killed.yaml", killed)
    proc = _run_cli(tmp_path / "killed.yaml", env)
    deadline = time.time() + 300
    # a second checkpoint on disk means Ray has finished recording the first (state.pt alone can race it)
    while len(list((tmp_path / "ray_killed").rglob("state.pt"))) < 2:
        assert proc.poll() is None, f"run ended before its first checkpoint:\n{proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray processes and workers, mid-run
    proc.wait()
    assert not (tmp_path / "killed.pt").exists()

    restarted = _run_cli(tmp_path / "killed.yaml", env)
    out, _ = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, out[-3000:]
    summary = json.loads((tmp_path / "killed.summary.json").read_text())
    assert summary["resumed_from"] >= 5, "the restarted run did not resume from the checkpoint"
    assert summary["iterations"] == 40

    # the uninterrupted run of the same config, in this process on the module's Ray
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    summary2 = train_fsr(FSRConfig(out=str(tmp_path / "straight.pt"), storage=str(tmp_path / "ray_straight"), **common))
    assert summary2["iterations"] == summary["iterations"] == 40 and summary2["resumed_from"] == 0
