"""A real `dvc repro` of the chain in a scratch copy of the project, with tiny params.

Checks: every stage runs (the FSR-FER chain and GME-Net's, the compare table with every
column, both registered models); a second repro does nothing; the local remote push/pull
round-trips (a param change rerunning only what follows: tests/e2e/test_flow.py); and the embedded default regenerates byte-for-byte what data.dvc
records (so the README's main command finds the data it expects).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from tests.e2e.conftest import REPO, make_project, run


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvcproj")
    return root, make_project(root)


def test_repro_runs_every_stage_then_nothing(project):
    root, env = project
    first = run(["dvc", "repro"], root, env)
    for stage in ("prepare", "teacher", "features", "tune", "train_fsr", "evaluate", "register", "gme_teacher",
                  "gme_train", "compare", "register_gmenet"):
        assert f"Running stage '{stage}'" in first
    assert (root / "dvc.lock").is_file() and (root / "models" / "fsr.pt").is_file()
    assert json.loads((root / "registry" / "fsrfer.json").read_text())["version"] == 1
    assert json.loads((root / "registry" / "gmenet.json").read_text())["model_name"] == "gmenet"
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())
    compared = json.loads((root / "metrics" / "compare.json").read_text())
    for split in ("valid", "test"):
        assert set(metrics[split]) == {"bicubic", "fsrfer"}  # the table has both rows
        assert list(metrics[split]["fsrfer"]) == ["x1", "x2", "x4", "x8"]
        assert set(compared["table"][split]) == {"bicubic", "fsrfer", "gmenet"}  # GME-Net's column joins them
        assert compared["table"][split]["fsrfer"] == metrics[split]["fsrfer"]
    assert set(compared["cost"]) == {"bicubic", "fsrfer", "gmenet"}
    assert compared["cost"]["fsrfer"]["flops"] > compared["cost"]["bicubic"]["flops"]  # G on top of F and C
    second = run(["dvc", "repro"], root, env)
    assert "Running stage" not in second
    assert "Data and pipelines are up to date" in second


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
