"""The pipeline end to end in one scratch project with tiny params, as users run it: the
`train-fsrfer` Prefect flow, then the `train-gmenet` flow (prefect_test_harness: a real
temporary Prefect server), each DVC stage a task that runs a real `dvc repro --single-item`.

Checks: the FSR-FER flow runs every stage of its chain in dvc.yaml's order and registers a
champion `fsrfer` that predicts on face images of any size, with its Prefect artifact, although
its `fsrfer prepare` process is SIGKILLed as it starts (as the OOM killer or a lost node would):
that task is retried, as the Prefect server records, and nothing else runs twice; the
GME-Net flow then reuses every shared stage (DVC skips them, the multi-scale CNN included: it is
FSR-FER's frozen model) and runs only gme_teacher, gme_train, the image-SR yardstick (isr_fer),
compare and register_gmenet,
registering a champion `gmenet` that predicts too,
with the compare table (HR, bicubic, FSR-FER, GME-Net and yardstick columns, and their costs); a plain
`dvc repro` of the whole DAG afterwards finds nothing to do; the local DVC remote
round-trips; a flow rerun skips every stage; a GAN param change reruns only train_fsr and
what follows and registers a challenger whose promotion is what the rule says for its tags;
the gate rejects a version under a rule it cannot pass and promotes it under one it must;
the embedded default regenerates byte-for-byte what data.dvc records (so the README's main
command finds its data).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from tests.conftest import LINEAGE_TAGS
from tests.e2e.conftest import REPO, KillOnce, make_project, read_flow_run, run

# multiscale_cnn: FSR-FER's frozen model (params.yaml features.teacher), so the FSR-FER flow trains it
FSR_STAGES = ["prepare", "teacher", "multiscale_cnn", "features", "tune", "train_fsr", "evaluate", "register"]
GME_STAGES = ["gme_teacher", "gme_train", "isr_fer", "compare", "register_gmenet"]


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


def aliases(uri: str, name: str) -> dict[str, int | None]:
    """{'champion': version, 'challenger': version} of a registered model now (None: no such alias)."""
    from mlflow.exceptions import MlflowException

    client, out = mlflow.MlflowClient(uri), {}
    for alias in ("champion", "challenger"):
        try:
            out[alias] = int(client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            out[alias] = None
    return out


def version_tags(uri: str, name: str, version: int) -> dict[str, str]:
    return dict(mlflow.MlflowClient(uri).get_model_version(name, str(version)).tags)


def version_and_run(uri: str, name: str, version: int) -> dict[str, str]:
    """A version's tags with its registration run's metrics (as strings) and params: all a reviewer reads."""
    client = mlflow.MlflowClient(uri)
    found = client.get_model_version(name, str(version))
    run = client.get_run(found.run_id).data
    return dict(found.tags) | {k: repr(v) for k, v in run.metrics.items()} | dict(run.params)


def rule_says(new: dict[str, str], old: dict[str, str], min_gain: float, tolerance: float) -> str:
    """The promotion rule (README, components/registry.py), written out again from its words:
    promote when the mean valid accuracy over the LR scales beats the champion's by more than
    min_gain and no scale is worse than the champion's by more than tolerance."""
    scales = new["scales"].split(",")
    a = [float(new[f"valid_acc_{s}"]) for s in scales]
    b = [float(old[f"valid_acc_{s}"]) for s in scales]
    if any(y - x > tolerance for x, y in zip(a, b)):
        return "rejected"
    return "promoted" if sum(a) / len(a) > sum(b) / len(b) + min_gain else "rejected"


# Each state of the scratch project is a fixture of its own, in the order the chain below makes
# them; each records what its tests assert on (results, aliases, artifacts, files) when it is
# made, so no test depends on which tests ran before it.

@pytest.fixture(scope="module")
def first_run(flow_project):
    """The first flow run, its `fsrfer prepare` process SIGKILLed by a watcher thread as soon as it starts."""
    from prefect.client.orchestration import get_client

    from flows.train_fsrfer import train_fsrfer

    root, env = flow_project
    killer = KillOnce(root, "prepare")
    killer.start()
    try:
        state = train_fsrfer(project_dir=str(root), num_workers=2, return_state=True)
    finally:
        killer.stop.set()
        killer.join()
    assert state.is_completed(), state.message
    flow_run, task_runs, _ = read_flow_run(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        prepare_states = [s.name for s in client.read_task_run_states(task_runs["dvc-prepare"].id)]
    return {"result": state.result(), "aliases": aliases(env["MLFLOW_TRACKING_URI"], "fsrfer"),
            "artifact": read_artifact("fsrfer-accuracy"), "killed": killer.killed, "flow_run": flow_run,
            "task_runs": task_runs, "prepare_states": prepare_states,
            "params": (root / "params.yaml").read_text(), "dvc_lock": (root / "dvc.lock").read_text()}


@pytest.fixture(scope="module")
def gme_run(flow_project, first_run):
    from flows.train_gmenet import train_gmenet

    root, env = flow_project
    # the same [ray] workers as the FSR-FER run: a different count would rerun train_fsr too
    result = train_gmenet(project_dir=str(root), num_workers=2)
    uri = env["MLFLOW_TRACKING_URI"]
    return {"result": result, "aliases": aliases(uri, "gmenet"), "fsrfer_aliases": aliases(uri, "fsrfer"),
            "artifact": read_artifact("gmenet-accuracy"),
            "evaluate": json.loads((root / "metrics" / "evaluate.json").read_text()),
            "compare": json.loads((root / "metrics" / "compare.json").read_text())}


@pytest.fixture(scope="module")
def whole_dag_repro(flow_project, gme_run):
    root, env = flow_project
    out = run(["dvc", "repro"], root, env)
    return out, yaml.safe_load((root / "dvc.lock").read_text())["stages"]


@pytest.fixture(scope="module")
def remote_round_trip(flow_project, whole_dag_repro):
    root, env = flow_project
    run(["dvc", "push"], root, env)
    shutil.rmtree(root / "data" / "prepared")
    shutil.rmtree(root / ".dvc" / "cache")
    run(["dvc", "pull"], root, env)
    return (root / "data" / "prepared" / "meta.json").is_file(), run(["dvc", "status"], root, env)


@pytest.fixture(scope="module")
def rerun(flow_project, remote_round_trip):
    from flows.train_fsrfer import train_fsrfer

    root, env = flow_project
    return {"result": train_fsrfer(project_dir=str(root), num_workers=2),
            "aliases": aliases(env["MLFLOW_TRACKING_URI"], "fsrfer")}


@pytest.fixture(scope="module")
def challenger(flow_project, rerun):
    """A GAN param change: train_fsr onwards rerun, v2 registered and gated by params.yaml's rule."""
    from flows.train_fsrfer import train_fsrfer

    root, env = flow_project
    uri = env["MLFLOW_TRACKING_URI"]
    result = train_fsrfer(project_dir=str(root), num_workers=2, overrides={"train_fsr.sigma": 1.8})
    return {"result": result, "aliases": aliases(uri, "fsrfer"), "v1": version_and_run(uri, "fsrfer", 1),
            "v2": version_and_run(uri, "fsrfer", 2), "rule": yaml.safe_load((root / "params.yaml").read_text())["promote"],
            "params": (root / "params.yaml").read_text()}


def promote_with(root, rule: dict) -> dict:
    """The `promote` flow (what `prefect deployment run promote/promote` runs) under params.yaml's promote rule set to `rule`."""
    from flows.pipeline import update_params_file
    from flows.promote import promote

    update_params_file(root / "params.yaml", {f"promote.{k}": v for k, v in rule.items()})
    return promote(model_name="fsrfer", project_dir=str(root))


@pytest.fixture(scope="module")
def forced(flow_project, challenger):
    """The version that is not champion after v2's gate, put to the gate twice more: under a rule no
    model can pass (min_gain 1.0: must be rejected, champion unchanged), then under one every
    version with complete metrics passes (min_gain -1.0: must be promoted, champion moves to it);
    tolerance 1.0 in both, so the min_gain clause alone decides."""
    root, env = flow_project
    uri = env["MLFLOW_TRACKING_URI"]
    other = 1 if challenger["aliases"]["champion"] == 2 else 2
    rejected = promote_with(root, {"version": str(other), "min_gain": 1.0, "tolerance": 1.0})
    after_reject = {"aliases": aliases(uri, "fsrfer"), "tags": version_tags(uri, "fsrfer", other)}
    promoted = promote_with(root, {"min_gain": -1.0})
    after_promote = {"aliases": aliases(uri, "fsrfer"), "tags": version_tags(uri, "fsrfer", other)}
    promote_with(root, {"version": "", "min_gain": 0.0, "tolerance": 0.02})  # params.yaml's rule again
    return other, challenger["aliases"]["champion"], (rejected, after_reject), (promoted, after_promote)


def test_flow_runs_every_stage_and_registers_a_champion(flow_project, first_run):
    result = first_run["result"]
    assert list(result["stages"]) == FSR_STAGES  # dvc.yaml's order, one task per stage
    assert set(result["stages"].values()) == {"ran"}
    assert result["registered"]["version"] == 1
    assert result["promotion"]["promoted"] is True  # the first version with complete metrics
    assert first_run["aliases"] == {"champion": 1, "challenger": 1}
    tags = version_tags(flow_project[1]["MLFLOW_TRACKING_URI"], "fsrfer", 1)
    # identity and lineage only, the flow run among them; the numbers and params on the registration run
    assert {"data_sha256", "dvc_lock_sha256", "pipeline_run", "run_ref", "promotion_decision",
            "promotion_reason"} <= set(tags) <= LINEAGE_TAGS, sorted(tags)
    assert tags["promotion_decision"] == "promoted" and tags["promotion_compared_to"] == "none"
    assert tags["pipeline_run"] == first_run["flow_run"].name
    client = mlflow.MlflowClient(flow_project[1]["MLFLOW_TRACKING_URI"])
    registration = client.get_run(client.get_model_version("fsrfer", "1").run_id).data
    assert {"valid_acc_x2", "valid_acc_x4", "valid_acc_x8", "valid_acc_mean"} <= set(registration.metrics)
    assert {"train.sigma", "g_scales", "scales"} <= set(registration.params)
    # one experiment for the dataset: every stage's run of the flow run in it, found by its pipeline_run tag
    assert {e.name for e in client.search_experiments()} - {"Default"} == {"fsrfer-default"}
    runs = client.search_runs([client.get_experiment_by_name("fsrfer-default").experiment_id],
                              filter_string=f"tags.pipeline_run = '{first_run['flow_run'].name}'")
    assert {r.info.run_name for r in runs} >= {"teacher", "train_fsr", "evaluate", "register-fsrfer"}, \
        sorted(r.info.run_name for r in runs)
    assert all(r.data.tags.get("mlflow.source.git.commit") == r.data.tags.get("git_commit") for r in runs)


def test_a_killed_stage_is_retried_and_nothing_else_runs_twice(first_run):
    assert first_run["killed"] is not None, "the watcher never saw `fsrfer prepare` start"
    assert first_run["flow_run"].state_type.value == "COMPLETED", first_run["flow_run"].state
    task_runs = first_run["task_runs"]
    prepare = task_runs["dvc-prepare"]
    assert prepare.state_type.value == "COMPLETED" and prepare.run_count == 2, (prepare.state, prepare.run_count)
    history = first_run["prepare_states"]
    assert "AwaitingRetry" in history and history[-1] == "Completed", history
    for stage in FSR_STAGES[1:]:
        task_run = task_runs[f"dvc-{stage}"]
        assert task_run.state_type.value == "COMPLETED" and task_run.run_count == 1, (stage, task_run.state)


def test_champion_predicts_on_faces_of_any_size(flow_project, first_run):
    assert_predicts_on_faces_of_any_size(f"models:/fsrfer/{first_run['aliases']['champion']}")


def test_a_run_is_kept_by_name_and_restores_to_the_same_hashes(flow_project, first_run, tmp_path):
    """The version names the flow run's kept checkout (a git ref beside the branch); a new worktree of
    it reproduces, with `dvc repro`, every output of that run byte for byte (the registry record
    names a new MLflow version, by design)."""
    root, env = flow_project
    tags = version_tags(env["MLFLOW_TRACKING_URI"], "fsrfer", 1)
    commit, ref = tags["run_commit"], tags["run_ref"]
    assert first_run["result"]["run_state"] == {"run_ref": ref, "run_commit": commit}
    assert ref.startswith("refs/fsrfer-runs/") and run(["git", "rev-parse", ref], root, env).strip() == commit
    assert run(["git", "show", f"{commit}:params.yaml"], root, env) == first_run["params"]
    assert run(["git", "show", f"{commit}:dvc.lock"], root, env) == first_run["dvc_lock"]
    # beside the branch: the branch still has no commit, the index holds only what `dvc init` staged
    assert subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, env=env).returncode != 0
    staged = run(["git", "diff", "--cached", "--name-only"], root, env).split()
    assert set(staged) <= {".dvc/.gitignore", ".dvc/config", ".dvcignore"}, staged
    restored = tmp_path / "restored"
    run(["git", "worktree", "add", "-q", "--detach", str(restored), commit], root, env)
    repro_env = env | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    run(["dvc", "repro", "register"], restored, repro_env, timeout=900)
    kept, again = (yaml.safe_load(text)["stages"] for text in (first_run["dvc_lock"],
                                                               (restored / "dvc.lock").read_text()))
    assert set(again) == set(kept) == set(FSR_STAGES)
    for stage in FSR_STAGES:
        if stage != "register":
            outs = [{k: o[k] for k in ("path", "md5")} for o in kept[stage].get("outs", [])]
            assert outs == [{k: o[k] for k in ("path", "md5")} for o in again[stage].get("outs", [])], stage


def test_flow_publishes_the_accuracy_table_artifact(flow_project, first_run):
    markdown = first_run["artifact"]
    assert "| valid |" in markdown and "x8" in markdown and "fsrfer v1" in markdown


def test_gmenet_flow_reuses_the_shared_stages_and_registers_a_champion(flow_project, gme_run):
    result = gme_run["result"]
    ran = [s for s, r in result["stages"].items() if r == "ran"]
    # prepare, the CovPoolFER chain and evaluate were up to date; the table's stages end the run
    assert set(ran) == set(GME_STAGES) and ran[-2:] == ["compare", "register_gmenet"], ran
    assert set(FSR_STAGES) - {"register"} <= {s for s, r in result["stages"].items() if r == "skipped"}
    assert result["registered"]["model_name"] == "gmenet" and result["registered"]["version"] == 1
    assert result["promotion"]["promoted"] is True
    assert gme_run["aliases"] == {"champion": 1, "challenger": 1}
    tags = version_tags(flow_project[1]["MLFLOW_TRACKING_URI"], "gmenet", 1)
    assert "promotion_decision" in tags and set(tags) <= LINEAGE_TAGS, sorted(tags)
    numbers = version_and_run(flow_project[1]["MLFLOW_TRACKING_URI"], "gmenet", 1)
    for key in ("valid_acc_x2", "valid_acc_x8", "valid_acc_mean", "train.lambda_at", "cost.flops"):
        assert key in numbers, key
    assert gme_run["fsrfer_aliases"] == {"champion": 1, "challenger": 1}  # fsrfer untouched


def test_gmenet_champion_predicts_on_faces_of_any_size(flow_project, gme_run):
    assert_predicts_on_faces_of_any_size(f"models:/gmenet/{gme_run['aliases']['champion']}")


def test_gmenet_flow_publishes_the_compare_table(flow_project, gme_run):
    markdown = gme_run["artifact"]
    assert "gmenet v1" in markdown and "| valid |" in markdown and "Cost per face" in markdown
    metrics, compared = gme_run["evaluate"], gme_run["compare"]
    for split in ("valid", "test"):
        assert set(metrics[split]) == {"bicubic", "hr_teacher", "fsrfer_g_always", "fsrfer"}
        assert list(metrics[split]["fsrfer"]) == ["x1", "x2", "x4", "x8"]
        assert set(compared["table"][split]) == {"bicubic", "hr_teacher", "fsrfer_g_always", "fsrfer", "gmenet",
                                                 "multiscale_cnn", "isr_fer"}  # GME-Net's and the yardsticks' join
        assert compared["table"][split]["fsrfer"] == metrics[split]["fsrfer"]
        for method, row in compared["table"][split].items():  # the artifact shows the JSON's numbers
            assert f"{100 * row['x8']['accuracy']:.1f}" in markdown, (split, method)
    assert set(compared["cost"]) == {"bicubic", "fsrfer", "gmenet", "multiscale_cnn", "isr_fer"}
    assert compared["cost"]["fsrfer"]["flops"] > compared["cost"]["bicubic"]["flops"]  # G on top of F and C


def test_dvc_repro_of_the_whole_dag_then_finds_nothing_to_do(whole_dag_repro):
    out, locked = whole_dag_repro
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in out
    assert set(locked) == set(FSR_STAGES + GME_STAGES)


def test_local_remote_push_pull(remote_round_trip):
    restored, status = remote_round_trip
    assert restored
    assert "up to date" in status


def test_rerun_skips_every_stage(rerun):
    again = rerun["result"]
    assert set(again["stages"].values()) == {"skipped"}
    assert again["registered"]["version"] == 1  # nothing new registered
    assert again["promotion"]["reason"] == "already champion"
    assert rerun["aliases"] == {"champion": 1, "challenger": 1}


def test_gan_param_reruns_train_fsr_onwards_and_registers_a_gated_challenger(challenger):
    result = challenger["result"]
    assert result["params_changed"] == {"train_fsr.sigma": 1.8}
    assert "sigma: 1.8" in challenger["params"]
    assert [s for s, r in result["stages"].items() if r == "ran"] == ["train_fsr", "evaluate", "register"]
    assert result["registered"]["version"] == 2
    v1, v2 = challenger["v1"], challenger["v2"]
    assert v2["train.sigma"] == "1.8" and v2["promotion_compared_to"] == "1"
    # the decision is the rule's for these numbers, not whichever way the gate went
    want = rule_says(v2, v1, challenger["rule"]["min_gain"], challenger["rule"]["tolerance"])
    assert v2["promotion_decision"] == want, (v2, v1)
    assert challenger["aliases"] == {"champion": 2 if want == "promoted" else 1, "challenger": 2}
    assert v2["promotion_reason"] == result["promotion"]["reason"]
    assert result["promotion"]["promoted"] is (want == "promoted")


def test_a_version_the_rule_rejects_is_not_promoted_and_one_it_accepts_is(forced):
    other, champion, (rejected, after_reject), (promoted, after_promote) = forced
    assert rejected["promoted"] is False and rejected["version"] == other
    assert "does not beat it by more than 1.0" in rejected["reason"]
    assert after_reject["aliases"]["champion"] == champion  # the alias did not move
    assert after_reject["tags"]["promotion_decision"] == "rejected"
    assert promoted["promoted"] is True and promoted["version"] == other
    assert after_promote["aliases"]["champion"] == other
    assert after_promote["tags"]["promotion_decision"] == "promoted"
    assert after_promote["tags"]["promotion_compared_to"] == str(champion)


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
