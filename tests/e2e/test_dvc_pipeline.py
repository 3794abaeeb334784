"""A real `dvc repro` of the chain in a scratch copy of the project, with tiny params.

Checks: every stage runs; a second repro does nothing; a change to one stage's params
reruns that stage and what follows only (the feature cache is reused); the local remote
push/pull round-trips; and the embedded default regenerates byte-for-byte what data.dvc
records (so the README's main command finds the data it expects).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvcproj")
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(hr_size=48, scales=[2, 4, 8])
    params["teacher"].update(conv_channels=[8, 12, 16, 16, 24, 24], bimap_dim=8, fc_dims=[32, 16], epochs=2,
                             augment=False)
    params["train_fsr"].update(channels=4, growth=4, blocks=1, d_base_channels=4, iterations=6, checkpoint_every=3,
                               eval_every=3, batch_size=4, cpus_per_worker=0.5)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
               RAY_TMPDIR=tempfile.mkdtemp(prefix="ray", dir="/tmp"),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["dvc", "remote", "add", "-d", "local", str(root.parent / f"{root.name}-remote")], root, env)
    run(["fsrfer", "synth", "--out", "data/raw/synthetic", "--train-per-class", "12", "--test-per-class", "4"], root, env)
    return root, env


def test_repro_runs_every_stage_then_nothing(project):
    root, env = project
    first = run(["dvc", "repro"], root, env)
    for stage in ("prepare", "teacher", "features", "train_fsr", "evaluate"):
        assert f"Running stage '{stage}'" in first
    assert (root / "dvc.lock").is_file() and (root / "models" / "fsr.pt").is_file()
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())
    for split in ("valid", "test"):
        assert set(metrics[split]) == {"bicubic", "fsrfer"}  # the table has both rows
        assert list(metrics[split]["fsrfer"]) == ["x1", "x2", "x4", "x8"]
    second = run(["dvc", "repro"], root, env)
    assert "Running stage" not in second
    assert "Data and pipelines are up to date" in second


def test_gan_param_change_reruns_only_train_fsr_and_evaluate(project):
    root, env = project
    run(["dvc", "repro"], root, env)
    features_manifest = root / "data" / "features" / "manifest.json"
    before = features_manifest.stat().st_mtime_ns
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train_fsr"]["sigma"] = 1.7
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], root, env)
    assert "Running stage 'train_fsr'" in out and "Running stage 'evaluate'" in out
    for stage in ("prepare", "teacher", "features"):
        assert f"Running stage '{stage}'" not in out
    assert features_manifest.stat().st_mtime_ns == before  # the feature cache was reused, not recomputed


def test_local_remote_push_pull(project):
    root, env = project
    run(["dvc", "repro"], root, env)
    run(["dvc", "push"], root, env)
    shutil.rmtree(root / "data" / "prepared")
    shutil.rmtree(root / ".dvc" / "cache")
    run(["dvc", "pull"], root, env)
    assert (root / "data" / "prepared" / "meta.json").is_file()
    status = run(["dvc", "status"], root, env)
    assert "up to date" in status


def test_default_data_regenerates_what_data_dvc_records(tmp_path):
    """`fsrfer synth` must rebuild exactly the folder data.dvc tracks (deterministic generator)."""
    recorded = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    run(["git", "init", "-q"], tmp_path, env)
    run(["dvc", "init", "-q"], tmp_path, env)
    run(["fsrfer", "synth", "--out", "data/raw/synthetic"], tmp_path, env)
    run(["dvc", "add", "-q", "data/raw"], tmp_path, env)
    added = yaml.safe_load((tmp_path / "data" / "raw.dvc").read_text())["outs"][0]
    assert (added["md5"], added["nfiles"], added["size"]) == (recorded["md5"], recorded["nfiles"], recorded["size"])
