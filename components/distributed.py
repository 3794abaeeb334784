"""Ray wiring shared by the training stages: start or join Ray, and run a worker loop.

A training loop is a plain function `loop(config: dict, ctx: WorkerContext)`; it does not
import Ray. `run_ray_training` runs it as a Ray Train TorchTrainer on N workers (the
V2 API: checkpoints via ray.train.report, FailureConfig replaces dead workers and resumes
from the last checkpoint, the same (storage_path, name) resumes a restarted run);
`run_local_training` runs the same loop in this process with no Ray at all (a stage's
runner="local", components/training/loop.py; the benchmark of Ray's overhead). `run_tune_search`: a Ray Tune search whose trials
each drive a TorchTrainer through `run_ray_training` (the Train V2 pattern).

Ray starts locally with this machine's CPUs, or joins the cluster in RAY_ADDRESS: the
same code, no branches. Every report carries `worker_nodes`, the node id of each worker in
rank order, so a run shows where it ran. On a multi-node cluster the paths handed to
workers (feature cache, teacher, Ray storage) must be on storage every node mounts at the
same path (infra/README.md says why this and not the object store). Devices: CUDA with
NCCL when the cluster has a GPU per worker, else CPU with gloo.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from components.runtime import pick_device


@dataclass
class WorkerContext:
    """What a training loop needs from its runner."""

    rank: int
    world_size: int
    device: torch.device
    report: Callable[[dict, Path | None], None]  # metrics, optional checkpoint folder
    restore: Callable[[], Path | None]  # the folder of the latest checkpoint, if any
    wrap: Callable[[torch.nn.Module], torch.nn.Module]  # DDP when distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def restore_state(self) -> dict | None:
        """The state dict of the latest checkpoint (its `state.pt`), on this worker's device; None when fresh."""
        folder = self.restore()
        if folder is None:
            return None
        return torch.load(folder / "state.pt", map_location=self.device, weights_only=True)

    def replica_divergence(self, state: dict) -> float:
        """The largest difference between any worker's fingerprint of `state` (`state_fingerprint`)
        and rank 0's: 0.0 when data parallelism keeps every replica equal, as DDP's all-reduced
        gradients must. A collective: every worker calls it at the same iteration."""
        if self.world_size == 1:
            return 0.0
        import torch.distributed as dist

        mine = state_fingerprint(state).to(self.device)
        every = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(every, mine)
        return max(float((f - every[0]).abs().max()) for f in every)

    def all_gather_object(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every worker (a collective; [obj] alone when local)."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        every = [None] * self.world_size
        dist.all_gather_object(every, obj)
        return every

    def checkpoint(self, metrics: dict, state: Callable[[], dict]) -> None:
        """Report `metrics` with a checkpoint: rank 0 saves state() as `state.pt`; the others report metrics only."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) if self.is_main else None
            if self.is_main:
                torch.save(state(), folder / "state.pt")
            self.report(metrics, folder)


LOCAL_BUFFERS = ("running_mean", "running_var")  # BatchNorm's: each replica updates them on its own batch
# (DDP broadcasts rank 0's at every forward, and rank 0's are the ones saved), so they are not compared


def state_fingerprint(state) -> torch.Tensor:
    """float64 (sum, sum of squares) of every floating-point tensor of a nested state dict
    (networks and optimisers) but BatchNorm's running statistics, in key order: equal replicas
    give equal fingerprints."""
    values: list[torch.Tensor] = []

    def walk(obj) -> None:
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point():
                t = obj.detach().double()
                values.extend((t.sum(), (t * t).sum()))
        elif isinstance(obj, dict):
            for key in sorted(obj, key=str):
                if not str(key).endswith(LOCAL_BUFFERS):
                    walk(obj[key])
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item)

    walk(state)
    return torch.stack(values) if values else torch.zeros(1, dtype=torch.float64)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DDP wrapper (or the network itself)."""
    return module.module if hasattr(module, "module") else module


def log_step_metrics(client, run_id: str, metrics: dict, step: int) -> None:
    """Rank 0's per-iteration metrics to its MLflow run (the iteration itself is the step)."""
    import mlflow

    now_ms = int(time.time() * 1000)  # when it was logged (0 would show as 1970 in the UI)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), now_ms, step)
                                      for k, v in metrics.items() if k != "iteration"])


def final_state(result, what: str) -> dict:
    """The state dict of a finished run's last checkpoint (on the CPU): a Ray Train Result or a
    LocalResult; raises if the run failed."""
    if isinstance(result, LocalResult):
        return torch.load(result.checkpoint_dir / "state.pt", map_location="cpu", weights_only=True)
    if result.error is not None:
        raise RuntimeError(f"{what}: Ray Train run failed: {result.error}")
    with result.checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=True)


# Set before ray.init where not already in the environment (a value there wins). A local Ray's
# raylet, and so every worker, reads them at start; a cluster joined through RAY_ADDRESS keeps its own.
RAY_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    # Ray runs its workers at nice 15 so that its own daemons stay responsive. Here the workers are the
    # job (training), and at nice 15 any other process on the machine takes their core: a 2-core run
    # slowed several times over, and in a Tune search the stopped trials' Train controllers and
    # placement-group cleaners starved while their placement groups held the CPUs the next trial needed.
    "RAY_worker_niceness": "0",
    # Ray Train fails a worker group that has not started within 60 s; on a loaded machine starting a
    # worker (a process importing torch) took longer, and the search then stalled (benchmarks/README.md).
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
}


_OWN_RAY_TMPDIRS: set[str] = set()


def init_ray(num_cpus: int | None = None) -> None:
    """ray.init once: join RAY_ADDRESS when set, else start a local Ray with `num_cpus`."""
    import ray

    if ray.is_initialized():
        return
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    # The dashboard stays on (loopback only): without its state API, Ray Train's placement
    # group cleaner cannot free the CPUs of a trial that Tune stopped, and a search stalls.
    # That cleaner (like any state-API call in a worker) finds its cluster through RAY_ADDRESS, then
    # the address file in Ray's temp folder, then by looking for running GCS processes, which fails
    # ("Found multiple active Ray instances") whenever another Ray runs on the machine: a second
    # stage, a test suite, another user's job. So each local Ray gets a temp folder of its own
    # (RAY_TMPDIR, which its workers inherit; its logs stay there), and the address file in it
    # points them at this Ray. "local": a Ray of our own whatever the environment names.
    parent = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    if parent in _OWN_RAY_TMPDIRS:  # a second local Ray in this process: beside the first, not inside it
        parent = os.path.dirname(parent)
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir=parent)
    _OWN_RAY_TMPDIRS.add(os.environ["RAY_TMPDIR"])
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=True,
             dashboard_host="127.0.0.1", log_to_driver=True)
    from ray._private.utils import write_ray_address

    write_ray_address(ray.get_runtime_context().gcs_address)


def _ray_worker_entry(loop: Callable) -> Callable[[dict], None]:
    """Adapt `loop(config, ctx)` to a Ray Train worker function."""

    def entry(config: dict) -> None:
        import ray.train
        from ray.train import Checkpoint
        from ray.train.torch import get_device, prepare_model

        context = ray.train.get_context()
        nodes = _worker_nodes(context.get_world_size())

        def report(metrics: dict, checkpoint_dir: Path | None) -> None:
            checkpoint = Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
            ray.train.report(metrics | {"worker_nodes": nodes}, checkpoint=checkpoint)

        def restore() -> Path | None:
            checkpoint = ray.train.get_checkpoint()
            if checkpoint is None:
                return None
            local = Path(tempfile.mkdtemp(prefix="restore-"))
            checkpoint.to_directory(str(local))
            return local

        ctx = WorkerContext(rank=context.get_world_rank(), world_size=context.get_world_size(), device=get_device(),
                            report=report, restore=restore,
                            wrap=lambda m: prepare_model(m, move_to_device=True, parallel_strategy="ddp")
                            if context.get_world_size() > 1 else m.to(get_device()))
        loop(config, ctx)

    return entry


def _worker_nodes(world_size: int) -> str:
    """The Ray node id of every worker, in rank order, comma-joined (reported with every result)."""
    import ray
    import torch.distributed as dist

    nodes = [ray.get_runtime_context().get_node_id()]
    if world_size > 1 and dist.is_initialized():
        nodes = [None] * world_size
        dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    return ",".join(nodes)


def run_ray_training(loop: Callable, config: dict, *, num_workers: int, name: str, storage_path: str | Path,
                     max_failures: int = 2, cpus_per_worker: float = 1.0, use_gpu: bool | None = None,
                     gpus_per_worker: float = 1.0, callbacks: list | None = None):
    """Run `loop` on `num_workers` Ray Train workers; returns the ray.train.Result.

    use_gpu=None decides at run time: GPUs when the cluster has one per worker.
    callbacks: Ray Train callbacks; inside a Ray Tune trial (the Train V2 pattern) pass
    [ray.tune.integration.ray_train.TuneReportCallback()] so rank 0's reports reach Tune.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    init_ray()
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) >= num_workers
    resources = {"CPU": cpus_per_worker} | ({"GPU": gpus_per_worker} if use_gpu else {})
    trainer = TorchTrainer(
        _ray_worker_entry(loop),
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=str(Path(storage_path).resolve()),
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks),
    )
    return trainer.fit()


def run_tune_search(trainable: Callable, *, param_space: dict, metric: str, mode: str, num_samples: int,
                    max_concurrent_trials: int, driver_cpus: float, search_alg, scheduler, name: str,
                    storage_path: str | Path):
    """A Ray Tune search whose trials are `trainable` drivers (each builds its own TorchTrainer)."""
    from ray import tune

    init_ray()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": driver_cpus}),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=num_samples, search_alg=search_alg,
                                    scheduler=scheduler, max_concurrent_trials=max_concurrent_trials),
        run_config=tune.RunConfig(name=name, storage_path=str(Path(storage_path).resolve())),
    )
    return tuner.fit()


@dataclass
class LocalResult:
    """What run_local_training returns: the last metrics and checkpoint folder (as ray's Result)."""

    metrics: dict
    checkpoint_dir: Path | None


def run_local_training(loop: Callable, config: dict, device: torch.device | None = None) -> LocalResult:
    """Run `loop` in this process, no Ray: one worker, checkpoints kept in a temp folder."""

    device = device or pick_device()
    store = Path(tempfile.mkdtemp(prefix="local-train-"))
    state = {"metrics": {}, "checkpoint": None}

    def report(metrics: dict, checkpoint_dir: Path | None) -> None:
        state["metrics"] = metrics
        if checkpoint_dir is not None:
            target = store / f"checkpoint_{len(list(store.iterdir())):06d}"
            shutil.copytree(checkpoint_dir, target)
            state["checkpoint"] = target

    ctx = WorkerContext(rank=0, world_size=1, device=device, report=report, restore=lambda: state["checkpoint"],
                        wrap=lambda m: m.to(device))
    loop(config, ctx)
    return LocalResult(state["metrics"], state["checkpoint"])
