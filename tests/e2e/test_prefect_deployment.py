"""A deployment run through a real local Prefect server while MLflow is a real `mlflow server`,
as users run them on shared services: the test starts an MLflow server (scripts/mlflow_up.sh:
sqlite backend store, artifacts served by the server) and points MLFLOW_TRACKING_URI at it,
starts the Prefect server, work pool, deployments (prefect.yaml) and a process worker with
scripts/prefect_up.sh in a scratch project, runs `prefect deployment run train-fsrfer/default
--watch`, checks the run Completed, reads the registered version and its artifacts back
through the MLflow server and predicts with them, then stops everything with
scripts/prefect_down.sh and scripts/mlflow_down.sh."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.e2e.conftest import FINAL_STATES, REPO, make_project, quiet_port, read_flow_run, run, stage_process
from tests.model.interrupt import recorded_checkpoint, signal_session

# multiscale_cnn: FSR-FER's frozen model (params.yaml features.teacher), so the FSR-FER flow trains it
FSR_STAGES = ["prepare", "teacher", "multiscale_cnn", "features", "tune", "train_fsr", "evaluate", "register"]


@pytest.fixture(scope="module")
def served_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployproj")
    env = make_project(root)
    shutil.copytree(REPO / "scripts", root / "scripts")
    port, mlflow_port = quiet_port(), quiet_port()
    env |= {"PREFECT_HOME": str(root / ".prefect"), "PREFECT_PORT": str(port),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_HOME": str(root / "mlflow-server"), "MLFLOW_PORT": str(mlflow_port),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
            "FSRFER_UNRESPONSIVE_AFTER_S": "60"}  # the watchdog's wait for a dead run (flows/watchdog.py; default 90)
    try:
        run(["bash", "scripts/mlflow_up.sh"], root, env, timeout=180)
        up = run(["bash", "scripts/prefect_up.sh"], root, env, timeout=300)
        yield root, env, up
    finally:
        run(["bash", "scripts/prefect_down.sh"], root, env, timeout=120)
        run(["bash", "scripts/mlflow_down.sh"], root, env, timeout=60)


def test_deployment_run_completes_through_the_server(served_project):
    root, env, up = served_project
    assert f"http://127.0.0.1:{env['PREFECT_PORT']}" in up  # says where the UI is
    for name in ("train-fsrfer/default", "train-fsrfer/ferplus", "train-gmenet/default", "train-gmenet/ferplus",
                 "promote/promote"):
        assert name in up, f"deployment {name} missing:\n{up}"
    # profile=null keeps the scratch project's tiny params (the deployment's default profile
    # would switch to the full synthetic profile); num_workers=1 as a --param override.
    out = run(["prefect", "deployment", "run", "train-fsrfer/default", "-p", "profile=null", "-p", "num_workers=1",
               "--watch", "--watch-timeout", "900"], root, env, timeout=960)
    assert "finished successfully in 'Completed'" in out, out[-3000:]
    record = (root / "registry" / "fsrfer.json").read_text()
    assert '"version": 1' in record
    assert "num_workers: 1" in (root / "params.yaml").read_text()

    # what the server recorded of that run: its state, parameters, task runs and artifacts
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
    flow_run, task_runs, artifacts = read_flow_run(flow_run_id, api_url=env["PREFECT_API_URL"])
    assert flow_run.state_type.value == "COMPLETED", flow_run.state
    assert re.fullmatch(r"train-fsrfer-default-params-\d{8}-\d{6}", flow_run.name), flow_run.name  # not 2 random words
    assert flow_run.parameters.get("num_workers") == 1 and flow_run.parameters.get("profile") is None, \
        flow_run.parameters
    stage_runs = sorted(name for name in task_runs if name.startswith("dvc-"))
    assert stage_runs == sorted(f"dvc-{stage}" for stage in FSR_STAGES), sorted(task_runs)
    promote = [name for name in task_runs if name.split("-")[0] == "promote"]
    assert len(promote) == 1, sorted(task_runs)
    for name in stage_runs + promote:
        assert task_runs[name].state_type.value == "COMPLETED", (name, task_runs[name].state)
    # dvc.yaml's order: each stage's task started after the one before it ended
    chain = [task_runs[f"dvc-{stage}"] for stage in FSR_STAGES]
    assert all(a.end_time <= b.start_time for a, b in zip(chain, chain[1:])), \
        [(t.name, t.start_time, t.end_time) for t in chain]
    # the log: each stage's output line by line as it ran, without DVC's git advice after every stage
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        logs, page = [], None
        while page is None or len(page) == 200:  # the server's page size limit
            page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])),
                                    limit=200, offset=len(logs))
            logs += [log.message for log in page]
    assert any(m.startswith("teacher | ") and "epoch" in m for m in logs), logs[:50]
    assert not [m for m in logs if "git add" in m or "autostage" in m]
    accuracy = [a for a in artifacts if a.key == "fsrfer-accuracy"]
    assert len(accuracy) == 1 and accuracy[0].type == "markdown", [(a.key, a.type) for a in artifacts]
    assert accuracy[0].data.startswith("# fsrfer v1\n") and "Promotion: **promoted to champion**" in accuracy[0].data, \
        accuracy[0].data


def test_two_runs_submitted_together_queue_and_register_their_own_params(served_project):
    """The work pool runs one flow run at a time (scripts/prefect_up.sh): both runs complete, one
    after the other, and each registered version's params are the ones its run was given."""
    root, env, _ = served_project
    ids = {}
    for sigma in (1.6, 1.8):
        out = run(["prefect", "deployment", "run", "train-fsrfer/default", "-p", "profile=null", "-p", "num_workers=1",
                   "-p", "promote=false", "-p", f'overrides={{"train_fsr.sigma": {sigma}}}'], root, env, timeout=120)
        ids[sigma] = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
    runs = {sigma: read_flow_run(i, api_url=env["PREFECT_API_URL"], timeout=900)[0] for sigma, i in ids.items()}
    for sigma, flow_run in runs.items():
        assert flow_run.state_type.value == "COMPLETED", (sigma, flow_run.state)
    first, second = sorted(runs.values(), key=lambda r: r.start_time)
    assert first.end_time <= second.start_time, [(r.name, r.start_time, r.end_time) for r in (first, second)]
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    versions = {v.version: v for v in client.search_model_versions("name='fsrfer'")}
    by_sigma = {client.get_run(client.get_model_version("fsrfer", v).run_id).data.params["train.sigma"]: int(v)
                for v in versions}
    assert set(by_sigma) >= {"1.6", "1.8"}, by_sigma
    # versions in the order the runs ran, each tagged with its own run's sigma
    order = [s for s, r in sorted(runs.items(), key=lambda kv: kv[1].start_time)]
    assert by_sigma[str(order[0])] < by_sigma[str(order[1])], by_sigma


def test_registered_model_is_read_back_through_the_mlflow_server(served_project, tmp_path):
    root, env, _ = served_project
    uri = env["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version_by_alias("fsrfer", "champion")
    run = client.get_run(version.run_id)
    assert int(version.version) == 1 and "valid_acc_x8" in run.data.metrics
    # the artifacts went through the server (proxied), into the server's artifact root
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    stored = list((root / "mlflow-server" / "artifacts").rglob("MLmodel"))
    assert stored, "no model artifacts under the server's artifact root"
    assert not (root / "mlruns").exists()  # nothing went to a local store beside the server
    source = client.get_model_version_download_uri("fsrfer", version.version)
    assert source.startswith("mlflow-artifacts:"), source
    local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path), tracking_uri=uri)
    model = mlflow.pyfunc.load_model(local)
    face = cv2.imread(str(next((root / "data" / "raw" / "synthetic").rglob("*_aligned.jpg"))))
    small = cv2.resize(face, (16, 16), interpolation=cv2.INTER_AREA)
    frame = pd.DataFrame({"image": [cv2.imencode(".png", img)[1].tobytes() for img in (face, small)]})
    out = model.predict(frame)
    classes = [c for c in out.columns if c not in ("label", "error")]
    np.testing.assert_allclose(out[classes].to_numpy().sum(1), 1.0, atol=1e-6)
    assert list(out["error"]) == ["", ""]


def test_promote_deployment_completes(served_project):
    root, env, _ = served_project
    out = run(["prefect", "deployment", "run", "promote/promote", "--watch", "--watch-timeout", "300"], root, env,
              timeout=360)
    assert "finished successfully in 'Completed'" in out, out[-3000:]


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (by parent pid, from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            pass
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def test_a_worker_killed_mid_stage_crashes_its_run_and_the_rerun_resumes(served_project):
    """The worker, its flow run, DVC, the `fsrfer train_fsr` stage and its Ray processes (the
    worker's session, scripts/prefect_up.sh, and the flow run's) are SIGKILLed once train_fsr's Ray run has recorded
    a checkpoint, as a lost machine would. The run is then marked Crashed by the watchdog (with a
    message saying what happened), prefect_up.sh starts a new worker, and the same run again
    completes: finished stages skipped, train_fsr resumed from its checkpoint."""
    root, env, _ = served_project
    params = ["-p", "profile=null", "-p", "num_workers=1", "-p", "promote=false",
              "-p", 'overrides={"train_fsr.sigma": 1.7}']  # a new sigma: train_fsr on runs again
    storage = root / "data" / "ray_results"
    before = set(storage.iterdir()) if storage.exists() else set()
    worker = int((root / ".prefect" / "worker.pid").read_text())
    assert os.getsid(worker) == worker, "the worker is not the leader of a session of its own"
    out = run(["prefect", "deployment", "run", "train-fsrfer/default", *params], root, env, timeout=120)
    killed_run = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)

    deadline = time.time() + 600
    while stage_process(root, "train_fsr") is None:
        assert time.time() < deadline, "train_fsr never started"
        time.sleep(0.2)
    # the worker's session and the flow run's (Prefect starts a flow run in a session of its own)
    sessions = {os.getsid(pid) for pid in process_tree(worker)}
    assert os.getsid(0) not in sessions and len(sessions) >= 2, sessions
    while True:  # freeze them all, look for a recorded checkpoint of this run, go on if none
        assert time.time() < deadline, "no checkpoint of train_fsr recorded"
        for sid in sessions:
            signal_session(sid, signal.SIGSTOP)
        if storage.exists() and any(recorded_checkpoint(d) for d in set(storage.iterdir()) - before):
            break
        for sid in sessions:
            signal_session(sid, signal.SIGCONT)
        time.sleep(0.2)
    for sid in sessions:
        signal_session(sid, signal.SIGKILL)
    assert not (root / "models" / "fsr.pt").exists()  # DVC removed the old output; no new one half-written

    deadline = time.time() + 300
    while True:
        flow_run = read_flow_run(killed_run, api_url=env["PREFECT_API_URL"], timeout=0)[0]
        if flow_run.state_type.value in FINAL_STATES:
            break
        assert time.time() < deadline, f"the killed run is still {flow_run.state_type.value}"
        time.sleep(5)
    assert flow_run.state_type.value == "CRASHED", flow_run.state
    assert flow_run.state.message.startswith("No heartbeat for 60 s: the worker or its machine stopped mid-run"), \
        flow_run.state.message

    run(["bash", "scripts/prefect_up.sh"], root, env, timeout=300)  # a new worker
    assert int((root / ".prefect" / "worker.pid").read_text()) != worker
    out = run(["prefect", "deployment", "run", "train-fsrfer/default", *params, "--watch", "--watch-timeout", "900"],
              root, env, timeout=960)
    assert "finished successfully in 'Completed'" in out, out[-3000:]
    rerun = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
    _, task_runs, artifacts = read_flow_run(rerun, api_url=env["PREFECT_API_URL"])
    report = next(a.data for a in artifacts if a.key == "fsrfer-accuracy")
    stages = dict(item.split(": ") for item in re.search(r"Stages: (.*)", report).group(1).split(", "))
    assert {stages[s] for s in ("prepare", "teacher", "multiscale_cnn", "features")} == {"skipped"}, stages
    resumed = re.fullmatch(r"resumed from iteration (\d+)", stages["train_fsr"])
    assert resumed and int(resumed.group(1)) % 3 == 0, stages  # tiny params: a checkpoint every 3 iterations
    assert stages["evaluate"] == stages["register"] == "ran", stages
    record = (root / "registry" / "fsrfer.json").read_text()
    version = re.search(r'"version": (\d+)', record).group(1)
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.get_run(client.get_model_version("fsrfer", version).run_id).data.params["train.sigma"] == "1.7"
