"""Prefect flow `train-gmenet`: dataset -> GME-Net HR teacher -> LR student (attention-similarity
distillation) -> the table with GME-Net's column beside HR, bicubic and FSR-FER (the `compare`
stage, which reads the FSR-FER chain's evaluate table) -> registry version `challenger` of
`gmenet` -> gated promotion to `champion` (the same rule as fsrfer).

    prefect deployment run train-gmenet/default --watch
    prefect deployment run train-gmenet/default -p iterations=3000 --watch

Parameters map onto params.yaml as in `train-fsrfer` (flows/train_fsrfer.py): `profile`
first, then the named ones, then `overrides` ({"gme_train.lambda_at": 2.0}); DVC runs what
is stale, one task per stage.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import load_profile, project_root, run_name, run_pipeline

TARGET = "register_gmenet"


def gmenet_updates(num_workers: int | None = None, iterations: int | None = None,
                   lambda_at: float | None = None) -> dict[str, Any]:
    """The flow's named parameters as params.yaml 'section.key' updates (None = leave as is)."""
    named = {"ray.num_workers": num_workers,
             "gme_teacher.iterations": iterations, "gme_train.iterations": iterations, "gme_train.lambda_at": lambda_at}
    return {k: v for k, v in named.items() if v is not None}


@flow(name="train-gmenet", flow_run_name=run_name, log_prints=True)
def train_gmenet(profile: str | None = None, num_workers: int | None = None, iterations: int | None = None,
                 lambda_at: float | None = None, overrides: dict[str, Any] | None = None, promote: bool = True,
                 project_dir: str | None = None) -> dict:
    """Run the GME-Net pipeline; returns the stage results, the registered version and the promotion decision.

    profile: profiles/<profile>.yaml applied to params.yaml first (e.g. synthetic, ferplus).
    num_workers: Ray Train workers (ray.num_workers). Shared with train_fsr, which this flow's
      chain includes up to `evaluate`: a count other than the FSR-FER run's retrains G too (the
      GAN's shards and seeds follow the worker count).
    iterations: of both GME-Net stages.
    lambda_at: the attention-similarity weight of the student (gme_train.lambda_at).
    overrides: any other params.yaml values, {"section.key": value}.
    promote: run the gated promotion of the new `gmenet` version at the end.
    project_dir: the project checkout to run in (default: the working directory).
    """
    project = project_root(project_dir)
    updates = load_profile(project, profile) | gmenet_updates(num_workers, iterations, lambda_at) | dict(overrides or {})
    return run_pipeline(project, updates, TARGET, "register_gmenet", "compare", promote, "gmenet-accuracy")


if __name__ == "__main__":
    print(train_gmenet())
