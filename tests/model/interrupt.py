"""Killing a training stage for real: the `fsrfer <stage>` CLI in a session of its own, frozen
(SIGSTOP) once Ray Train's controller has recorded a checkpoint, then SIGKILLed whole (driver,
Ray daemons, workers), as a lost machine would. The resume tests of FSR-FER
(tests/model/test_train_fsr.py) and GME-Net (tests/model/test_gmenet_train.py) share these."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from components.config import params_sections
from tests.conftest import short_tmpdir


def write_params(path: Path, section: str, cfg) -> None:
    """A params file that gives `fsrfer <section>` exactly the config `cfg` (shared sections included)."""
    path.write_text(yaml.safe_dump(params_sections(section, asdict(cfg), type(cfg))))


def cli_env(tmp_path: Path) -> dict:
    """The CLI's environment: MLflow under tmp_path, and a fresh local Ray of its own (as a restarted job would)."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", RAY_TMPDIR=short_tmpdir())
    env.pop("RAY_ADDRESS", None)
    return env


def run_cli(stage: str, params: Path, env: dict) -> subprocess.Popen:
    """`fsrfer <stage> --params params` in a new session; its summary goes to params' name with .summary.json."""
    summary = params.with_suffix(".summary.json")
    return subprocess.Popen([sys.executable, "-m", "components.cli", stage, "--params", str(params),
                             "--summary", str(summary)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def session_pids(sid: int, marker: bytes = b"") -> list[int]:
    """Pids of the processes in session `sid` whose command line contains `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            pid = int(entry.name) if entry.name.isdigit() else None
            if pid and os.getsid(pid) == sid and marker in (entry / "cmdline").read_bytes():
                pids.append(pid)
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            pass
    return sorted(pids)


def descendants(pid: int, pids: list[int]) -> list[int]:
    """Those of `pids` that descend from process `pid` (a local Ray's workers descend from its driver)."""
    def parent(p: int) -> int:
        try:
            return int((Path("/proc") / str(p) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            return 0

    found = []
    for p in pids:
        ancestor = parent(p)
        while ancestor > 1 and ancestor != pid:
            ancestor = parent(ancestor)
        if ancestor == pid:
            found.append(p)
    return found


def signal_session(sid: int, sig: int) -> None:
    """Send `sig` to every process of session `sid`: the CLI's driver, its Ray daemons, and the Ray
    workers (those run in process groups of their own, so killpg alone would miss them)."""
    for pid in session_pids(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def recorded_checkpoint(storage: Path) -> bool:
    """Whether Ray Train's checkpoint-manager snapshot under `storage` names a checkpoint (what a restart resumes)."""
    for snapshot in storage.rglob("checkpoint_manager_snapshot.json"):
        try:
            if json.loads(snapshot.read_text()).get("latest_checkpoint_result"):
                return True
        except json.JSONDecodeError:  # being written
            pass
    return False


def freeze_at_recorded_checkpoint(proc: subprocess.Popen, storage: Path) -> None:
    """Return with the run `proc` drives stopped (SIGSTOP, its whole session) once Ray's
    controller has recorded a checkpoint.

    A state.pt on disk is not enough: workers write checkpoints before the controller
    registers them (a fresh-clone run was killed with two on disk and none recorded). Looking
    while the run is stopped means a kill cannot catch the snapshot half-written.
    """
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None, f"run ended before its first checkpoint:\n{proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint recorded within 300 s"
        signal_session(proc.pid, signal.SIGSTOP)
        if recorded_checkpoint(storage):
            return
        signal_session(proc.pid, signal.SIGCONT)
        time.sleep(0.2)



def kill_mid_run_and_rerun(stage: str, params: Path, storage: Path, out: Path, env: dict) -> dict:
    """`fsrfer <stage>` from `params`, its whole session SIGKILLed once Ray recorded a checkpoint
    (no output written yet), then the same command again to the end; returns the rerun's summary."""
    proc = run_cli(stage, params, env)
    freeze_at_recorded_checkpoint(proc, storage)
    signal_session(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    restarted = run_cli(stage, params, env)
    output, _ = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, output[-3000:]
    return json.loads(params.with_suffix(".summary.json").read_text())
