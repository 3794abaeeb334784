"""A deployment run through a real local Prefect server, as users run it: the test starts
the server, work pool, deployments (prefect.yaml) and a process worker with
scripts/prefect_up.sh in a scratch project, runs
`prefect deployment run train-fsrfer/default --watch`, checks the run Completed and
registered a model, then stops worker and server with scripts/prefect_down.sh."""

from __future__ import annotations

import shutil
import socket

import mlflow
import pytest

from tests.e2e.conftest import REPO, make_project, run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployproj")
    env = make_project(root)
    shutil.copytree(REPO / "scripts", root / "scripts")
    port = free_port()
    env |= {"PREFECT_HOME": str(root / ".prefect"), "PREFECT_PORT": str(port),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    try:
        up = run(["bash", "scripts/prefect_up.sh"], root, env, timeout=300)
        yield root, env, up
    finally:
        run(["bash", "scripts/prefect_down.sh"], root, env, timeout=120)


def test_deployment_run_completes_through_the_server(served_project):
    root, env, up = served_project
    assert f"http://127.0.0.1:{env['PREFECT_PORT']}" in up  # says where the UI is
    for name in ("train-fsrfer/default", "train-fsrfer/ferplus", "promote/promote"):
        assert name in up, f"deployment {name} missing:\n{up}"
    # profile=null keeps the scratch project's tiny params (the deployment's default profile
    # would switch to the full synthetic profile); num_workers=1 as a --param override.
    out = run(["prefect", "deployment", "run", "train-fsrfer/default", "-p", "profile=null", "-p", "num_workers=1",
               "--watch", "--watch-timeout", "900"], root, env, timeout=960)
    assert "finished successfully in 'Completed'" in out, out[-3000:]
    record = (root / "registry" / "fsrfer.json").read_text()
    assert '"version": 1' in record
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert int(client.get_model_version_by_alias("fsrfer", "champion").version) == 1
    assert "num_workers: 1" in (root / "params.yaml").read_text()


def test_promote_deployment_completes(served_project):
    root, env, _ = served_project
    out = run(["prefect", "deployment", "run", "promote/promote", "--watch", "--watch-timeout", "300"], root, env,
              timeout=360)
    assert "finished successfully in 'Completed'" in out, out[-3000:]
