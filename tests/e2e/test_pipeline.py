"""The pipeline end to end in one scratch project with tiny params, as users run it: the
`train-fsrfer` Prefect flow, then the `train-gmenet` flow (prefect_test_harness: a real
temporary Prefect server), each DVC stage a task that runs a real `dvc repro --single-item`.

Checks: the FSR-FER flow runs every stage of its chain in dvc.yaml's order and registers a
champion `fsrfer` that predicts on face images of any size, with its Prefect artifact; the
GME-Net flow then reuses every shared stage (DVC skips them) and runs only gme_teacher,
gme_train, compare and register_gmenet, registering a champion `gmenet` that predicts too,
with the compare table (HR, bicubic, FSR-FER and GME-Net columns, and their costs); a plain
`dvc repro` of the whole DAG afterwards finds nothing to do; the local DVC remote
round-trips; a flow rerun skips every stage; a GAN param change reruns only train_fsr and
what follows and registers a gated challenger; the embedded default regenerates
byte-for-byte what data.dvc records (so the README's main command finds its data).
"""

from __future__ import annotations

import json
import os
import shutil

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from tests.e2e.conftest import REPO, make_project, run

FSR_STAGES = ["prepare", "teacher", "features", "tune", "train_fsr", "evaluate", "register"]
GME_STAGES = ["gme_teacher", "gme_train", "compare", "register_gmenet"]


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


@pytest.fixture(scope="module")
def gme_run(flow_project, first_run):
    from flows.train_gmenet import train_gmenet

    root, _ = flow_project
    # the same [ray] workers as the FSR-FER run: a different count would rerun train_fsr too
    return train_gmenet(project_dir=str(root), num_workers=2)


def faces_of_any_size() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"image": [
        png(rng.integers(0, 256, (17, 23), dtype=np.uint8)),  # grayscale, tiny, not square
        png(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)),  # RGB at the HR size
        png(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8)),  # RGBA
        png(rng.integers(0, 256, (200, 160, 3), dtype=np.uint8)),  # larger than HR
        b"not an image",
    ]})


def assert_predicts_on_faces_of_any_size(model_uri: str) -> None:
    out = mlflow.pyfunc.load_model(model_uri).predict(faces_of_any_size())
    classes = [c for c in out.columns if c not in ("label", "error")]
    assert len(classes) == 7
    probs = out[classes].to_numpy()
    np.testing.assert_allclose(probs[:4].sum(1), 1.0, atol=1e-6)
    assert (probs[:4] >= 0).all()
    assert set(out["label"][:4]) <= set(classes)
    assert list(out["error"][:4]) == [""] * 4
    assert np.isnan(probs[4]).all() and "row 4" in out["error"][4] and out["label"][4] == ""


def read_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert artifacts, f"no {key} artifact"
    return artifacts[0].data


def test_flow_runs_every_stage_and_registers_a_champion(flow_project, first_run):
    assert list(first_run["stages"]) == FSR_STAGES  # dvc.yaml's order, one task per stage
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
    assert_predicts_on_faces_of_any_size("models:/fsrfer@champion")


def test_flow_publishes_the_accuracy_table_artifact(flow_project, first_run):
    markdown = read_artifact("fsrfer-accuracy")
    assert "| valid |" in markdown and "x8" in markdown and "fsrfer v1" in markdown


def test_gmenet_flow_reuses_the_shared_stages_and_registers_a_champion(flow_project, gme_run):
    ran = [s for s, r in gme_run["stages"].items() if r == "ran"]
    assert ran == GME_STAGES  # prepare, the CovPoolFER chain and evaluate were up to date
    assert set(FSR_STAGES) - {"register"} <= {s for s, r in gme_run["stages"].items() if r == "skipped"}
    assert gme_run["registered"]["model_name"] == "gmenet" and gme_run["registered"]["version"] == 1
    assert gme_run["promotion"]["promoted"] is True
    client = mlflow.MlflowClient(flow_project[1]["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias("gmenet", "champion")
    assert int(version.version) == 1
    for key in ("valid_acc_x2", "valid_acc_x8", "valid_acc_mean", "param.lambda_at", "promotion_decision"):
        assert key in version.tags, key
    assert int(client.get_model_version_by_alias("fsrfer", "champion").version) == 1  # fsrfer untouched


def test_gmenet_champion_predicts_on_faces_of_any_size(flow_project, gme_run):
    assert_predicts_on_faces_of_any_size("models:/gmenet@champion")


def test_gmenet_flow_publishes_the_compare_table(flow_project, gme_run):
    root, _ = flow_project
    markdown = read_artifact("gmenet-accuracy")
    assert "gmenet v1" in markdown and "| valid |" in markdown and "Cost per face" in markdown
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())
    compared = json.loads((root / "metrics" / "compare.json").read_text())
    for split in ("valid", "test"):
        assert set(metrics[split]) == {"bicubic", "fsrfer_g_always", "fsrfer"}
        assert list(metrics[split]["fsrfer"]) == ["x1", "x2", "x4", "x8"]
        assert set(compared["table"][split]) == {"bicubic", "fsrfer_g_always", "fsrfer", "gmenet"}  # GME-Net's joins
        assert compared["table"][split]["fsrfer"] == metrics[split]["fsrfer"]
    assert set(compared["cost"]) == {"bicubic", "fsrfer", "gmenet"}
    assert compared["cost"]["fsrfer"]["flops"] > compared["cost"]["bicubic"]["flops"]  # G on top of F and C


def test_dvc_repro_of_the_whole_dag_then_finds_nothing_to_do(flow_project, gme_run):
    root, env = flow_project
    out = run(["dvc", "repro"], root, env)
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in out
    locked = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(locked) == set(FSR_STAGES + GME_STAGES)


def test_local_remote_push_pull(flow_project, gme_run):
    root, env = flow_project
    run(["dvc", "push"], root, env)
    shutil.rmtree(root / "data" / "prepared")
    shutil.rmtree(root / ".dvc" / "cache")
    run(["dvc", "pull"], root, env)
    assert (root / "data" / "prepared" / "meta.json").is_file()
    status = run(["dvc", "status"], root, env)
    assert "up to date" in status


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


def test_default_data_regenerates_what_data_dvc_records(tmp_path, synthetic_default):
    """`fsrfer synth` (run by the session's synthetic_default fixture) must rebuild exactly the
    folder data.dvc tracks (deterministic generator)."""
    recorded = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    run(["git", "init", "-q"], tmp_path, env)
    run(["dvc", "init", "-q"], tmp_path, env)
    shutil.copytree(synthetic_default, tmp_path / "data" / "raw" / "synthetic")
    run(["dvc", "add", "-q", "data/raw"], tmp_path, env)
    added = yaml.safe_load((tmp_path / "data" / "raw.dvc").read_text())["outs"][0]
    assert (added["md5"], added["nfiles"], added["size"]) == (recorded["md5"], recorded["nfiles"], recorded["size"])
