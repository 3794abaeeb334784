"""Scratch copies of the project for the end-to-end tests: the real dvc.yaml, flows and
prefect.yaml, tiny params (the shrink-the-config way: same code paths, small numbers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(hr_size=48, scales=[2, 4, 8])
    params["teacher"].update(conv_channels=[8, 12, 16, 16, 24, 24], bimap_dim=8, fc_dims=[32, 16], epochs=2,
                             augment=False)
    params["train_fsr"].update(channels=4, growth=4, blocks=1, d_base_channels=4, iterations=6, checkpoint_every=3,
                               eval_every=3, batch_size=4)
    params["ray"].update(cpus_per_worker=0.5)
    params["gme_net"].update(stem_channels=4, local_channels=[4, 8], global_channels=[4, 8, 8], fusion_dim=8)
    for section in ("gme_teacher", "gme_train"):
        params[section].update(iterations=6, checkpoint_every=3, eval_every=3, batch_size=4)
    return params


def make_project(root: Path, train_per_class: int = 12, test_per_class: int = 4) -> dict:
    """A git + DVC scratch project under `root` with tiny params and the synthetic data; returns its env."""
    for name in ("dvc.yaml", ".dvcignore", "prefect.yaml"):
        shutil.copy(REPO / name, root / name)
    for folder in ("components", "flows", "profiles"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
               RAY_TMPDIR=tempfile.mkdtemp(prefix="ray", dir="/tmp"),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["dvc", "remote", "add", "-d", "local", str(root.parent / f"{root.name}-remote")], root, env)
    run(["fsrfer", "synth", "--out", "data/raw/synthetic", "--train-per-class", str(train_per_class),
         "--test-per-class", str(test_per_class)], root, env)
    return env
