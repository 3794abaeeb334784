"""The `train-fsrfer` flow when a stage fails, on a real temporary Prefect server
(prefect_test_harness) in a scratch project with tiny params: each stage is a task with
retries for transient failures only (flows/pipeline.py: `_transient`).

Checks: a stage that fails on bad input (`fsrfer prepare` exits 2 on a bad params.yaml value)
is not retried, the flow ends Failed with a message that names the stage and the problem, and
nothing downstream runs; a stage whose process is killed by a signal (SIGKILL from a watcher
thread here, as the OOM killer or a lost node would) is retried, and the flow then completes
and registers the model. The task runs are read back from the server.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import pytest
from prefect.testing.utilities import prefect_test_harness

from tests.e2e.conftest import make_project, read_flow_run


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def project(prefect_server, tmp_path, monkeypatch):
    """A scratch project of this test's own (its own MLflow store, Ray temp dir, DVC remote)."""
    root = tmp_path / "proj"
    root.mkdir()
    env = make_project(root)
    for key in ("MLFLOW_TRACKING_URI", "RAY_TMPDIR"):
        monkeypatch.setenv(key, env[key])
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])  # earlier tests may have set another one in-process
    yield root
    mlflow.set_tracking_uri(previous_uri)


def stage_process(root: Path, stage: str) -> int | None:
    """The pid of the `fsrfer <stage>` process DVC started in `root` (its cmdline and cwd), if any."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone meanwhile, or not ours
            continue
        # [python, .../bin/fsrfer, prepare]: not DVC's `bash -c "fsrfer prepare"` wrapper, if any
        if len(argv) >= 2 and Path(argv[-2]).name == "fsrfer" and argv[-1] == stage and cwd == str(root):
            return int(entry.name)
    return None


class KillOnce(threading.Thread):
    """SIGKILLs the first `fsrfer <stage>` process of the project as soon as it appears."""

    def __init__(self, root: Path, stage: str, timeout: float = 300):
        super().__init__(daemon=True)
        self.root, self.stage, self.timeout = root, stage, timeout
        self.killed: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.time() + self.timeout
        while not self.stop.is_set() and time.time() < deadline:
            pid = stage_process(self.root, self.stage)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                self.killed = pid
                return
            time.sleep(0.05)


def test_bad_input_fails_the_flow_without_a_retry(project):
    from flows.train_fsrfer import train_fsrfer

    state = train_fsrfer(project_dir=str(project), overrides={"prepare.channels": 2}, return_state=True)

    assert state.is_failed(), state
    problem = "prepare.channels: must be 1 or 3, got 2"  # components/config.py's words, via `fsrfer prepare`
    assert "dvc stage 'prepare' failed with exit code 2" in state.message, state.message
    assert f"fsrfer prepare: error: {problem}" in state.message, state.message

    flow_run, task_runs, artifacts = read_flow_run(state.state_details.flow_run_id)
    assert flow_run.state_type.value == "FAILED", flow_run.state
    prepare = task_runs["dvc-prepare"]
    assert prepare.state_type.value == "FAILED" and problem in prepare.state.message, prepare.state
    assert prepare.run_count == 1, f"dvc-prepare ran {prepare.run_count} times: bad input was retried"
    # nothing after prepare ran: only the params.yaml update and the failed stage are task runs
    assert sorted(name.split("-")[0] for name in task_runs) == ["dvc", "params"], sorted(task_runs)
    assert [a.key for a in artifacts if a.key] == []  # no report (unkeyed ones are result records)
    assert not (project / "data" / "prepared").exists() and not (project / "registry").exists()
    assert not (project / "dvc.lock").exists()


def test_killed_stage_is_retried_and_the_flow_completes(project):
    from flows.train_fsrfer import train_fsrfer

    killer = KillOnce(project, "prepare")
    killer.start()
    try:
        state = train_fsrfer(project_dir=str(project), num_workers=1, return_state=True)
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed is not None, "the watcher never saw `fsrfer prepare` start"

    assert state.is_completed(), state.message
    result = state.result()
    assert result["stages"]["prepare"] == "ran" and result["registered"]["version"] == 1, result

    flow_run, task_runs, _ = read_flow_run(state.state_details.flow_run_id)
    assert flow_run.state_type.value == "COMPLETED", flow_run.state
    prepare = task_runs["dvc-prepare"]
    assert prepare.state_type.value == "COMPLETED" and prepare.run_count == 2, (prepare.state, prepare.run_count)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        history = [s.name for s in client.read_task_run_states(prepare.id)]
    assert "AwaitingRetry" in history and history[-1] == "Completed", history
    for stage in ("teacher", "features", "tune", "train_fsr", "evaluate", "register"):
        task_run = task_runs[f"dvc-{stage}"]
        assert task_run.state_type.value == "COMPLETED" and task_run.run_count == 1, (stage, task_run.state)
    assert (project / "registry" / "fsrfer.json").is_file()
