"""Stage `tune`: a Ray Tune search over FSR-FER's re-weighting (sigma, r) and WGAN-div (k, p).

Opt-in (`tune.enabled`): the search is expensive. Disabled, the stage only writes an
empty result, and `train_fsr` trains with its own params.yaml values; enabled, `train_fsr`
takes sigma, r, k and p from the best trial. Either way the result file (`out`) is a DVC
dependency of `train_fsr`, so `dvc repro` after a search retrains with the values found.

Each trial is the Ray Train V2 pattern: Tune runs a driver function that builds a
TorchTrainer running the same worker loop as `train_fsr` (components/training/fsr.py),
whose rank-0 reports reach Tune through TuneReportCallback (components/distributed.py:
run_ray_training, run_tune_search).
Search: Optuna's TPE over the ranges in params.yaml (uniform), seeded. Scheduler: ASHA on
the reports (one per `report_every` iterations), stopping weak trials after
`grace_period` reports. Objective: the mean validation accuracy of C(G(F_lr)) over the
LR scales (`valid_acc_mean`, maximised); the per-scale accuracies are reported too.

MLflow: a parent run for the search; every trial is a nested run (tag mlflow.parentRunId)
with its config and its per-iteration losses and accuracies (logged by the worker loop's
rank 0), ended as FINISHED, KILLED when ASHA stopped it early, or FAILED.

The other FSR settings of the trials (network sizes, loss weights, lr, batch) come from
`train_fsr`'s params, with the iteration count and the reporting interval of this stage.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from pathlib import Path

from components.config import SEARCHED, FSRConfig, FSRTuneConfig
from components.distributed import run_ray_training, run_tune_search
from components.io import atomic_write_text
from components.tracking import mlflow_run, tracking_uri
from components.training.fsr import check_fsr_inputs, fsr_inputs, fsr_train_loop
from components.training.loop import run_hash

OBJECTIVE = "valid_acc_mean"
# What a trial sets itself (trial_fsr_config) and what names files or runs; every other train_fsr
# setting is inherited, so it is a DVC param of this stage (dvc.yaml lists TRIAL_INHERITS).
TRIAL_OWN = SEARCHED + ("iterations", "checkpoint_every", "eval_every", "num_workers", "cpus_per_worker", "seed",
                        "max_failures", "storage", "features", "teacher", "out", "tuned", "run_name", "experiment")
TRIAL_INHERITS = tuple(f.name for f in fields(FSRConfig) if f.name not in TRIAL_OWN)


def trial_fsr_config(base: FSRConfig, cfg: FSRTuneConfig, values: dict) -> FSRConfig:
    """The FSRConfig of one trial: `base` with the searched values, this stage's schedule and resources."""
    return replace(base, **{k: float(values[k]) for k in SEARCHED}, iterations=cfg.iterations,
                   checkpoint_every=cfg.report_every, eval_every=cfg.report_every, num_workers=cfg.num_workers,
                   cpus_per_worker=cfg.cpus_per_worker, seed=cfg.seed)


def fsr_trial(config: dict) -> None:
    """One Tune trial (runs as a Ray task): a nested MLflow run and a TorchTrainer of the FSR loop."""
    import mlflow
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    fsr = FSRConfig(**config["fsr"])
    client = mlflow.MlflowClient(config["tracking_uri"])
    trial = ray.tune.get_context().get_trial_id()
    run = client.create_run(config["experiment_id"], run_name=f"trial-{trial}",
                            tags={"mlflow.parentRunId": config["parent_run_id"], "tune_trial_id": trial})
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)[:500]) for k, v in asdict(fsr).items()])
    loop_config = {"fsr": asdict(fsr), "tracking_uri": config["tracking_uri"], "run_id": run.info.run_id}
    gpus = config["gpus_per_worker"]
    run_ray_training(fsr_train_loop, loop_config, num_workers=fsr.num_workers, name=f"{config['ray_name']}-{trial}",
                     storage_path=fsr.storage, max_failures=fsr.max_failures, cpus_per_worker=fsr.cpus_per_worker,
                     use_gpu=gpus > 0, gpus_per_worker=gpus, callbacks=[TuneReportCallback()])


def tune_fsr(cfg: FSRTuneConfig, base: FSRConfig) -> dict:
    """Run the search (or, disabled, record that there was none); writes `cfg.out`; returns it."""
    if not cfg.enabled:
        result = {"source": "disabled", "best": {}}
        atomic_write_text(cfg.out, json.dumps(result, indent=2) + "\n")
        return result

    check_fsr_inputs(base)
    import mlflow
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch


    paths = {"features": str(Path(base.features).resolve()), "teacher": str(Path(base.teacher).resolve()),
             "storage": str(Path(base.storage).resolve())}
    base = replace(base, **paths)
    ray_name = f"{cfg.run_name}-{run_hash(base, fsr_inputs(base))}"
    with mlflow_run(cfg.experiment, cfg.run_name, params=asdict(cfg)) as parent:
        fixed = {"fsr": asdict(trial_fsr_config(base, cfg, {k: getattr(base, k) for k in SEARCHED})),
                 "tracking_uri": tracking_uri(), "experiment_id": parent.info.experiment_id,
                 "parent_run_id": parent.info.run_id, "gpus_per_worker": cfg.gpus_per_worker, "ray_name": ray_name}
        space = {k: tune.uniform(*getattr(cfg, k)) for k in SEARCHED}

        def driver(config: dict) -> None:
            values = {k: config[k] for k in SEARCHED}
            fsr = asdict(trial_fsr_config(FSRConfig(**config["fsr"]), cfg, values))
            fsr_trial(config | {"fsr": fsr})

        results = run_tune_search(
            driver, param_space=fixed | space, metric=OBJECTIVE, mode="max", num_samples=cfg.num_samples,
            max_concurrent_trials=cfg.max_concurrent_trials, driver_cpus=cfg.driver_cpus,
            search_alg=OptunaSearch(seed=cfg.seed),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=cfg.iterations // cfg.report_every,
                                    grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor),
            name=ray_name, storage_path=paths["storage"])
        trials = _summarise(results, cfg)
        _close_trial_runs(parent.info.run_id, parent.info.experiment_id, trials)
        finished = [t for t in trials if t.get(OBJECTIVE) is not None]
        if not finished:
            raise RuntimeError(f"tune: no trial reported {OBJECTIVE}; errors: {[t.get('error') for t in trials]}")
        best = max(finished, key=lambda t: t[OBJECTIVE])
        mlflow.log_metrics({f"best_{OBJECTIVE}": best[OBJECTIVE], "trials": len(trials),
                            "stopped_early": sum(t["stopped_early"] for t in trials)})
        mlflow.log_params({f"best_{k}": round(v, 6) for k, v in best["config"].items()})
        result = {"source": "search", "best": best["config"], OBJECTIVE: best[OBJECTIVE],
                  "best_per_scale": best["per_scale"], "parent_run_id": parent.info.run_id, "trials": trials}
        atomic_write_text(cfg.out, json.dumps(result, indent=2) + "\n")
        mlflow.log_artifact(cfg.out)
    return result


def _summarise(results, cfg: FSRTuneConfig) -> list[dict]:
    """One row per trial: config, last objective, per-scale accuracies, reports made, stopped early or not."""
    max_reports = cfg.iterations // cfg.report_every
    trials = []
    for result in results:
        metrics = result.metrics or {}
        history = result.metrics_dataframe
        reports = int(history["training_iteration"].max()) if history is not None and len(history) else 0
        trials.append({
            "trial_id": metrics.get("trial_id"),
            "config": {k: float(result.config[k]) for k in SEARCHED},
            OBJECTIVE: metrics.get(OBJECTIVE),
            "per_scale": {k: v for k, v in metrics.items() if k.startswith("valid_acc_x")},
            "iterations": int(metrics.get("iteration", 0)),
            "reports": reports,
            "worker_nodes": metrics.get("worker_nodes", ""),
            "stopped_early": result.error is None and reports < max_reports,
            "error": str(result.error) if result.error is not None else None,
        })
    return trials


def _close_trial_runs(parent_run_id: str, experiment_id: str, trials: list[dict]) -> None:
    """End every nested trial run: FINISHED (ran to the end), KILLED (ASHA stopped it) or FAILED.

    Done here because Tune ends a trial's driver as soon as its last result arrives (ASHA
    stops trials at max_t too), before the driver could end its own run."""
    import mlflow


    status = {t["trial_id"]: "FAILED" if t["error"] else "KILLED" if t["stopped_early"] else "FINISHED"
              for t in trials}
    client = mlflow.MlflowClient(tracking_uri())
    for run in client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"):
        client.set_terminated(run.info.run_id, status.get(run.data.tags.get("tune_trial_id"), "KILLED"))

