"""Stage `teacher`: train the CovPoolFER FER model on the prepared HR training split.

Selects the epoch with the best validation accuracy; class imbalance handled by a
class-weighted loss ("weighted_loss", weights ~ (1 / class frequency)^balance_power,
normalised to mean 1), a class-balanced sampler ("sampler"), or neither ("none"). Augmentation with
components/data/augment.py. Logs params, per-epoch loss and accuracy and the final
model to MLflow; writes the model file (config + state_dict) as the DVC out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from components.data.augment import AugmentConfig, augment_batch, build_train_transform
from components.data.records import BadInput
from components.data.store import PreparedStore, atomic_file
from components.models.covpool import CovPoolConfig, CovPoolFER, save_covpool
from components.runtime import images_to_tensor, pick_device, seed_everything

BALANCE_MODES = ("weighted_loss", "sampler", "none")


@dataclass(frozen=True)
class TeacherConfig:
    prepared: str = "data/prepared"
    out: str = "models/teacher.pt"
    conv_channels: tuple[int, ...] = (64, 96, 128, 128, 256, 256)
    pool_after: tuple[int, ...] = (0, 1, 3)
    bimap_dim: int = 128
    fc_dims: tuple[int, int] = (2000, 128)
    dropout: float = 0.5
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    balance: str = "weighted_loss"
    balance_power: float = 0.5  # class weight ~ (1 / frequency)^power; 1 = full inverse frequency
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    experiment: str = "fsrfer-teacher"

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_MODES:
            raise BadInput(f"teacher.balance: {self.balance!r} is not one of {BALANCE_MODES}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise BadInput("teacher.epochs, teacher.batch_size and teacher.lr must be positive")


def class_weights(labels: np.ndarray, num_classes: int, power: float = 1.0) -> np.ndarray:
    """(1 / frequency)^power per class, normalised to mean 1 over the classes present.

    power 0.5 by default: full inverse frequency (power 1) over-corrects on FER+, where
    contempt is 70x rarer than neutral, and costs total accuracy for little per-class gain.
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1) / num_classes) ** power, 0.0)
    present = counts > 0
    return weights / weights[present].mean()


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decoupled weight decay on conv/linear weights only: not on BatchNorm, biases, or the
    BiMap's orthogonal parametrization (shrinking its free parameter stalls training)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim > 1 and "bimap" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def predict_proba(model: CovPoolFER, images: np.ndarray, device: torch.device, batch_size: int = 128) -> np.ndarray:
    """Class probabilities (N, K) of uint8 faces (N, H, W, C)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        logits = model(images_to_tensor(images[i : i + batch_size], device))
        out.append(torch.softmax(logits, dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.num_classes), np.float32)


def train_teacher(cfg: TeacherConfig, progress: bool = True) -> dict:
    """Train, select on validation accuracy, save the model; returns the summary with per-epoch history."""
    import mlflow

    from components.tracking import mlflow_run

    store = PreparedStore(cfg.prepared)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    hr = np.asarray(store.array("train", "hr"))
    labels = np.asarray(store.array("train", "labels"))
    valid_split = "valid" if "valid" in store.splits else "test"
    hr_valid = np.asarray(store.array(valid_split, "hr"))
    labels_valid = np.asarray(store.array(valid_split, "labels"))
    num_classes = len(store.classes)
    model_cfg = CovPoolConfig(in_channels=hr.shape[3], conv_channels=cfg.conv_channels, pool_after=cfg.pool_after,
                              bimap_dim=cfg.bimap_dim, fc_dims=cfg.fc_dims, num_classes=num_classes, dropout=cfg.dropout)
    model = CovPoolFER(model_cfg).to(device)
    weights = class_weights(labels, num_classes, cfg.balance_power)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device)
                                  if cfg.balance == "weighted_loss" else None)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    transform = build_train_transform(hr.shape[1], AugmentConfig(), seed=cfg.seed) if cfg.augment else None
    sample_p = weights[labels] / weights[labels].sum() if cfg.balance == "sampler" else None
    rng = np.random.default_rng(cfg.seed)

    best_acc, best_state, history = -1.0, None, []
    with mlflow_run(cfg.experiment, "teacher", params=asdict(cfg) | {"num_classes": num_classes}):
        for epoch in tqdm(range(cfg.epochs), desc="teacher", unit="epoch", disable=not progress):
            model.train()
            order = rng.choice(len(hr), len(hr), p=sample_p) if sample_p is not None else rng.permutation(len(hr))
            total, n = 0.0, 0
            for i in range(0, len(order), cfg.batch_size):
                idx = np.sort(order[i : i + cfg.batch_size])
                if len(idx) < 2:  # BatchNorm needs more than one sample
                    continue
                batch = hr[idx]
                if transform is not None:
                    batch = augment_batch(transform, batch)
                logits = model(images_to_tensor(batch, device))
                loss = loss_fn(logits, torch.from_numpy(labels[idx]).to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
                n += len(idx)
            scheduler.step()
            probs = predict_proba(model, hr_valid, device)
            acc = float((probs.argmax(1) == labels_valid).mean())
            history.append({"epoch": epoch, "loss": total / max(n, 1), "valid_accuracy": acc})
            mlflow.log_metrics({"train_loss": total / max(n, 1), "valid_accuracy": acc}, step=epoch)
            if acc > best_acc:
                best_acc = acc
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        model.cpu()
        out = Path(cfg.out)
        with atomic_file(out) as tmp:
            save_covpool(model, tmp, extra={"classes": store.classes, "valid_accuracy": best_acc,
                                            "hr_size": hr.shape[1]})
        mlflow.log_metric("best_valid_accuracy", best_acc)
        mlflow.log_artifact(str(out), artifact_path="model")
    return {"best_valid_accuracy": best_acc, "epochs": cfg.epochs, "out": str(out), "history": history}
