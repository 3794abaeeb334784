"""Scratch copies of the project for the end-to-end tests: the real dvc.yaml, flows and
prefect.yaml, tiny params (the shrink-the-config way: same code paths, small numbers)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from uuid import UUID

import yaml

from tests.conftest import short_tmpdir

REPO = Path(__file__).resolve().parents[2]
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def quiet_port() -> int:
    """A free port in 20000-32767: below the kernel's ephemeral range (32768+) that Ray's own
    components (and every socket bound to port 0) draw from, and above Ray's worker ports
    (10002-19999), so the port is not taken by another process between choosing it and binding it."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32768)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32767")


def read_flow_run(flow_run_id: UUID | str, api_url: str | None = None, timeout: float = 60.0):
    """(flow run, {task run name: task run}, artifacts) as the Prefect server recorded them: the
    server at `api_url`, else the current settings' (e.g. prefect_test_harness's). Task run states
    reach the server as events that its recorder writes a moment later, so this waits (up to
    `timeout` s) until the flow run and every task run are in a final state and the list of task
    runs is the same on two reads in a row."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    flow_run_id = UUID(str(flow_run_id))
    settings = temporary_settings(updates={PREFECT_API_URL: api_url}) if api_url else contextlib.nullcontext()
    with settings, get_client(sync_client=True) as client:
        deadline, previous = time.time() + timeout, None
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            seen = sorted((t.name, t.state_type.value if t.state_type else None, t.run_count) for t in task_runs)
            settled = flow_run.state_type is not None and flow_run.state_type.value in FINAL_STATES and all(
                state in FINAL_STATES for _, state, _ in seen)
            if (settled and seen == previous) or time.time() > deadline:
                break
            previous = seen
            time.sleep(2)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    by_name = {t.name: t for t in task_runs}
    assert len(by_name) == len(task_runs), f"task run names repeat: {sorted(t.name for t in task_runs)}"
    return flow_run, by_name, artifacts


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(hr_size=48, scales=[2, 4, 8])
    for section in ("teacher", "multiscale_cnn"):
        params[section].update(conv_channels=[8, 12, 16, 16, 24, 24], bimap_dim=8, fc_dims=[32, 16], epochs=2,
                               augment=False)
    params["isr_fer"].update(channels=4, blocks=1, patch=16, iterations=6, batch_size=4)
    params["train_fsr"].update(channels=4, growth=4, blocks=1, d_base_channels=4, iterations=6, checkpoint_every=3,
                               eval_every=3, batch_size=4)
    params["ray"].update(cpus_per_worker=0.5)
    params["gme_net"].update(stem_channels=4, local_channels=[4, 8], global_channels=[4, 8, 8], fusion_dim=8)
    for section in ("gme_teacher", "gme_train"):
        params[section].update(iterations=6, checkpoint_every=3, eval_every=3, batch_size=4)
    return params


def make_project(root: Path, train_per_class: int = 12, test_per_class: int = 4) -> dict:
    """A git + DVC scratch project under `root` with tiny params and the synthetic data; returns its env."""
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "prefect.yaml"):
        shutil.copy(REPO / name, root / name)
    for folder in ("components", "flows", "profiles"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
               RAY_TMPDIR=short_tmpdir(),  # removed at the session's end (tests/conftest.py)
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["dvc", "remote", "add", "-d", "local", str(root.parent / f"{root.name}-remote")], root, env)
    run(["fsrfer", "synth", "--out", "data/raw/synthetic", "--train-per-class", str(train_per_class),
         "--test-per-class", str(test_per_class)], root, env)
    return env


def stage_process(root: Path, stage: str) -> int | None:
    """The pid of the `fsrfer <stage>` process DVC started in `root` (its cmdline and cwd), if any."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone meanwhile, or not ours
            continue
        # [python, .../bin/fsrfer, prepare]: not DVC's `bash -c "fsrfer prepare"` wrapper, if any
        if len(argv) >= 2 and Path(argv[-2]).name == "fsrfer" and argv[-1] == stage and cwd == str(root):
            return int(entry.name)
    return None


class KillOnce(threading.Thread):
    """SIGKILLs the first `fsrfer <stage>` process of the project as soon as it appears."""

    def __init__(self, root: Path, stage: str, timeout: float = 300):
        super().__init__(daemon=True)
        self.root, self.stage, self.timeout = root, stage, timeout
        self.killed: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.time() + self.timeout
        while not self.stop.is_set() and time.time() < deadline:
            pid = stage_process(self.root, self.stage)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                self.killed = pid
                return
            time.sleep(0.05)
