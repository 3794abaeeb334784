"""Prefect flow `train-fsrfer`: dataset -> teacher -> feature cache -> (Ray Tune search) -> FSR-FER
GAN -> evaluation -> registry version `challenger` -> gated promotion to `champion`.

Run it through a deployment (prefect.yaml; `bash scripts/prefect_up.sh` starts a local
server and worker):

    prefect deployment run train-fsrfer/default --watch
    prefect deployment run train-fsrfer/default -p num_workers=1 -p fsr_iterations=2000 --watch

or directly: `python -m flows.train_fsrfer` (a temporary local Prefect server).

Every parameter maps onto params.yaml, which the flow updates before running DVC
(`profile` first: profiles/<name>.yaml, then the named parameters, then `overrides`,
e.g. {"train_fsr.sigma": 1.7}). The stages themselves are dvc.yaml's, run by
flows/pipeline.py one task each; DVC skips what is up to date.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import load_profile, project_root, run_name, run_pipeline

TARGET = "register"  # the last DVC stage of this flow: everything it depends on runs first


def fsrfer_updates(dataset: str | None = None, data_root: str | None = None, hr_size: int | None = None,
                   channels: int | None = None, scales: list[int] | None = None, num_workers: int | None = None,
                   fsr_iterations: int | None = None, run_tune: bool | None = None) -> dict[str, Any]:
    """The flow's named parameters as params.yaml 'section.key' updates (None = leave as is)."""
    named = {"prepare.dataset": dataset, "prepare.root": data_root, "prepare.hr_size": hr_size,
             "prepare.channels": channels, "prepare.scales": scales, "ray.num_workers": num_workers,
             "train_fsr.iterations": fsr_iterations, "tune.enabled": run_tune}
    return {k: v for k, v in named.items() if v is not None}


@flow(name="train-fsrfer", flow_run_name=run_name, log_prints=True)
def train_fsrfer(profile: str | None = None, dataset: str | None = None, data_root: str | None = None,
                 hr_size: int | None = None, channels: int | None = None, scales: list[int] | None = None,
                 num_workers: int | None = None, fsr_iterations: int | None = None, run_tune: bool | None = None,
                 overrides: dict[str, Any] | None = None, promote: bool = True,
                 project_dir: str | None = None) -> dict:
    """Run the FSR-FER pipeline; returns the stage results, the registered version and the promotion decision.

    profile: profiles/<profile>.yaml applied to params.yaml first (e.g. synthetic, ferplus).
    dataset, data_root, hr_size, channels, scales: params.yaml prepare.*.
    num_workers: Ray Train workers (ray.num_workers, shared with the GME-Net stages); fsr_iterations: train_fsr.iterations.
    run_tune: run the Ray Tune search over sigma, r, k, p before the final training (tune.enabled).
    overrides: any other params.yaml values, {"section.key": value}.
    promote: run the gated promotion of the new version at the end.
    project_dir: the project checkout to run in (default: the working directory).
    """
    project = project_root(project_dir)
    named = fsrfer_updates(dataset, data_root, hr_size, channels, scales, num_workers, fsr_iterations, run_tune)
    updates = load_profile(project, profile) | named | dict(overrides or {})
    return run_pipeline(project, updates, TARGET, "register", "evaluate", promote, "fsrfer-accuracy")


if __name__ == "__main__":
    print(train_fsrfer())
