"""The `train-fsrfer` Prefect flow end to end on tiny synthetic data (prefect_test_harness:
a real temporary Prefect server), in a scratch project: every DVC stage as a task, a
registered `fsrfer` version that loads from the registry and predicts on face images of
any size, the gated promotion, the Prefect artifacts; a rerun skips every stage; a GAN
param change reruns only train_fsr and what follows and registers a new challenger."""

from __future__ import annotations

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from tests.e2e.conftest import make_project

STAGES = ["prepare", "teacher", "features", "tune", "train_fsr", "evaluate", "register"]


@pytest.fixture(scope="module")
def flow_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowproj")
    env = make_project(root)
    mp = pytest.MonkeyPatch()
    for key in ("MLFLOW_TRACKING_URI", "RAY_TMPDIR"):
        mp.setenv(key, env[key])
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])  # earlier tests may have set another one in-process
    with prefect_test_harness(server_startup_timeout=120):
        yield root, env
    mlflow.set_tracking_uri(previous_uri)
    mp.undo()


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def first_run(flow_project):
    from flows.train_fsrfer import train_fsrfer

    root, _ = flow_project
    return train_fsrfer(project_dir=str(root), num_workers=2)


def test_flow_runs_every_stage_and_registers_a_champion(flow_project, first_run):
    assert list(first_run["stages"]) == STAGES  # dvc.yaml's order, one task per stage
    assert set(first_run["stages"].values()) == {"ran"}
    assert first_run["registered"]["version"] == 1
    assert first_run["promotion"]["promoted"] is True  # the first version with complete metrics

    client = mlflow.MlflowClient(flow_project[1]["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias("fsrfer", "champion")
    assert int(version.version) == 1
    assert int(client.get_model_version_by_alias("fsrfer", "challenger").version) == 1
    for key in ("valid_acc_x2", "valid_acc_x4", "valid_acc_x8", "valid_acc_mean", "data_sha256",
                "dvc_lock_sha256", "param.sigma", "promotion_decision", "promotion_reason"):
        assert key in version.tags, key
    assert version.tags["promotion_decision"] == "promoted"


def test_champion_predicts_on_faces_of_any_size(flow_project, first_run):
    model = mlflow.pyfunc.load_model("models:/fsrfer@champion")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"image": [
        png(rng.integers(0, 256, (17, 23), dtype=np.uint8)),  # grayscale, tiny, not square
        png(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)),  # RGB at the HR size
        png(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8)),  # RGBA
        png(rng.integers(0, 256, (200, 160, 3), dtype=np.uint8)),  # larger than HR
        b"not an image",
    ]})
    out = model.predict(frame)
    classes = [c for c in out.columns if c not in ("label", "error")]
    assert len(classes) == 7
    probs = out[classes].to_numpy()
    np.testing.assert_allclose(probs[:4].sum(1), 1.0, atol=1e-6)
    assert (probs[:4] >= 0).all()
    assert set(out["label"][:4]) <= set(classes)
    assert list(out["error"][:4]) == [""] * 4
    assert np.isnan(probs[4]).all() and "row 4" in out["error"][4] and out["label"][4] == ""


def test_flow_publishes_the_accuracy_table_artifact(flow_project, first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fsrfer-accuracy"])))
    assert artifacts, "no fsrfer-accuracy artifact"
    markdown = artifacts[0].data
    assert "| valid |" in markdown and "x8" in markdown and "fsrfer v1" in markdown


def test_rerun_skips_every_stage(flow_project, first_run):
    from flows.train_fsrfer import train_fsrfer

    root, _ = flow_project
    again = train_fsrfer(project_dir=str(root), num_workers=2)
    assert set(again["stages"].values()) == {"skipped"}
    assert again["registered"]["version"] == 1  # nothing new registered
    assert again["promotion"]["reason"] == "already champion"


def test_gan_param_reruns_train_fsr_onwards_and_registers_a_gated_challenger(flow_project, first_run):
    from flows.train_fsrfer import train_fsrfer

    root, _ = flow_project
    result = train_fsrfer(project_dir=str(root), num_workers=2, overrides={"train_fsr.sigma": 1.8})
    assert result["params_changed"] == {"train_fsr.sigma": 1.8}
    assert "sigma: 1.8" in (root / "params.yaml").read_text()
    assert [s for s, r in result["stages"].items() if r == "ran"] == ["train_fsr", "evaluate", "register"]
    assert result["registered"]["version"] == 2
    client = mlflow.MlflowClient(flow_project[1]["MLFLOW_TRACKING_URI"])
    v2 = client.get_model_version("fsrfer", "2")
    assert int(client.get_model_version_by_alias("fsrfer", "challenger").version) == 2
    assert v2.tags["param.sigma"] == "1.8"
    assert v2.tags["promotion_compared_to"] == "1"
    champion = int(client.get_model_version_by_alias("fsrfer", "champion").version)
    assert champion == (2 if v2.tags["promotion_decision"] == "promoted" else 1)
    assert v2.tags["promotion_reason"] == result["promotion"]["reason"]

