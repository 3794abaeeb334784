"""The training and the Tune search on a real 2-node Ray cluster on loopback, joined through
RAY_ADDRESS as on any cluster: the test starts a head (`ray start --head`) and a second node
that joins it, each with one CPU and its own temp dir and ports, runs `fsrfer train_fsr`
(2 workers, so one per node) and `fsrfer tune` as subprocesses with RAY_ADDRESS set, checks
from the reported node ids that the workers ran on both nodes, then stops both nodes by
their process ids.

Feature data reaches the other node by a shared storage path (here both nodes see the same
disk; on a cluster a volume every pod mounts at the same path): the cache is memory-mapped
and each worker reads random rows of its shard (infra/README.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from components.config import FSRConfig, params_sections
from tests.conftest import short_tmpdir
from tests.e2e.conftest import quiet_port

TINY_FSR = dict(channels=4, growth=4, blocks=1, d_base_channels=4, dense_residual=True, batch_size=8, lr=1e-3,
                milestones=[1000], loss_norm="mean", w_gan=0.1, w_percep=10.0, w_feat=0.01, iterations=20, checkpoint_every=10,
                eval_every=10, num_workers=2, cpus_per_worker=1.0)


def _ray_env() -> dict:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    return env


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own process group (so the node is stopped by its pid)."""
    return subprocess.Popen(["ray", "start", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--block", *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=_ray_env(), start_new_session=True)


def _stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM the node's process group, SIGKILL what is left after 10 s (Ray drains for up to 30 s)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the blocking `ray start` exited: end its children too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


def _alive_nodes(address: str) -> set[str]:
    code = "import json, ray; ray.init(address=%r); print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))"
    out = subprocess.run(["python", "-c", code % address], capture_output=True, text=True, env=_ray_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("ray_cluster")
    port = quiet_port()
    address = f"127.0.0.1:{port}"
    head = _start_node(["--head", "--port", str(port), "--temp-dir", tempfile.mkdtemp(prefix="rh", dir="/tmp"),
                        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                        "--dashboard-port", str(quiet_port()), "--ray-client-server-port", str(quiet_port())],
                       logs / "head.log")
    nodes = [head]
    try:
        deadline = time.time() + 120
        while "will now block" not in (logs / "head.log").read_text():
            assert head.poll() is None and time.time() < deadline, (logs / "head.log").read_text()[-3000:]
            time.sleep(1)
        nodes.append(_start_node(["--address", address, "--temp-dir", tempfile.mkdtemp(prefix="rw", dir="/tmp")],
                                 logs / "worker.log"))
        while len(_alive_nodes(address)) < 2:
            assert nodes[1].poll() is None and time.time() < deadline, (logs / "worker.log").read_text()[-3000:]
            time.sleep(2)
        yield address, _alive_nodes(address)
    finally:
        for proc in reversed(nodes):
            _stop_node(proc)


def _run_stage(stage: str, params: dict, root: Path, address: str) -> dict:
    """`fsrfer <stage> --params ...` as a cluster job would run it, joined through RAY_ADDRESS."""
    (root / f"{stage}.yaml").write_text(yaml.safe_dump(params))
    env = _ray_env() | {"RAY_ADDRESS": address, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    summary = root / f"{stage}-summary.json"
    out = subprocess.run(["fsrfer", stage, "--params", str(root / f"{stage}.yaml"), "--summary", str(summary)],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"fsrfer {stage} failed:\n{out.stdout[-3000:]}\n{out.stderr[-4000:]}"
    return json.loads(summary.read_text())


def _fsr_params(tiny_run, root: Path) -> dict:
    return TINY_FSR | {"features": str(tiny_run.features), "teacher": str(tiny_run.teacher),
                       "out": str(root / "fsr.pt"), "storage": str(root / "ray")}


def test_training_runs_one_worker_on_each_node(cluster, tiny_run, tmp_path):
    address, node_ids = cluster
    summary = _run_stage("train_fsr", params_sections("train_fsr", _fsr_params(tiny_run, tmp_path), FSRConfig),
                         tmp_path, address)
    workers = summary["worker_nodes"].split(",")
    assert len(workers) == 2 and set(workers) == node_ids, (workers, node_ids)
    assert summary["iterations"] == TINY_FSR["iterations"] and Path(summary["out"]).is_file()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("fsrfer-default").experiment_id],
                             "attributes.run_name = 'train_fsr'")[0]
    assert run.data.tags["worker_nodes"] == summary["worker_nodes"]
    assert "valid_acc_x8" in run.data.metrics and "l_d_div" in run.data.metrics


def test_tune_search_runs_its_trials_on_the_cluster(cluster, tiny_run, tmp_path):
    address, node_ids = cluster
    tune = dict(enabled=True, out=str(tmp_path / "tuned.json"), num_samples=2, iterations=20, report_every=10,
                grace_period=1, reduction_factor=2, num_workers=2, cpus_per_worker=0.25, driver_cpus=0.5)
    params = {"tune": tune} | params_sections("train_fsr", _fsr_params(tiny_run, tmp_path), FSRConfig)
    summary = _run_stage("tune", params, tmp_path, address)
    assert len(summary["trials"]) == 2 and all(t["error"] is None for t in summary["trials"]), summary["trials"]
    for trial in summary["trials"]:
        assert set(trial["worker_nodes"].split(",")) <= node_ids
    assert set(summary["best"]) == {"sigma", "r", "k", "p"}
    assert json.loads((tmp_path / "tuned.json").read_text())["best"] == summary["best"]


def test_a_local_ray_beside_another_finds_itself(cluster, tmp_path):
    """A stage's local Ray with another Ray on the machine (here the module's cluster; in life a
    second stage or a test suite): its workers' state-API calls, which Ray Train's placement-group
    cleaner makes, must reach their own Ray. Without the address file in a temp folder of its own,
    Ray looked for running GCS processes, found two and failed ("Found multiple active Ray
    instances"), and a Tune search whose stopped trials were never cleaned up stalled."""
    code = (
        "import ray\n"
        "from components.distributed import init_ray\n"
        "init_ray(num_cpus=1)\n"
        "@ray.remote\n"
        "def state():\n"
        "    from ray.util.state import list_nodes\n"
        "    return [n.node_id for n in list_nodes()]\n"
        "print(ray.get_runtime_context().gcs_address, ray.get_runtime_context().get_node_id(), ray.get(state.remote()))\n")
    out = subprocess.run(["python", "-c", code], capture_output=True, text=True, timeout=300,
                         env=_ray_env() | {"RAY_TMPDIR": short_tmpdir()})
    assert out.returncode == 0, out.stderr[-3000:]
    gcs, node, seen = out.stdout.strip().splitlines()[-1].split(" ", 2)
    assert gcs != cluster[0]  # a Ray of its own, not the one already running
    assert seen == str([node])  # the worker's state API saw this Ray's one node, not the cluster's two
