"""Stages `gme_teacher` and `gme_train`: GME-Net's HR teacher, then the LR student, on Ray Train.

  gme_teacher  GME-Net (components/models/gmenet.py) trained on the prepared HR training
               faces with cross-entropy; written frozen-loadable to `out`.
  gme_train    the LR student of the same design, on LR faces of every prepared scale
               (MATLAB bicubic back to the input size; each sample of a batch draws its
               scale), with  L = CE + lambda * A-SKD(student maps on the LR face, frozen
               teacher maps on the matching HR face)  (components/losses.py; lambda = 5).

One worker loop serves both (`teacher` empty = the HR teacher). Each worker draws its
batches from its own shard of the training rows (rows i with i % world == rank), from an
RNG seeded by (seed, rank, iteration), so a run resumed from a checkpoint takes exactly
the steps an uninterrupted one takes. Horizontal flips, applied to LR and HR alike. AdamW,
cosine learning rate over the iterations; class-weighted CE ((1 / frequency)^power, as
the CovPoolFER teacher). Checkpoints every `checkpoint_every` iterations (model,
optimiser, iteration, RNG); rank 0 logs the losses and per-scale validation accuracy to
MLflow. Same Ray machinery as FSR-FER (components/distributed.py): N workers, GPUs with
NCCL when every worker has one, FailureConfig, resume by (storage, name).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from components.data.degrade import upscale_to
from components.data.records import BadInput
from components.data.store import PreparedStore, atomic_file
from components.distributed import final_state, log_step_metrics, run_ray_training, unwrap
from components.losses import attention_similarity_loss
from components.models.cost import model_cost
from components.models.gmenet import GMEConfig, GMENet, load_gmenet, predict_proba, save_gmenet
from components.runtime import images_to_tensor
from components.stages.teacher import class_weights


@dataclass(frozen=True)
class GMETrainConfig:
    prepared: str = "data/prepared"
    teacher: str = ""  # "" trains the HR teacher; else the frozen teacher the LR student distils from
    out: str = "models/gmenet.pt"
    # network sizes (components/models/gmenet.py)
    stem_channels: int = 32
    local_channels: tuple[int, ...] = (32, 64, 128)
    global_channels: tuple[int, ...] = (32, 64, 128)
    dilations: tuple[int, ...] = (1, 2, 3)
    reduction: int = 4
    spatial_kernel: int = 7
    fusion_dim: int = 256
    dropout: float = 0.3
    # training
    lambda_at: float = 5.0  # A-SKD weight (paper of A-SKD: 5)
    iterations: int = 6000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    balance_power: float = 0.5
    flip: bool = True
    seed: int = 0
    # Ray Train
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    max_failures: int = 2
    checkpoint_every: int = 500
    eval_every: int = 500
    storage: str = "data/ray_results"
    run_name: str = "gme_train"
    experiment: str = "fsrfer-gmenet"

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 2 or self.num_workers < 1 or self.lr <= 0:
            raise BadInput("gmenet: iterations, batch_size (>= 2), num_workers and lr must be positive")
        if self.checkpoint_every < 1 or self.eval_every < 1:
            raise BadInput("gmenet: checkpoint_every and eval_every must be >= 1")
        if self.lambda_at < 0:
            raise BadInput(f"gmenet.lambda_at must be >= 0, got {self.lambda_at}")

    def network(self, store_meta: dict) -> GMEConfig:
        return GMEConfig(in_channels=store_meta["channels"], input_size=store_meta["hr_size"],
                         num_classes=len(store_meta["classes"]), stem_channels=self.stem_channels,
                         local_channels=self.local_channels, global_channels=self.global_channels,
                         dilations=self.dilations, reduction=self.reduction, spatial_kernel=self.spatial_kernel,
                         fusion_dim=self.fusion_dim, dropout=self.dropout)


class ScaledFaces:
    """One split's faces at the input size: HR as stored, every LR scale upscaled back (MATLAB bicubic)."""

    def __init__(self, prepared: str, split: str, keys: list[str], rows: np.ndarray | None = None):
        store = PreparedStore(prepared)
        hr = store.array(split, "hr")
        rows = np.arange(len(hr)) if rows is None else rows
        self.hr = np.asarray(hr[rows])
        self.labels = np.asarray(store.array(split, "labels")[rows])
        size = self.hr.shape[1:3]
        self.faces = {k: self.hr if k == "x1" else upscale_to(np.asarray(store.array(split, k)[rows]), size)
                      for k in keys}


def accuracy_per_scale(model: GMENet, data: ScaledFaces, device: torch.device) -> dict[str, float]:
    """{'x1': acc, 'x2': acc, ...} over the keys `data` holds."""
    return {key: float((predict_proba(model, faces, device).argmax(1) == data.labels).mean())
            for key, faces in data.faces.items()}


def gme_train_loop(config: dict, ctx) -> None:
    """The worker loop of both stages (runs under Ray Train or locally; components/distributed.py)."""
    import mlflow

    cfg = GMETrainConfig(**config["gme"])
    torch.manual_seed(cfg.seed + ctx.rank)
    store = PreparedStore(cfg.prepared)
    student = bool(cfg.teacher)
    keys = store.scale_keys if student else ["x1"]
    train_labels = np.asarray(store.array("train", "labels"))
    train = ScaledFaces(cfg.prepared, "train", keys, rows=np.arange(ctx.rank, len(train_labels), ctx.world_size))
    valid = ScaledFaces(cfg.prepared, "valid", (["x1"] if not student else []) + store.scale_keys) \
        if ctx.is_main else None
    teacher = load_gmenet(cfg.teacher).to(ctx.device) if student else None

    model = ctx.wrap(GMENet(cfg.network(store.meta)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = torch.tensor(class_weights(train_labels, len(store.classes), cfg.balance_power),
                           dtype=torch.float32, device=ctx.device)
    start = 0
    state = ctx.restore_state()
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start = state["iteration"]
    client = mlflow.MlflowClient(config["tracking_uri"]) if ctx.is_main and config.get("run_id") else None
    clock = time.perf_counter()

    model.train()
    for it in range(start, cfg.iterations):
        rng = np.random.default_rng([cfg.seed, ctx.rank, it])
        rows = rng.integers(0, len(train.labels), cfg.batch_size)
        scale_of = rng.integers(0, len(keys), cfg.batch_size)
        faces = np.stack([train.faces[keys[s]][r] for s, r in zip(scale_of, rows)])
        hr = train.hr[rows]
        if cfg.flip:
            flip = rng.random(cfg.batch_size) < 0.5
            faces[flip] = faces[flip][:, :, ::-1]
            hr = hr.copy()
            hr[flip] = hr[flip][:, :, ::-1]
        labels = torch.from_numpy(train.labels[rows]).to(ctx.device)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * it / cfg.iterations))
        logits, maps = model(images_to_tensor(faces, ctx.device), with_attention=True)
        ce = F.cross_entropy(logits, labels, weight=weights)
        logs = {"l_ce": ce.item()}
        loss = ce
        if student:
            with torch.no_grad():
                _, teacher_maps = teacher(images_to_tensor(hr, ctx.device), with_attention=True)
            at = attention_similarity_loss(maps, teacher_maps)
            loss = ce + cfg.lambda_at * at
            logs["l_at"] = at.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        done = it + 1
        metrics = {"iteration": done, "resumed_from": start, "train_seconds": time.perf_counter() - clock, **logs}
        if ctx.is_main and (done % cfg.eval_every == 0 or done == cfg.iterations):
            accs = accuracy_per_scale(unwrap(model), valid, ctx.device)
            metrics.update({f"valid_acc_{k}": v for k, v in accs.items()})
            lr_accs = [v for k, v in accs.items() if k != "x1"]
            metrics["valid_acc_mean"] = float(np.mean(lr_accs if lr_accs else list(accs.values())))
        if client is not None:
            log_step_metrics(client, config["run_id"], metrics, done)
        if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
            ctx.checkpoint(metrics, lambda: {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                                             "iteration": done, "torch_rng": torch.get_rng_state()})


def _train(cfg: GMETrainConfig) -> dict:
    import mlflow

    from components.stages.features import file_sha256
    from components.tracking import mlflow_run, tracking_uri

    store = PreparedStore(cfg.prepared)
    if "valid" not in store.splits:
        raise BadInput(f"{cfg.prepared}: no valid split to evaluate and select GME-Net on (splits: "
                       f"{sorted(store.splits)}); set prepare.valid_fraction > 0 to carve one from train")
    if cfg.teacher:
        teacher = load_gmenet(cfg.teacher)
        if teacher.cfg != cfg.network(store.meta):
            raise BadInput(f"{cfg.teacher}: the GME-Net teacher's design differs from gme_train's "
                           "(A-SKD compares the maps of the same blocks); train them with the same sizes")
    identity = json.dumps(asdict(cfg), sort_keys=True) + file_sha256(Path(cfg.prepared) / "meta.json") + (
        file_sha256(cfg.teacher) if cfg.teacher else "")
    ray_name = f"{cfg.run_name}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"
    with mlflow_run(cfg.experiment, cfg.run_name, params=asdict(cfg) | {"ray_run": ray_name}) as run:
        paths = {"prepared": str(Path(cfg.prepared).resolve()),
                 "teacher": str(Path(cfg.teacher).resolve()) if cfg.teacher else ""}
        config = {"gme": asdict(cfg) | paths, "tracking_uri": tracking_uri(), "run_id": run.info.run_id}
        result = run_ray_training(gme_train_loop, config, num_workers=cfg.num_workers, name=ray_name,
                                  storage_path=cfg.storage, max_failures=cfg.max_failures,
                                  cpus_per_worker=cfg.cpus_per_worker)
        state = final_state(result, cfg.run_name)
        model = GMENet(cfg.network(store.meta))
        model.load_state_dict(state["model"])
        metrics = dict(result.metrics)
        accs = {k: v for k, v in metrics.items() if k.startswith("valid_acc")}
        size = store.meta["hr_size"]
        cost = model_cost(model.eval(), (1, store.meta["channels"], size, size))
        out = Path(cfg.out)
        with atomic_file(out) as tmp:
            save_gmenet(model, tmp, extra={"classes": store.classes, "hr_size": size, "scale_keys": store.scale_keys,
                                           "iteration": state["iteration"], "train_config": asdict(cfg), **accs})
        mlflow.log_metrics({"params": cost["params"], "flops": cost["flops"]})
        mlflow.set_tag("worker_nodes", metrics.get("worker_nodes", ""))
        mlflow.log_artifact(str(out), artifact_path="model")
    return {"out": str(out), "iterations": state["iteration"], "resumed_from": metrics.get("resumed_from", 0),
            "train_seconds": metrics.get("train_seconds"), "worker_nodes": metrics.get("worker_nodes", ""),
            **cost, **accs}


def train_gme_teacher(cfg: GMETrainConfig) -> dict:
    """Stage gme_teacher: GME-Net on HR faces (cfg.teacher must be empty)."""
    if cfg.teacher:
        raise BadInput("gme_teacher.teacher must be empty: the teacher is trained on HR faces without distillation")
    return _train(cfg)


def train_gmenet(cfg: GMETrainConfig) -> dict:
    """Stage gme_train: the LR student distilled from the frozen HR teacher cfg.teacher."""
    if not cfg.teacher or not Path(cfg.teacher).is_file():
        raise BadInput(f"gme_train.teacher: {cfg.teacher or '(empty)'}: no GME-Net teacher file; run gme_teacher")
    return _train(cfg)
