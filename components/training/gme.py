"""GME-Net's training step and worker loop, for the `gme_teacher` and `gme_train` stages.

  gme_teacher  GME-Net (components/models/gmenet.py) on the prepared HR training faces with
               cross-entropy (`teacher` empty).
  gme_train    the LR student of the same design, on LR faces of every prepared scale
               (MATLAB bicubic back to the input size; each sample of a batch draws its
               scale), with  L = CE + lambda * A-SKD(student maps on the LR face, frozen
               teacher maps on the matching HR face)  (components/losses.py; lambda = 5); the
               frozen teacher's maps of every HR training face and its mirror are computed once,
               before the first step (teacher_attention).

Each worker draws its batches from its own shard of the training rows (rows i with
i % world == rank). Horizontal flips, applied to LR and HR alike. AdamW, cosine learning
rate over the iterations; class-weighted CE ((1 / frequency)^power, as the CovPoolFER
teacher; power 0: unweighted) on the majority label (`targets: hard`) or on the face's vote
distribution (`targets: votes`, FER+'s probabilistic labels). `init_from_teacher` starts the
LR student from its HR teacher's weights (as the multi-scale CNN starts from the CovPoolFER
teacher). `kd_weight` > 0 (not in the paper) mixes a CovPoolFER model's class probabilities on
the HR face into the CE target: (1 - kd_weight) * label + kd_weight * P(kd_teacher | HR face),
computed once per worker for its shard (face and mirror) before the first step; with
`kd_input: lr` the kd_teacher reads the student's own LR face at each scale instead (for a
kd_teacher trained on LR faces: the multi-scale CNN). The loop around
the step is components/training/loop.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from components.config import GMETrainConfig
from components.data.store import PreparedStore, ScaledFaces
from components.distributed import WorkerContext, unwrap
from components.io import BadInput, atomic_file
from components.losses import attention_similarity_loss, class_weights
from components.models.cost import model_cost
from components.models.covpool import load_covpool
from components.models.gmenet import GMEConfig, GMENet, load_gmenet, save_gmenet
from components.runtime import images_to_tensor, predict_proba
from components.training.loop import run_task, run_training_stage, training_summary


def gme_network(cfg: GMETrainConfig, store_meta: dict) -> GMEConfig:
    """The GME-Net design of a stage config for a prepared store (its channels, size and classes)."""
    return GMEConfig(in_channels=store_meta["channels"], input_size=store_meta["hr_size"],
                     num_classes=len(store_meta["classes"]), stem_channels=cfg.stem_channels,
                     local_channels=cfg.local_channels, global_channels=cfg.global_channels,
                     dilations=cfg.dilations, reduction=cfg.reduction, spatial_kernel=cfg.spatial_kernel,
                     fusion_dim=cfg.fusion_dim, dropout=cfg.dropout, test_flip=cfg.test_flip)


def accuracy_per_scale(model: GMENet, data: ScaledFaces, device: torch.device) -> dict[str, float]:
    """{'x1': acc, 'x2': acc, ...} over the keys `data` holds."""
    return {key: float((predict_proba(model, faces, device, batch_size=256).argmax(1) == data.labels).mean())
            for key, faces in data.faces.items()}


def distilled_probabilities(cfg: GMETrainConfig, store: PreparedStore, faces: list[np.ndarray],
                            device: torch.device) -> np.ndarray:
    """(S, 2, N, K): cfg.kd_teacher's eval-mode class probabilities on each of the S face arrays (N faces each)
    and on their mirrors."""
    teacher = load_covpool(cfg.kd_teacher).to(device)
    want = (store.meta["channels"], len(store.classes))
    if (teacher.cfg.in_channels, teacher.cfg.num_classes) != want:
        raise BadInput(f"{cfg.kd_teacher}: kd_teacher takes {teacher.cfg.in_channels}-channel faces and has "
                       f"{teacher.cfg.num_classes} classes; {cfg.prepared} has {want[0]} channels and {want[1]} classes")
    out = []
    for array in faces:
        probs = predict_proba(teacher, array, device, batch_size=256)
        mirrored = probs if teacher.cfg.test_flip else predict_proba(teacher, np.ascontiguousarray(array[:, :, ::-1]),
                                                                      device, batch_size=256)
        out.append(np.stack([probs, mirrored]))
    return np.stack(out).astype(np.float32)


def teacher_attention(teacher: GMENet, hr: np.ndarray, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The frozen (eval-mode) teacher's attention maps on the HR faces `hr` and on their mirrors, per block:
    (a_channel (2, N, C), a_spatial (2, N, 1, h, w)). Computed once, so a student step indexes them instead of
    running the teacher (about 18% of the step; benchmarks/README.md, "GME-Net student step"). The same maps as
    the step's own teacher pass, to float rounding (other batches: 1e-7 in a few cells)."""
    per_block: list[tuple[list, list]] = []
    with torch.no_grad():
        for faces in (hr, hr[:, :, ::-1]):
            blocks: list[tuple[list, list]] = []
            for start in range(0, len(faces), 256):
                _, maps = teacher(images_to_tensor(np.ascontiguousarray(faces[start:start + 256]), device),
                                  with_attention=True)
                blocks = blocks or [([], []) for _ in maps]
                for (channel, spatial), (a_channel, a_spatial) in zip(blocks, maps, strict=True):
                    channel.append(a_channel)
                    spatial.append(a_spatial)
            per_block.append(blocks)
    return [tuple(torch.stack([torch.cat(parts) for parts in (plain[i], mirror[i])]) for i in range(2))
            for plain, mirror in zip(*per_block, strict=True)]


class DistillationTask:
    """GME-Net's training task of one worker: the network, AdamW, the CE (+ A-SKD) step."""

    def __init__(self, cfg: GMETrainConfig, ctx: WorkerContext):
        self.cfg, self.ctx = cfg, ctx
        store = PreparedStore(cfg.prepared)
        self.student = bool(cfg.teacher)
        self.keys = store.scale_keys if self.student else ["x1"]
        train_labels = np.asarray(store.array("train", "labels"))
        shard = np.arange(ctx.rank, len(train_labels), ctx.world_size)
        self.train = ScaledFaces(cfg.prepared, "train", self.keys, rows=shard)
        self.valid = ScaledFaces(cfg.prepared, "valid", (["x1"] if not self.student else []) + store.scale_keys) \
            if ctx.is_main else None
        self.targets = np.asarray(store.array("train", "votes")[shard], dtype=np.float32) \
            if cfg.targets == "votes" else None
        kd_faces = [self.train.faces[k] for k in self.keys] if cfg.kd_input == "lr" else [self.train.hr]
        self.kd = distilled_probabilities(cfg, store, kd_faces, ctx.device) if cfg.kd_weight > 0 else None
        teacher = load_gmenet(cfg.teacher).to(ctx.device) if self.student else None
        self.teacher_maps = teacher_attention(teacher, self.train.hr, ctx.device) if self.student else None
        network = GMENet(gme_network(cfg, store.meta))
        if cfg.init_from_teacher:
            network.load_state_dict(teacher.state_dict())
        self.model = ctx.wrap(network)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.optimizers = [self.optimizer]
        self.weights = torch.tensor(class_weights(train_labels, len(store.classes), cfg.balance_power),
                                    dtype=torch.float32, device=ctx.device)
        self.iterations, self.eval_every, self.checkpoint_every = cfg.iterations, cfg.eval_every, cfg.checkpoint_every
        self.model.train()

    def state_dict(self) -> dict:
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def learning_rate(self, it: int) -> float:
        return self.cfg.lr * 0.5 * (1.0 + math.cos(math.pi * it / self.cfg.iterations))

    def step(self, it: int, rng: np.random.Generator) -> dict[str, float]:
        cfg, device = self.cfg, self.ctx.device
        rows = rng.integers(0, len(self.train.labels), cfg.batch_size)
        scale_of = rng.integers(0, len(self.keys), cfg.batch_size)
        faces = np.stack([self.train.faces[self.keys[s]][r] for s, r in zip(scale_of, rows)])
        flip = rng.random(cfg.batch_size) < 0.5 if cfg.flip else np.zeros(cfg.batch_size, bool)
        faces[flip] = faces[flip][:, :, ::-1]
        target = self.train.labels[rows] if self.targets is None else self.targets[rows]
        if self.kd is not None:
            base = np.eye(self.kd.shape[-1], dtype=np.float32)[target] if self.targets is None else target
            source = scale_of if cfg.kd_input == "lr" else np.zeros_like(scale_of)
            kd = self.kd[source, flip.astype(int), rows]
            target = (1 - cfg.kd_weight) * base + cfg.kd_weight * kd
        logits, maps = self.model(images_to_tensor(faces, device), with_attention=True)
        ce = F.cross_entropy(logits, torch.from_numpy(target).to(device), weight=self.weights)
        logs = {"l_ce": ce.item()}
        loss = ce
        if self.student:  # the teacher's maps on the matching HR face (mirrored with it)
            mirror, index = torch.from_numpy(flip.astype(np.int64)), torch.from_numpy(rows)
            teacher_maps = [(channel[mirror, index], spatial[mirror, index]) for channel, spatial in self.teacher_maps]
            at = attention_similarity_loss(maps, teacher_maps)
            loss = ce + cfg.lambda_at * at
            logs["l_at"] = at.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return logs

    def evaluate(self) -> dict[str, float]:
        accs = accuracy_per_scale(unwrap(self.model), self.valid, self.ctx.device)
        lr_accs = [v for k, v in accs.items() if k != "x1"]
        return {f"valid_acc_{k}": v for k, v in accs.items()} | {
            "valid_acc_mean": float(np.mean(lr_accs if lr_accs else list(accs.values())))}


def gme_train_loop(config: dict, ctx: WorkerContext) -> None:
    """The worker loop of both stages (runs under Ray Train or locally; components/distributed.py)."""
    cfg = GMETrainConfig(**config["gme"])
    torch.manual_seed(cfg.seed + ctx.rank)
    run_task(DistillationTask(cfg, ctx), ctx, cfg.seed, config)


def train_gme(cfg: GMETrainConfig, runner: str = "ray") -> dict:
    """The body of both GME-Net stages: Ray Train run, the final model written to cfg.out; returns the summary."""
    import mlflow

    store = PreparedStore(cfg.prepared)
    if "valid" not in store.splits:
        raise BadInput(f"{cfg.prepared}: no valid split to evaluate and select GME-Net on (splits: "
                       f"{sorted(store.splits)}); set prepare.valid_fraction > 0 to carve one from train")
    if cfg.kd_weight > 0 and not Path(cfg.kd_teacher).is_file():
        raise BadInput(f"{cfg.run_name}.kd_teacher: {cfg.kd_teacher}: no CovPoolFER file to distil from (kd_weight "
                       f"{cfg.kd_weight}); run the teacher stage or set kd_weight 0")
    if cfg.teacher and replace(load_gmenet(cfg.teacher).cfg, test_flip=False) != replace(gme_network(cfg, store.meta),
                                                                                          test_flip=False):
        raise BadInput(f"{cfg.teacher}: the GME-Net teacher's design differs from gme_train's "
                       "(A-SKD compares the maps of the same blocks); train them with the same sizes")
    inputs = [str(Path(cfg.prepared) / "meta.json")] + ([cfg.teacher] if cfg.teacher else []) + \
        ([cfg.kd_teacher] if cfg.kd_weight > 0 else [])
    with run_training_stage(gme_train_loop, "gme", cfg, inputs, ("prepared", "teacher", "kd_teacher"),
                            runner=runner) as (state, metrics):
        model = GMENet(gme_network(cfg, store.meta))
        model.load_state_dict(state["model"])
        accs = {k: v for k, v in metrics.items() if k.startswith("valid_acc")}
        size = store.meta["hr_size"]
        cost = model_cost(model.eval(), (1, store.meta["channels"], size, size))
        out = Path(cfg.out)
        with atomic_file(out) as tmp:
            save_gmenet(model, tmp, extra={"classes": store.classes, "hr_size": size, "scale_keys": store.scale_keys,
                                           "iteration": state["iteration"], "train_config": asdict(cfg), **accs})
        mlflow.log_metrics({"params": cost["params"], "flops": cost["flops"]})
        mlflow.log_artifact(str(out), artifact_path="model")
    return training_summary(out, state, metrics) | cost
