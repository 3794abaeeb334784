"""MLflow wiring: where runs go, and the tags every run carries.

Tracking defaults to a sqlite backend under mlruns/ (mlruns/mlflow.db) with artifacts
in mlruns/artifacts; MLFLOW_TRACKING_URI overrides both (e.g. an `mlflow server`).
Every run is tagged with the git commit and the hash of dvc.lock (the data/param state
the run came from), when they exist.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_MLRUNS = Path("mlruns")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, or the project's sqlite store under ./mlruns."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    DEFAULT_MLRUNS.mkdir(exist_ok=True)
    return f"sqlite:///{(DEFAULT_MLRUNS / 'mlflow.db').resolve()}"


PIPELINE_RUN_ENV = "FSRFER_PIPELINE_RUN"  # the name of the flow run a stage runs in (set by flows/pipeline.py)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _dvc_lock_hash() -> str | None:
    lock = Path("dvc.lock")
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:16] if lock.is_file() else None


def get_or_create_experiment(name: str) -> str:
    """Experiment id; a new one keeps its artifacts under mlruns/artifacts for the sqlite default."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if "MLFLOW_TRACKING_URI" not in os.environ:
        location = (DEFAULT_MLRUNS / "artifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


@contextmanager
def mlflow_run(experiment: str, run_name: str, params: dict | None = None, nested: bool = False) -> Iterator:
    """Start a run in `experiment` with params and the lineage tags; yields the active run.

    Tags: the git commit (ours, `git_commit`, and MLflow's standard `mlflow.source.git.commit`), the
    dvc.lock hash, and `pipeline_run`: the flow run this stage ran in (PIPELINE_RUN_ENV, which the
    Prefect flows set), so one search finds every stage's run of a pipeline run in the dataset's experiment:
    `mlflow.search_runs(experiment_names=[experiment], filter_string="tags.pipeline_run = '<name>'")`."""
    import mlflow

    experiment_id = get_or_create_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested) as run:
        commit = _git_commit()
        tags = {"git_commit": commit, "mlflow.source.git.commit": commit, "dvc_lock_sha256": _dvc_lock_hash(),
                "pipeline_run": os.environ.get(PIPELINE_RUN_ENV)}
        mlflow.set_tags({k: v for k, v in tags.items() if v})
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        yield run
