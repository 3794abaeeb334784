"""One training skeleton for both Ray stages (FSR-FER's GAN and GME-Net's teacher/student).

    restore -> for each iteration: schedule, step -> evaluate / log / checkpoint

A `TrainingTask` holds what differs: its networks and optimisers (`state_dict` /
`load_state_dict`), the learning rate of an iteration (`learning_rate`), one optimisation
step (`step`: the GAN's D-then-G step, or GME-Net's CE + distillation step, as BasicSR keeps
`optimize_parameters` apart from the loop) and the rank-0 validation (`evaluate`).
`run_task` is the rest, written once. At every checkpoint the workers compare a fingerprint of
their state (networks and optimisers) with rank 0's: `replica_divergence` in the metrics is
0.0 when data parallelism keeps the replicas equal, as it must. Each iteration's batch
comes from an RNG seeded by (seed, rank, iteration), so a run resumed from a checkpoint
takes exactly the steps an uninterrupted one takes; a checkpoint also keeps every worker's torch RNG state.

`run_training_stage` is the stage side, also written once: the MLflow run, the Ray Train run
(named by a hash of the config and its input files, so rerunning the same config resumes
its last checkpoint), and the final state. The loops do not know whether they run under
Ray (components/distributed.py adapts them). runner="local" runs the same stage in this
process with one worker and no Ray (`run_local_training`): what the benchmarks and the
behaviour tests use to train a stage's model without a Ray start-up.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from components.distributed import WorkerContext, final_state, log_step_metrics, run_local_training, run_ray_training
from components.io import BadInput, file_sha256
from components.tracking import mlflow_run, tracking_uri


class TrainingTask(Protocol):
    iterations: int
    eval_every: int
    checkpoint_every: int
    optimizers: list[torch.optim.Optimizer]

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def learning_rate(self, iteration: int) -> float: ...

    def step(self, iteration: int, rng: np.random.Generator) -> dict[str, float]: ...

    def evaluate(self) -> dict[str, float]: ...


def run_task(task: TrainingTask, ctx: WorkerContext, seed: int, config: dict) -> None:
    """Run `task` from its last checkpoint (if any) to its last iteration on this worker.

    config: the loop config; with `run_id` and `tracking_uri`, rank 0 logs every
    iteration's metrics to that MLflow run."""
    import mlflow

    start, before = 0, 0.0  # before: the training seconds of the sessions this one resumes
    state = ctx.restore_state()
    if state is not None:
        task.load_state_dict(state)
        torch.set_rng_state(state["torch_rngs"][ctx.rank])  # each worker its own (dropout masks differ per rank)
        start, before = state["iteration"], float(state.get("train_seconds", 0.0))
    client = mlflow.MlflowClient(config["tracking_uri"]) if ctx.is_main and config.get("run_id") else None
    clock = time.perf_counter()
    progress_every = max(1, task.iterations // PROGRESS_LINES)

    for it in range(start, task.iterations):
        rng = np.random.default_rng([seed, ctx.rank, it])
        lr = task.learning_rate(it)
        for opt in task.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        logs = task.step(it, rng)

        done = it + 1
        session = time.perf_counter() - clock
        metrics = {"iteration": done, "resumed_from": start, "train_seconds": before + session, **logs}
        if ctx.is_main and (done % task.eval_every == 0 or done == task.iterations):
            metrics.update(task.evaluate())
        checkpointing = done % task.checkpoint_every == 0 or done == task.iterations
        if checkpointing:  # every worker: its replica against rank 0's (a data-parallel bug shows here)
            metrics["replica_divergence"] = ctx.replica_divergence(task.state_dict())
            if ctx.is_main and metrics["replica_divergence"] > 0:
                warnings.warn(f"iteration {done}: the workers' parameters differ from rank 0's by up to "
                              f"{metrics['replica_divergence']:.3g}: the replicas are not in sync", stacklevel=1)
        if client is not None:
            log_step_metrics(client, config["run_id"], metrics, done)
        if ctx.is_main and (done % progress_every == 0 or "valid_acc_mean" in metrics or done == task.iterations):
            # to the process's own stdout: under Ray Train, print to sys.stdout is also copied into Train's
            # logger, and the driver would show every line twice
            print(progress_line(config.get("name", "training"), task.iterations, start, session, metrics, logs),
                  file=sys.__stdout__ or sys.stdout, flush=True)
        if checkpointing:
            rngs = ctx.all_gather_object(torch.get_rng_state())
            ctx.checkpoint(metrics, lambda: task.state_dict() | {"iteration": done, "torch_rngs": rngs,
                                                                 "train_seconds": metrics["train_seconds"]})


PROGRESS_LINES = 20  # a run prints about this many progress lines (and one at each validation)


def progress_line(name: str, iterations: int, start: int, seconds: float, metrics: dict, logs: dict) -> str:
    """One line of a training run's progress, for a log read live (Prefect, DVC, a terminal):
    `gme_teacher iteration 500/2000 (25%), 2.1 it/s: loss 1.23, ..., valid_acc_mean 0.612`.
    The rate is this session's: iterations since `start` over the `seconds` since it began."""
    done = metrics["iteration"]
    rate = (done - start) / seconds if seconds > 0 else 0.0
    shown = dict(logs) | {k: v for k, v in metrics.items() if k == "valid_acc_mean"}
    values = ", ".join(f"{k} {v:.4g}" for k, v in shown.items() if isinstance(v, (int, float)))
    return f"{name} iteration {done}/{iterations} ({done / iterations:.0%}), {rate:.2f} it/s" + (
        f": {values}" if values else "")


def run_hash(cfg, inputs: list[str]) -> str:
    """Short stable hash of a stage config (but where it logs: its MLflow experiment) and the identity
    (sha256) of its input files."""
    identity = "".join(file_sha256(p) if p and Path(p).is_file() else f"{p}:missing" for p in inputs)
    config = {k: v for k, v in asdict(cfg).items() if k != "experiment"}
    return hashlib.sha256((json.dumps(config, sort_keys=True) + identity).encode()).hexdigest()[:10]


RUNNERS = ("ray", "local")


@contextmanager
def run_training_stage(loop: Callable, section: str, cfg, inputs: list[str], path_fields: tuple[str, ...],
                       params: dict | None = None, runner: str = "ray") -> Iterator[tuple[dict, dict]]:
    """MLflow run + Ray Train run (runner "ray") or in-process run ("local") of `loop` for a stage
    config; yields (final state, last metrics).

    section: the key the loop reads its config under; inputs: files whose content names the
    run (with the config); path_fields: the config's path fields, handed to the workers as
    absolute paths (Ray Train workers run in their own working directory). The caller writes
    its outputs inside the block, so they are logged to the same MLflow run."""
    import mlflow

    if runner not in RUNNERS:
        raise BadInput(f"runner: {runner!r} is not one of {RUNNERS}")
    ray_name = f"{cfg.run_name}-{run_hash(cfg, inputs)}"
    with mlflow_run(cfg.experiment, cfg.run_name, params=asdict(cfg) | {"ray_run": ray_name} | (params or {})) as run:
        paths = {f: str(Path(getattr(cfg, f)).resolve()) if getattr(cfg, f) else "" for f in path_fields}
        config = {section: asdict(cfg) | paths, "tracking_uri": tracking_uri(), "run_id": run.info.run_id,
                  "name": cfg.run_name}
        if runner == "local":
            result = run_local_training(loop, config)
        else:
            result = run_ray_training(loop, config, num_workers=cfg.num_workers, name=ray_name,
                                      storage_path=cfg.storage, max_failures=cfg.max_failures,
                                      cpus_per_worker=cfg.cpus_per_worker)
        metrics = dict(result.metrics)
        yield final_state(result, cfg.run_name), metrics
        mlflow.set_tag("worker_nodes", metrics.get("worker_nodes", ""))


def training_summary(out: Path, state: dict, metrics: dict) -> dict:
    """What a training stage returns: its output, iterations, resume point, training time (every session's,
    a resumed run's included), nodes, validation accuracies."""
    return {"out": str(out), "iterations": state["iteration"], "resumed_from": metrics.get("resumed_from", 0),
            "train_seconds": metrics.get("train_seconds"), "worker_nodes": metrics.get("worker_nodes", ""),
            "replica_divergence": metrics.get("replica_divergence"),
            **{k: v for k, v in metrics.items() if k.startswith("valid_acc")}}
