"""The `train-fsrfer` flow when a stage fails, on a real temporary Prefect server
(prefect_test_harness) in a scratch project with tiny params: each stage is a task with
retries for transient failures only (flows/pipeline.py: `_transient`).

Checks: a stage that fails on bad input (`fsrfer prepare` exits 2 on a bad params.yaml value)
is not retried, the flow ends Failed with a message that names the stage and the problem, and
nothing downstream runs. The task runs are read back from the server. (A stage whose process
is killed by a signal is retried: tests/e2e/test_pipeline.py kills `fsrfer prepare` in its
first flow run, which then completes.)
"""

from __future__ import annotations

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


def test_bad_input_fails_the_flow_without_a_retry(project):
    from flows.train_fsrfer import train_fsrfer

    state = train_fsrfer(project_dir=str(project), overrides={"prepare.channels": 2}, return_state=True)

    assert state.is_failed(), state
    problem = "prepare.channels: input should be 1 or 3, got 2"  # the config validation's words, via `fsrfer prepare`
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
